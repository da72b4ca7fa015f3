"""Test MSE of single-task, shared-bottom, MMoE, CGC and PLE as task correlation varies, at MATCHED
parameter counts, with seeds and intervals: the MMoE/PLE synthetic experiment (PLE_PAPER.md).

Two regression tasks from ple_model.synthetic.correlated_regression_tasks with the paper's
generator settings (c = 1, m = 10 sine terms, noise variance 0.01) and task correlation
p = cos(w1, w2). Each model's width is chosen so that its parameter count is within a few percent
of --target-params (printed), so no model wins by capacity alone: PLE's two levels of experts are
narrower than CGC's one level. Every seed draws a new data set AND a new initialisation; per
correlation and model the script prints the mean test MSE over seeds with a 95% t interval, and
the paired difference to PLE (same data set per seed) with its t interval over seeds.
Labels are standardised with the training mean/std (MSE 1 = predicting the mean).

    .venv/bin/python bench/synthetic_correlation.py                        # d=512, 30k rows, 3 seeds
    .venv/bin/python bench/synthetic_correlation.py --samples 100000 --seeds 0 1 2 3 4 --correlations 0.1 0.3 0.5 0.7 0.9 1.0

The paper used d = 512 and 1.4M samples per correlation; see docs/MODEL.md for what was run here.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ple_model import build_model, synthetic  # noqa: E402
from ple_model.losses import masked_task_losses  # noqa: E402

MODELS = ("single_task", "shared_bottom", "mmoe", "cgc", "ple")


DEPTH_MATCHED = False  # --depth-matched: two hidden layers in every bottom/expert but PLE's (two levels already)


def hyperparameters(name: str, width: int, tower: list[int]) -> dict:
    """Expert count fixed per architecture; `width` is what parameter matching adjusts."""
    hidden = [width, width] if DEPTH_MATCHED else [width]
    return {
        "single_task": {"bottom_hidden": hidden, "tower_hidden": tower},
        "shared_bottom": {"bottom_hidden": hidden, "tower_hidden": tower},
        "mmoe": {"num_experts": 4, "expert_hidden": hidden, "tower_hidden": tower},
        "cgc": {"specific_experts": 1, "shared_experts": 2, "expert_hidden": hidden, "tower_hidden": tower},
        "ple": {"num_levels": 2, "specific_experts": 1, "shared_experts": 2, "expert_hidden": [width],
                "tower_hidden": tower},
    }[name]


def parameter_count(name: str, spec, width: int, tower: list[int]) -> int:
    return sum(p.numel() for p in build_model(name, spec, **hyperparameters(name, width, tower)).parameters())


def matched_width(name: str, spec, target: int, tower: list[int]) -> tuple[int, int]:
    """The width whose parameter count is closest to target (counts grow with width: bisection)."""
    low, high = 1, 8192
    while high - low > 1:
        middle = (low + high) // 2
        if parameter_count(name, spec, middle, tower) <= target:
            low = middle
        else:
            high = middle
    best = min((low, high), key=lambda w: abs(parameter_count(name, spec, w, tower) - target))
    return best, parameter_count(name, spec, best, tower)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=30_000, help="training samples per correlation")
    parser.add_argument("--test-samples", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=512, help="input dimension d (paper: 512)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--target-params", type=int, default=80_000,
                        help="every model's width is chosen to land near this parameter count")
    parser.add_argument("--tower", type=int, nargs="+", default=[16])
    parser.add_argument("--correlations", type=float, nargs="+", default=[0.1, 0.5, 0.9])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--depth-matched", action="store_true",
                        help="give every other model two hidden layers per bottom/expert, as deep as PLE's two "
                             "levels of one-layer experts (still at the matched parameter count)")
    parser.add_argument("--threads", type=int, default=1,
                        help="intra-op threads; 1 is much faster for these small models on a shared box")
    parser.add_argument("--json", default=str(Path(tempfile.gettempdir()) / "synthetic_correlation.json"))
    parser.add_argument("--plot", default=str(Path(tempfile.gettempdir()) / "synthetic_correlation.png"))
    return parser.parse_args()


def train_and_test(name: str, width: int, args: argparse.Namespace, data, seed: int) -> list[float]:
    x_train, y_train, x_test, y_test = data
    spec = synthetic.correlated_tasks_spec(args.dim)
    torch.manual_seed(seed)
    model = build_model(name, spec, **hyperparameters(name, width, list(args.tower)))
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    order_generator = torch.Generator().manual_seed(seed)
    for _ in range(args.epochs):
        order = torch.randperm(len(x_train), generator=order_generator)
        for start in range(0, len(x_train), args.batch):
            rows = order[start:start + args.batch].numpy()
            outputs = model(synthetic.correlated_tasks_features(x_train[rows]))
            labels = {"task1": torch.from_numpy(y_train[rows, 0]), "task2": torch.from_numpy(y_train[rows, 1])}
            loss = sum(masked_task_losses(spec, outputs, labels).values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        outputs = model(synthetic.correlated_tasks_features(x_test))
    return [float(((outputs[f"task{k + 1}"].numpy() - y_test[:, k]) ** 2).mean()) for k in range(2)]


def data_set(args: argparse.Namespace, correlation: float, seed: int):
    x, y = synthetic.correlated_regression_tasks(args.samples + args.test_samples, correlation, dim=args.dim,
                                                 seed=seed)
    mean, std = y[:args.samples].mean(0), y[:args.samples].std(0)
    y = ((y - mean) / std).astype(np.float32)
    return x[:args.samples], y[:args.samples], x[args.samples:], y[args.samples:]


def t_interval(values: list[float]) -> tuple[float, float, float]:
    """(mean, low, high) of a 95% Student t interval over seeds (NaN bounds with one seed)."""
    from scipy.stats import t

    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = float(t.ppf(0.975, len(values) - 1)) * float(np.std(values, ddof=1)) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def main() -> None:
    args = parse_args()
    global DEPTH_MATCHED
    DEPTH_MATCHED = args.depth_matched
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    spec = synthetic.correlated_tasks_spec(args.dim)
    widths = {name: matched_width(name, spec, args.target_params, list(args.tower)) for name in args.models}
    print(f"machine: {os.cpu_count()} cores, load average at start {load_start[0]:.1f}; torch threads {args.threads}")
    print(f"d={args.dim}, c=1, m=10, noise 0.01; {args.samples} train / {args.test_samples} test rows per "
          f"correlation and seed; {args.epochs} epochs, batch {args.batch}, Adam {args.lr}; towers {args.tower}"
          + ("; depth-matched (2 hidden layers per bottom/expert, PLE: 2 levels of 1)" if DEPTH_MATCHED else ""))
    print("\nmatched parameter counts (target {:,}):".format(args.target_params))
    for name, (width, count) in widths.items():
        print(f"  {name:<14} width {width:>4}  {count:>8,} parameters ({count / args.target_params - 1:+.1%})")

    # results[name][p] = list over seeds of [task1 MSE, task2 MSE]
    results: dict[str, dict[float, list[list[float]]]] = {m: {p: [] for p in args.correlations} for m in args.models}
    started = time.perf_counter()
    runs = 0
    for correlation in args.correlations:
        for seed in args.seeds:
            data = data_set(args, correlation, seed)
            for name in args.models:
                results[name][correlation].append(train_and_test(name, widths[name][0], args, data, seed))
                runs += 1
            print(f"  p={correlation}: seed {seed} done ({runs} models, {time.perf_counter() - started:.0f} s)",
                  flush=True)
    seconds = time.perf_counter() - started
    load_end = os.getloadavg()
    print(f"\n{runs} models trained in {seconds:.0f} s; load average {load_start[0]:.1f} at start, "
          f"{load_end[0]:.1f} at end ({os.cpu_count()} cores)")

    header = "model           " + "".join(f"{'p=' + str(p):>26}" for p in args.correlations)
    for title, pick in (("mean test MSE of task1 and task2", lambda r: float(np.mean(r))),
                        ("task1 test MSE", lambda r: r[0]), ("task2 test MSE", lambda r: r[1])):
        print(f"\n{title}: mean over seeds [95% t interval] (standardised labels)\n{header}")
        for name in args.models:
            cells = []
            for p in args.correlations:
                mean, low, high = t_interval([pick(r) for r in results[name][p]])
                cells.append(f"{mean:.4f} [{low:.4f}, {high:.4f}]")
            print(f"{name:<16}" + "".join(f"{c:>26}" for c in cells))
    if "ple" in args.models:
        print(f"\nmodel minus PLE, mean test MSE over both tasks (paired by seed: same data set): mean [95% t "
              f"interval]; * = interval excludes 0 (positive = PLE better)\n{header}")
        for name in args.models:
            if name == "ple":
                continue
            cells = []
            for p in args.correlations:
                differences = [float(np.mean(a)) - float(np.mean(b))
                               for a, b in zip(results[name][p], results["ple"][p])]
                mean, low, high = t_interval(differences)
                mark = "*" if (low > 0 or high < 0) else " "
                cells.append(f"{mean:+.4f} [{low:+.4f}, {high:+.4f}]{mark}")
            print(f"{name:<16}" + "".join(f"{c:>26}" for c in cells))

    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({
        "args": vars(args), "widths": {n: {"width": w, "parameters": c} for n, (w, c) in widths.items()},
        "results": {n: {str(p): v for p, v in r.items()} for n, r in results.items()},
        "seconds": seconds, "load_average": {"start": load_start, "end": load_end}, "cores": os.cpu_count()},
        indent=1))
    print(f"\nresults: {args.json}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(15, 4.5), sharex=True)
    for axis, (title, index) in zip(axes, (("mean of both tasks", None), ("task1", 0), ("task2", 1))):
        for name in args.models:
            stats = [t_interval([float(np.mean(r)) if index is None else r[index] for r in results[name][p]])
                     for p in args.correlations]
            means = np.array([s[0] for s in stats])
            axis.plot(args.correlations, means, marker="o", label=f"{name} ({widths[name][1]:,})")
            if len(args.seeds) > 1:
                axis.fill_between(args.correlations, [s[1] for s in stats], [s[2] for s in stats], alpha=0.15)
        axis.set_title(f"test MSE, {title}")
        axis.set_xlabel("task correlation p = cos(w1, w2)")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("MSE (standardised labels)")
    axes[0].legend(fontsize=8)
    figure.suptitle(f"Synthetic MMoE data: d={args.dim}, {args.samples} samples, {args.epochs} epochs, "
                    f"~{args.target_params:,} parameters per model, seeds {args.seeds} (bands: 95% t intervals)")
    figure.tight_layout()
    Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.plot, dpi=120)
    print(f"plot saved to {args.plot}")


if __name__ == "__main__":
    main()
