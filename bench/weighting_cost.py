"""Step-time cost of each loss weighting (ple_model/weighting/) on the paper-shape PLE, on CPU.

Shape as bench/model_throughput.py: 2 levels, 2 task-specific + 2 shared experts
of width 256, towers [256, 128, 64], 4 binary tasks, 20 categorical features of
dim 16 (sparse embedding gradients, SparseAdam, as `--embedding-optimizer
sparse_adam`). One train step = forward, masked losses (Eq. 9),
`weighting.backward(...)`, the world's step (the trainer's path, one process).
The weightings are interleaved over --repeats rounds and the median step time
is reported, with its ratio to `static` measured in the same rounds (the
anchor): the machine is shared, so absolute times drift with the load.

    .venv/bin/python bench/weighting_cost.py                       # docs/measurements/weightings.md
    .venv/bin/python bench/weighting_cost.py --batch 1024 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import ple_model  # noqa: E402
from model_throughput import NUM_TASKS, TOWER, paper_spec, teacher_data  # noqa: E402
from ple_model.losses import masked_task_losses  # noqa: E402
from ple_model.weighting import build_weighting  # noqa: E402
from training.optim import build_optimizers, zero_grad  # noqa: E402
from training.world import SingleProcessWorld  # noqa: E402

WEIGHTINGS = ["static", "decay", "uncertainty", "dwa", "gradnorm", "pcgrad"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per weighting per round")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (median step time reported)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--weightings", nargs="+", default=WEIGHTINGS)
    return parser.parse_args()


class Setup:
    """Model + weighting + optimizers for one weighting, and its train step."""

    def __init__(self, name: str, spec: ple_model.ModelSpec):
        torch.manual_seed(0)
        self.spec = spec
        self.model = ple_model.build_model("ple", spec, num_levels=2, specific_experts=2, shared_experts=2,
                                           expert_hidden=[256], tower_hidden=TOWER)
        self.weighting = build_weighting(name, spec)
        self.world = SingleProcessWorld()
        self.optim = build_optimizers(self.model, self.weighting, self.world, optimizer="adam", lr=1e-3,
                                      weight_decay=0.0, embedding_optimizer="sparse_adam", embedding_lr=1e-3)

    def step(self, ids: torch.Tensor, labels: torch.Tensor) -> None:
        features = {f"cat{i}": ids[:, i] for i in range(ids.shape[1])}
        outputs = self.model(features)
        losses = masked_task_losses(self.spec, outputs, {f"task{k}": labels[:, k] for k in range(NUM_TASKS)}, {})
        zero_grad(self.optim.optimizers)
        self.weighting.backward(losses, epoch=0, shared_parameters=self.optim.parameters)
        self.world.step(self.optim.optimizers, self.optim.parameters)


def time_steps(setup: Setup, batches, steps: int, warmup: int) -> float:
    for ids, labels in batches[:warmup]:
        setup.step(ids, labels)
    started = time.perf_counter()
    for ids, labels in batches[warmup:warmup + steps]:
        setup.step(ids, labels)
    return (time.perf_counter() - started) / steps


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, "
          f"{args.threads} threads; load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    spec = paper_spec()
    ids, labels = teacher_data(args.batch * (args.warmup + args.steps), seed=0, vocab=spec.features[0].vocab_size)
    batches = list(zip(ids.split(args.batch), labels.split(args.batch)))
    setups = {name: Setup(name, spec) for name in args.weightings}
    times: dict[str, list[float]] = {name: [] for name in setups}
    for _ in range(args.repeats):
        for name, setup in setups.items():
            times[name].append(time_steps(setup, batches, args.steps, args.warmup))
    anchor = statistics.median(times["static"]) if "static" in times else None
    print(f"batch {args.batch}, {args.steps} steps x {args.repeats} interleaved rounds; median step time:")
    print(f"{'weighting':<12} {'ms/step':>9} {'min':>8} {'max':>8} {'x static':>9}")
    for name, values in times.items():
        median = statistics.median(values)
        ratio = f"{median / anchor:9.2f}" if anchor else ""
        print(f"{name:<12} {1000 * median:9.1f} {1000 * min(values):8.1f} {1000 * max(values):8.1f} {ratio}")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
