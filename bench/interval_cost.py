"""Cost of the evaluation's intervals (evaluation/comparison.py) as the row count grows.

Synthetic test days shaped like the video table (4 tasks: play, watch_ratio masked by play, share,
comment; ~10 rows per user), `--models` models scored on the same rows; times PairedScores.compute()
(DeLong per binary task, the paired bootstrap over rows and over users, GAUC and NDCG) with
`--resamples` resamples. The anchor, timed in the same run on the same rows: one np.argsort of the
rows (what any AUC costs at least), so the ratio survives a busy machine better than the seconds.

    .venv/bin/python bench/interval_cost.py --rows 20000 200000 2000000 --resamples 1000
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluation.comparison import PairedScores  # noqa: E402
from evaluation.config import RankingSettings, UncertaintySettings  # noqa: E402
from ple_model import ModelSpec  # noqa: E402

SPEC = ModelSpec.model_validate({
    "features": [{"name": "x", "type": "numeric"}],
    "tasks": [{"name": "play", "type": "binary"}, {"name": "watch_ratio", "type": "regression", "mask": "play"},
              {"name": "share", "type": "binary"}, {"name": "comment", "type": "binary"}]})


def day(rows: int, models: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    play = (rng.random(rows) < 0.3).astype(float)
    labels = {"play": play, "watch_ratio": np.where(play > 0, rng.random(rows), 0.0),
              "share": (rng.random(rows) < 0.04).astype(float), "comment": (rng.random(rows) < 0.012).astype(float)}
    masks = {"play": np.ones(rows), "watch_ratio": play, "share": np.ones(rows), "comment": np.ones(rows)}
    predictions = [{task: np.clip(0.5 * labels[task] + rng.random(rows) * 0.5, 1e-3, 1 - 1e-3) for task in labels}
                   for _ in range(models)]
    users = rng.integers(0, max(1, rows // 10), rows)
    utility = labels["play"] + labels["share"] + labels["comment"]
    return labels, masks, predictions, users, utility


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[20_000, 200_000, 2_000_000])
    parser.add_argument("--models", type=int, default=3, help="models scored on the same rows (candidate, "
                                                                "production, single-task system)")
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start; numpy {np.__version__}")
    print(f"{'rows':>10} {'argsort s':>10} {'delong s':>9} {'row boot s':>11} {'user figs+boot s':>17} "
          f"{'total s':>8} {'total / argsort':>16}")
    for rows in args.rows:
        labels, masks, predictions, users, utility = day(rows, args.models)
        started = time.perf_counter()
        np.argsort(predictions[0]["play"], kind="stable")
        anchor = time.perf_counter() - started
        paired = PairedScores(SPEC, labels, masks, users=users, utility=utility,
                              uncertainty=UncertaintySettings(resamples=args.resamples), ranking=RankingSettings())
        for index, values in enumerate(predictions):
            paired.add(f"model{index}", values)
        started = time.perf_counter()
        paired.compute()
        total = time.perf_counter() - started
        seconds = paired.seconds
        print(f"{rows:>10,} {anchor:>10.3f} {seconds['delong']:>9.2f} {seconds['row_bootstrap']:>11.2f} "
              f"{seconds['user_figures_and_bootstrap']:>17.2f} {total:>8.2f} {total / anchor:>16.0f}", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at end; {args.models} models x 4 tasks, {args.resamples} resamples")


if __name__ == "__main__":
    main()
