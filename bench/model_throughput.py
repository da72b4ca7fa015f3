"""Training throughput of our PLE (fp32, bf16 autocast) vs torch-rechub's PLE, on CPU.

Paper shape: 2 levels, single-layer experts of width 256, towers [256, 128, 64],
4 binary tasks, 20 categorical features of dim 16, batch 1024.

Measures, in one run:
- GEMM GFLOP/s in fp32 and bf16 (2048^3 and the model's 1024x320 @ 320x2560 expert GEMM; peak = best),
- samples/s of full train steps (forward + backward + Adam step), interleaving
  the variants over --repeats rounds and reporting the median (the machine is
  shared, so single runs are noisy),
- achieved GFLOP/s from an analytic FLOP count of the model (3x forward for
  forward + backward) and its fraction of the measured peak,
- unless --skip-auc: test AUC per task after training each variant for
  --auc-epochs on a learnable synthetic problem in the same shape.

torch-rechub is not a project dependency; install it with
`.venv/bin/pip install --no-deps torch-rechub` (its PLE is plain torch).

    .venv/bin/python bench/model_throughput.py                   # defaults as in docs/MODEL.md
    .venv/bin/python bench/model_throughput.py --skip-auc --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ple_model  # noqa: E402
from ple_model.layers import ExtractionLevel, StackedLinear  # noqa: E402

NUM_FEATURES, VOCAB, EMBEDDING_DIM, NUM_TASKS = 20, 1000, 16, 4
EXPERT_WIDTH, TOWER = 256, [256, 128, 64]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=20, help="timed train steps per measurement")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved measurement rounds (median reported)")
    parser.add_argument("--specific-experts", type=int, default=2, help="task-specific experts per task and level")
    parser.add_argument("--shared-experts", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-rechub", action="store_true")
    parser.add_argument("--skip-auc", action="store_true")
    parser.add_argument("--auc-samples", type=int, default=200_000, help="train samples (test: a quarter of it)")
    parser.add_argument("--auc-epochs", type=int, default=2)
    parser.add_argument("--auc-vocab", type=int, default=100,
                        help="ids per feature in the AUC problem (fewer than the throughput shape's 1000 so that "
                             "a short run sees every id often enough to learn it)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def paper_spec(vocab: int = VOCAB) -> ple_model.ModelSpec:
    return ple_model.ModelSpec.model_validate({
        "features": [{"name": f"cat{i}", "type": "categorical", "vocab_size": vocab, "embedding_dim": EMBEDDING_DIM}
                     for i in range(NUM_FEATURES)],
        "tasks": [{"name": f"task{k}", "type": "binary", "label": f"task{k}"} for k in range(NUM_TASKS)],
    })


GEMM_SHAPES = [(2048, 2048, 2048), (1024, 320, 2560)]  # square; the model's level-1 expert GEMM (m, k, n)


def gemm_peaks(rounds: int = 5) -> dict:
    """Best GFLOP/s of an (m x k) @ (k x n) matmul per dtype and shape, fp32 and bf16 interleaved."""
    best = {}
    operands = {}
    for m, k, n in GEMM_SHAPES:
        for dtype in (torch.float32, torch.bfloat16):
            operands[(m, k, n, dtype)] = (torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype))
    for (m, k, n, dtype), (a, b) in operands.items():
        a @ b  # warm-up (oneDNN/MKL kernel selection)
        best[(m, k, n, dtype)] = 0.0
    for _ in range(rounds):
        for key, (a, b) in operands.items():
            m, k, n, _dtype = key
            iterations = max(1, int(4e9 / (2 * m * k * n)))
            start = time.perf_counter()
            for _ in range(iterations):
                a @ b
            best[key] = max(best[key], 2 * m * k * n * iterations / (time.perf_counter() - start) / 1e9)
    return best


def model_flops_per_sample(model: torch.nn.Module) -> float:
    """Forward FLOPs per sample of the matmuls our model runs (gates counted dense, as computed)."""
    multiply_adds = 0
    for module in model.modules():
        if isinstance(module, StackedLinear):
            multiply_adds += module.count * module.in_features * module.out_features
        if isinstance(module, ExtractionLevel):
            multiply_adds += module.num_gates * module.num_experts * module.gate_weight.shape[1]  # gate logits
            multiply_adds += module.num_gates * module.num_experts * module.expert_dim            # mixing
    return 2.0 * multiply_adds


def teacher_data(n: int, seed: int, vocab: int):
    """Learnable labels: per task, a mix of common and task-specific id effects plus an interaction."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, (n, NUM_FEATURES))
    common = rng.normal(0, 1, (NUM_FEATURES, vocab))
    labels = np.zeros((n, NUM_TASKS), dtype=np.float32)
    columns = np.arange(NUM_FEATURES)
    for k in range(NUM_TASKS):
        effect = 0.7 * common + 0.7 * rng.normal(0, 1, (NUM_FEATURES, vocab))
        per_feature = effect[columns, ids]                 # (n, features)
        logit = 1.5 * per_feature.sum(1) / np.sqrt(NUM_FEATURES) + 0.8 * np.tanh(per_feature[:, 0] * per_feature[:, 1]) - 0.5
        labels[:, k] = rng.random(n) < 1 / (1 + np.exp(-logit))
    return torch.from_numpy(ids), torch.from_numpy(labels)


class Variant:
    """One model + optimizer + how to run a train step on a batch."""

    def __init__(self, name: str, args: argparse.Namespace, spec: ple_model.ModelSpec):
        vocab = spec.features[0].vocab_size
        self.name = name
        self.spec = spec
        torch.manual_seed(args.seed)
        if name.startswith("ours"):
            self.precision = "bf16" if name.endswith("bf16") else "fp32"
            self.model = ple_model.build_model("ple", spec, num_levels=2, specific_experts=args.specific_experts,
                                               shared_experts=args.shared_experts, expert_hidden=[EXPERT_WIDTH],
                                               tower_hidden=TOWER)
        else:
            from torch_rechub.basic.features import SparseFeature
            from torch_rechub.models.multi_task import PLE as RechubPLE

            features = [SparseFeature(f"cat{i}", vocab, EMBEDDING_DIM) for i in range(NUM_FEATURES)]
            self.model = RechubPLE(features, ["classification"] * NUM_TASKS, n_level=2,
                                   n_expert_specific=args.specific_experts, n_expert_shared=args.shared_experts,
                                   expert_params={"dims": [EXPERT_WIDTH]},
                                   tower_params_list=[{"dims": TOWER}] * NUM_TASKS)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)

    def features(self, ids: torch.Tensor) -> dict:
        return {f"cat{i}": ids[:, i] for i in range(NUM_FEATURES)}

    def predict_logits_or_probs(self, ids: torch.Tensor) -> torch.Tensor:
        if self.name.startswith("ours"):
            with ple_model.autocast(self.precision):
                outputs = self.model(self.features(ids))
            return torch.stack([outputs[f"task{k}"] for k in range(NUM_TASKS)], dim=1)
        return self.model(self.features(ids))  # rechub returns probabilities

    def train_step(self, ids: torch.Tensor, labels: torch.Tensor) -> float:
        self.model.train()
        out = self.predict_logits_or_probs(ids)
        if self.name.startswith("ours"):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(out.float(), labels)
        else:
            loss = torch.nn.functional.binary_cross_entropy(out.float().clamp(1e-7, 1 - 1e-7), labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.item()

    @torch.no_grad()
    def test_auc(self, ids: torch.Tensor, labels: torch.Tensor, batch: int) -> list[float]:
        self.model.eval()
        scores = torch.cat([self.predict_logits_or_probs(ids[i:i + batch]).float() for i in range(0, len(ids), batch)])
        return [float(roc_auc_score(labels[:, k].numpy(), scores[:, k].numpy())) for k in range(NUM_TASKS)]


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    spec = paper_spec()
    names = ["ours_fp32", "ours_bf16"] + ([] if args.skip_rechub else ["rechub_fp32"])
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch}, "
          f"experts per level: {args.specific_experts} per task x {NUM_TASKS} + {args.shared_experts} shared")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cpus; "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}, oneDNN available {torch.backends.mkldnn.is_available()} "
          "(bf16 matmul runs in oneDNN; ONEDNN_VERBOSE=1 shows the kernel)")
    gemm = gemm_peaks()
    for m, k, n in GEMM_SHAPES:
        print(f"GEMM ({m}x{k}) @ ({k}x{n}), best of 5: fp32 {gemm[(m, k, n, torch.float32)]:.0f} GFLOP/s, "
              f"bf16 {gemm[(m, k, n, torch.bfloat16)]:.0f} GFLOP/s")
    # Peak per dtype: the best over the shapes measured.
    peaks = {name: max(gemm[(m, k, n, dtype)] for m, k, n in GEMM_SHAPES)
             for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}

    variants = {name: Variant(name, args, spec) for name in names}
    flops_per_sample = model_flops_per_sample(variants["ours_fp32"].model)
    train_flops = 3 * flops_per_sample  # backward ~ 2x forward
    print(f"model: {sum(p.numel() for p in variants['ours_fp32'].model.parameters()) / 1e6:.2f} M parameters, "
          f"{flops_per_sample / 1e6:.1f} MFLOP forward per sample, {train_flops / 1e6:.1f} MFLOP per train sample")

    generator = torch.Generator().manual_seed(args.seed)
    ids = torch.randint(0, VOCAB, (args.batch, NUM_FEATURES), generator=generator)
    labels = torch.randint(0, 2, (args.batch, NUM_TASKS), generator=generator).float()
    rates: dict[str, list[float]] = {name: [] for name in names}
    for variant in variants.values():
        for _ in range(args.warmup):
            variant.train_step(ids, labels)
    for _ in range(args.repeats):
        for name, variant in variants.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                variant.train_step(ids, labels)
            rates[name].append(args.steps * args.batch / (time.perf_counter() - start))

    print(f"\n{'variant':<12} {'samples/s (median)':>19} {'min..max':>17} {'GFLOP/s':>8} {'% of peak':>9}")
    medians = {}
    for name in names:
        median = statistics.median(rates[name])
        medians[name] = median
        achieved = median * train_flops / 1e9
        peak = peaks["bf16" if name.endswith("bf16") else "fp32"]
        print(f"{name:<12} {median:>19.0f} {min(rates[name]):>8.0f}..{max(rates[name]):<8.0f} "
              f"{achieved:>8.0f} {100 * achieved / peak:>8.0f}%")
    if "rechub_fp32" in medians:
        print(f"speed-up over torch-rechub: fp32 {medians['ours_fp32'] / medians['rechub_fp32']:.2f}x, "
              f"bf16 {medians['ours_bf16'] / medians['rechub_fp32']:.2f}x "
              "(rechub GFLOP/s uses our FLOP count; its MLPs add BatchNorm)")

    print(f"load average after the throughput rounds: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.skip_auc:
        return
    # One teacher for train and test: generate once and split.
    all_ids, all_labels = teacher_data(args.auc_samples + args.auc_samples // 4, seed=args.seed + 1,
                                       vocab=args.auc_vocab)
    train_ids, train_labels = all_ids[:args.auc_samples], all_labels[:args.auc_samples]
    test_ids, test_labels = all_ids[args.auc_samples:], all_labels[args.auc_samples:]
    print(f"\nAUC on a learnable synthetic problem (vocab {args.auc_vocab}, {args.auc_samples} train / {len(test_ids)} test, "
          f"{args.auc_epochs} epochs, fresh models):")
    for name in names:
        variant = Variant(name, args, paper_spec(args.auc_vocab))
        start = time.perf_counter()
        shuffle = torch.Generator().manual_seed(args.seed)
        for _ in range(args.auc_epochs):
            order = torch.randperm(len(train_ids), generator=shuffle)
            for i in range(0, len(order) - args.batch + 1, args.batch):
                batch = order[i:i + args.batch]
                variant.train_step(train_ids[batch], train_labels[batch])
        aucs = variant.test_auc(test_ids, test_labels, 4096)
        print(f"{name:<12} AUC per task {[round(a, 4) for a in aucs]}, mean {np.mean(aucs):.4f} "
              f"(trained in {time.perf_counter() - start:.0f} s)")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
