"""Post-hoc isotonic calibration and AUC: PAV's own map (flat steps) against the stored, strictly increasing one.

    .venv/bin/python bench/calibration_ties.py            # a few seconds

A rare event (true rates ~ Beta(1, 30), ~3%) that the model predicts at half its rate (the
generated world's comment task, as in tests/model/test_calibration.py); each map is fitted on
--fit-rows rows and judged on 200,000 fresh ones: AUC after the map minus AUC before it, mean
prediction / observed, and how many distinct scores survive the map. Anchor: the raw scores.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ple_model.calibration import _fit_isotonic  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fit-rows", type=int, nargs="+", default=[5_000, 50_000])
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        rate = rng.beta(1, 30, n)
        return rate / 2, (rng.random(n) < rate).astype(float)

    print(f"{'fit rows':>9} {'AUC raw':>8} {'PAV: dAUC':>10} {'ours: dAUC':>11} {'mean/obs raw':>12} {'PAV':>6} "
          f"{'ours':>6} {'distinct: raw':>14} {'PAV':>6} {'ours':>7} {'knots':>6}")
    for rows in args.fit_rows:
        score, label = sample(rows)
        fresh, truth = sample(200_000)
        pav = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(score, label).predict(fresh)
        calibrator = _fit_isotonic(score, label, True, 256)
        ours = calibrator(torch.tensor(fresh, dtype=torch.float32)).numpy()
        before = roc_auc_score(truth, fresh)
        print(f"{rows:>9,} {before:>8.4f} {roc_auc_score(truth, pav) - before:>+10.5f} "
              f"{roc_auc_score(truth, ours) - before:>+11.6f} {fresh.mean() / truth.mean():>12.3f} "
              f"{pav.mean() / truth.mean():>6.3f} {ours.mean() / truth.mean():>6.3f} "
              f"{len(np.unique(fresh.astype(np.float32))):>14,} {len(np.unique(pav)):>6,} {len(np.unique(ours)):>7,} "
              f"{calibrator.knots_x.numel():>6}")


if __name__ == "__main__":
    main()
