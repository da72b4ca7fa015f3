"""Test MSE of single-task, shared-bottom, MMoE, CGC and PLE as task correlation varies.

The MMoE/PLE synthetic experiment (PLE_PAPER.md): two regression tasks from
ple_model.synthetic.correlated_regression_tasks, with correlation p = cos(w1, w2).
The paper used d = 512 and 1.4M samples per correlation; the defaults here
(d = 100, 20k train samples, 8 epochs) finish in about 10 minutes on 2 cores.
Labels are standardised with the training mean/std, so MSE is in units of the
label variance (predicting the mean scores ~1).

    .venv/bin/python bench/synthetic_correlation.py
    .venv/bin/python bench/synthetic_correlation.py --samples 100000 --dim 512 --epochs 20 --seeds 0 1 2

Prints a table (mean test MSE over both tasks and seeds) and saves a plot.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ple_model import build_model, synthetic  # noqa: E402
from ple_model.losses import masked_task_losses  # noqa: E402

MODEL_CONFIGS = {
    # Comparable capacity: 4 experts of width `expert` per level for the gated models.
    "single_task": lambda e, t: {"bottom_hidden": [e], "tower_hidden": t},
    "shared_bottom": lambda e, t: {"bottom_hidden": [2 * e], "tower_hidden": t},
    "mmoe": lambda e, t: {"num_experts": 4, "expert_hidden": [e], "tower_hidden": t},
    "cgc": lambda e, t: {"specific_experts": 1, "shared_experts": 2, "expert_hidden": [e], "tower_hidden": t},
    "ple": lambda e, t: {"num_levels": 2, "specific_experts": 1, "shared_experts": 2, "expert_hidden": [e],
                         "tower_hidden": t},
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=20_000, help="training samples per correlation")
    parser.add_argument("--test-samples", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=100, help="input dimension d (paper: 512)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--expert-width", type=int, default=32)
    parser.add_argument("--tower", type=int, nargs="+", default=[16])
    parser.add_argument("--correlations", type=float, nargs="+", default=[0.1, 0.3, 0.5, 0.7, 0.9, 1.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--models", nargs="+", default=list(MODEL_CONFIGS), choices=list(MODEL_CONFIGS))
    parser.add_argument("--threads", type=int, default=1,
                        help="intra-op threads; 1 is much faster for these small models on a shared box")
    parser.add_argument("--plot", default=str(Path(tempfile.gettempdir()) / "synthetic_correlation.png"))
    return parser.parse_args()


def train_and_test(name: str, args: argparse.Namespace, correlation: float, seed: int) -> list[float]:
    x, y = synthetic.correlated_regression_tasks(args.samples + args.test_samples, correlation, dim=args.dim,
                                                 seed=seed)
    mean, std = y[:args.samples].mean(0), y[:args.samples].std(0)
    y = (y - mean) / std
    spec = synthetic.correlated_tasks_spec(args.dim)
    x_train, y_train = torch.from_numpy(x[:args.samples]), torch.from_numpy(y[:args.samples])
    x_test, y_test = torch.from_numpy(x[args.samples:]), torch.from_numpy(y[args.samples:])
    torch.manual_seed(seed)
    model = build_model(name, spec, **MODEL_CONFIGS[name](args.expert_width, list(args.tower)))
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    for _ in range(args.epochs):
        order = torch.randperm(args.samples)
        for start in range(0, args.samples, args.batch):
            rows = order[start:start + args.batch]
            outputs = model(synthetic.correlated_tasks_features(x_train[rows].numpy()))
            labels = {"task1": y_train[rows, 0], "task2": y_train[rows, 1]}
            loss = sum(masked_task_losses(spec, outputs, labels).values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        outputs = model(synthetic.correlated_tasks_features(x_test.numpy()))
    return [float(((outputs[f"task{k + 1}"] - y_test[:, k]) ** 2).mean()) for k in range(2)]


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    results: dict[str, dict[float, list[list[float]]]] = {m: {p: [] for p in args.correlations} for m in args.models}
    start = time.perf_counter()
    runs = [(m, p, s) for p in args.correlations for s in args.seeds for m in args.models]
    for name, correlation, seed in tqdm(runs, desc="training", unit="model"):
        results[name][correlation].append(train_and_test(name, args, correlation, seed))
    print(f"\n{len(runs)} models trained in {time.perf_counter() - start:.0f} s "
          f"(d={args.dim}, {args.samples} train / {args.test_samples} test samples, {args.epochs} epochs, "
          f"seeds {args.seeds})")
    header = "model          " + "".join(f"{p:>9.1f}" for p in args.correlations)
    for title, pick in (("mean test MSE of task1 and task2", lambda r: np.mean(r)),
                        ("task1 test MSE", lambda r: np.mean([v[0] for v in r])),
                        ("task2 test MSE", lambda r: np.mean([v[1] for v in r]))):
        print(f"\n{title} (standardised labels; rows: model, columns: correlation)\n{header}")
        for name in args.models:
            print(f"{name:<15}" + "".join(f"{pick(results[name][p]):>9.4f}" for p in args.correlations))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(15, 4.5), sharex=True)
    for axis, (title, index) in zip(axes, (("mean of both tasks", None), ("task1", 0), ("task2", 1))):
        for name in args.models:
            values = [np.mean(results[name][p]) if index is None else np.mean([v[index] for v in results[name][p]])
                      for p in args.correlations]
            axis.plot(args.correlations, values, marker="o", label=name)
        axis.set_title(f"test MSE, {title}")
        axis.set_xlabel("task correlation p = cos(w1, w2)")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("MSE (standardised labels)")
    axes[0].legend()
    figure.suptitle(f"Synthetic MMoE data: d={args.dim}, {args.samples} samples, {args.epochs} epochs, "
                    f"seeds {args.seeds}")
    figure.tight_layout()
    Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.plot, dpi=120)
    print(f"\nplot saved to {args.plot}")


if __name__ == "__main__":
    main()
