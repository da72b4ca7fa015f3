"""Training throughput on CPU: the loader, one PLE step, `ple train` with 1 and 2 workers, and embeddings at scale.

    .venv/bin/python bench/training_throughput.py                       # everything below, ~15 min on 2 cores
    .venv/bin/python bench/training_throughput.py --sections scaling --launchers horovodrun torch
    .venv/bin/python bench/training_throughput.py --sections embeddings --embedding-rows 10000 1000000 10000000

Sections (each prints its figures next to the anchor they are compared with, measured in the same run):
- loader: rows/s through Petastorm (make_batch_reader + TransformSpec + BatchedDataLoader with the
  shuffling buffer) into torch tensors; anchor: the PLE training step's samples/s (needs >= 2x).
- scaling: `ple train` with --workers 1 and --workers 2 on the same cores (horovodrun and/or
  TorchDistributor), per embedding optimizer; figure: steady-state samples/s (median step);
  anchor: the 1-worker run of the same settings in the same round (rounds interleaved, median
  ratio printed; target: 2 workers >= 0.9x). Second anchor, robust to a loaded machine where a
  2-thread worker suffers from oversubscription: twice a 1-thread worker's rate (efficiency 1.0 =
  the exchange costs nothing).
- profile: one step in this process split into forward + loss, backward and world.step (the
  optimizers), per --embedding-rows size and embedding optimizer; anchor: the smallest table.
- embeddings: `ple train --workers 1` with a user table of each --embedding-rows size, per
  embedding optimizer: median step time, peak RSS and gradient bytes per step (what each worker puts
  on the wire with several workers); anchor: the smallest table (target: 10M rows within 1.3x of 10k).
- precision (not in the default sections): `ple train --precision fp32` and `bf16` end to end (loader
  included: the epoch's samples/s) and their median step, interleaved over --repeats rounds; the
  CPU's flags and what `--precision auto` resolves to here; per-task validation AUC of the last
  round's two models (fp32's DeLong 95% interval, the paired difference); the loader alone; the
  bf16 step in this process split into forward+loss / backward / optimizers and by op (torch.profiler:
  GEMMs, embedding gathers, autocast casts, gate softmax, the rest), its GEMM FLOP/s against the bf16
  GEMM peak measured in the same run (bench/model_throughput.py's gemm_peaks). Anchor: the fp32 run.
      .venv/bin/python bench/training_throughput.py --sections precision --repeats 2
The machine's load average is printed with every section: figures from a loaded machine are noisy,
the ratios less so.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(1, str(REPO_ROOT / "bench"))   # model_throughput's GEMM peak (the precision section)


def make_spec(user_rows: int) -> dict:
    return {
        "features": [
            {"name": "user_idx", "type": "categorical", "vocab_size": user_rows, "embedding_dim": 16},
            {"name": "item_idx", "type": "categorical", "vocab_size": 50000, "embedding_dim": 16},
            {"name": "hour", "type": "categorical", "vocab_size": 24, "embedding_dim": 4},
            *[{"name": f"num_{i}", "type": "numeric"} for i in range(8)],
            {"name": "tag_idx", "type": "multi_categorical", "vocab_size": 500, "embedding_dim": 8, "max_len": 5},
        ],
        "tasks": [
            {"name": "play", "type": "binary", "label": "play"},
            {"name": "watch_ratio", "type": "regression", "label": "watch_ratio", "mask": "play"},
            {"name": "share", "type": "binary", "label": "share"},
            {"name": "comment", "type": "binary", "label": "comment"},
        ],
    }


def write_table(path: Path, rows: int, row_group_rows: int, files: int, user_rows: int, seed: int = 0) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    per_file = rows // files
    for index in range(files):
        n = per_file
        numeric = {f"num_{i}": rng.normal(0, 1, n).astype(np.float32) for i in range(8)}
        hour = rng.integers(0, 24, n)
        # Labels depend on the features (learnable: the precision section compares validation AUCs).
        signal = numeric["num_0"] - 0.5 * numeric["num_1"] + 0.5 * np.sin(hour / 4)
        play = rng.random(n) < 1 / (1 + np.exp(-(signal - 0.4)))
        columns = {
            "user_idx": rng.integers(1, user_rows, n), "item_idx": rng.integers(1, 50000, n),
            "hour": hour, **numeric,
            "tag_idx": pa.array(list(rng.integers(0, 500, (n, 5))), type=pa.list_(pa.int64())),
            "play": play.astype(np.int32),
            "watch_ratio": pa.array(np.where(play, 1 / (1 + np.exp(-numeric["num_2"])), np.nan), mask=~play),
            "share": (rng.random(n) < 0.04 / (1 + np.exp(-2 * numeric["num_3"]))).astype(np.int32),
            "comment": (rng.random(n) < 0.02 / (1 + np.exp(-2 * signal))).astype(np.int32),
        }
        pq.write_table(pa.table(columns), path / f"part-{index:04d}.parquet", row_group_size=row_group_rows)


def load() -> str:
    return f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cpus"


# --- loader and step ----------------------------------------------------------------------

def loader_rate(urls, spec, batch_size: int, shuffle_buffer: int, reader_workers: int) -> float:
    from training.data import DeterministicBatches, shard_layout, to_batch

    layout = shard_layout(urls, 1)
    source = DeterministicBatches(urls, spec, rank=0, layout=layout, batch_size=batch_size, seed=1, shuffle=True,
                                  shuffle_buffer=shuffle_buffer, reader_workers=reader_workers)
    start, rows = time.perf_counter(), 0
    for columns in source.batches():
        rows += to_batch(columns, spec).rows
    return rows / (time.perf_counter() - start)


def train_step_rate(urls, spec, batch_size: int, steps: int, model_params: dict) -> float:
    import torch

    from ple_model import build_model
    from ple_model.losses import masked_task_losses
    from ple_model.weighting import build_weighting
    from training.data import DeterministicBatches, shard_layout, to_batch

    layout = shard_layout(urls, 1)
    source = DeterministicBatches(urls, spec, rank=0, layout=layout, batch_size=batch_size, seed=1, shuffle=False)
    batches = [to_batch(b, spec) for b in source.batches(limit=min(steps, 20))]
    model = build_model("ple", spec, **model_params)
    weighting = build_weighting("decay", spec)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(batch) -> None:
        loss = weighting.combine(masked_task_losses(spec, model(batch.features), batch.labels, batch.masks))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for batch in batches[:3]:  # warm-up
        step(batch)
    start = time.perf_counter()
    for index in range(steps):
        step(batches[index % len(batches)])
    return steps * batch_size / (time.perf_counter() - start)


# --- `ple train` runs ------------------------------------------------------------------------

def ple_train(table: Path, validation: Path, spec_path: Path, out: Path, *, workers: int, launcher: str,
              batch_size: int, steps: int, embedding_optimizer: str, model_params: dict,
              threads: int | None = None, extra: tuple[str, ...] = ()) -> dict:
    command = [sys.executable, "-m", "jobs.train", "--train-path", str(table), "--validation-path", str(validation),
               "--spec", str(spec_path), "--out", str(out), "--workers", str(workers), "--epochs", "1",
               "--batch-size", str(batch_size), "--max-steps-per-epoch", str(steps), "--no-progress",
               "--validation-batch-size", "16384", "--embedding-optimizer", embedding_optimizer,
               "--selection", "last_epoch", "--checkpoint-every-steps", "0"]
    if launcher != "auto":
        command += ["--launcher", launcher]
    if threads:
        command += ["--threads", str(threads)]
    command += list(extra)
    for key, value in model_params.items():
        command += ["--set", f"model_params.{key}={json.dumps(value)}"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    record = json.loads((out / "run_record.json").read_text())
    epoch = record["epochs"][0]
    return {"median_step_s": epoch["step_seconds_median"], "epoch_samples_per_s": epoch["train_samples_per_s"],
            "samples_per_s": batch_size * workers / epoch["step_seconds_median"],
            "gradient_bytes": epoch["gradient_bytes_per_step"], "peak_rss": record["peak_rss_bytes_rank0"],
            "embedding_rows": record["embeddings"]["rows"], "precision": record.get("precision")}


def scaling(args, work: Path, model_params: dict) -> None:
    """1 vs 2 workers, interleaved: each round runs the 1-worker anchor, then every launcher's 2 workers."""
    import statistics

    import yaml

    table, validation = work / "table", work / "validation"
    spec_path = work / "spec-scaling.yaml"
    spec_path.write_text(yaml.safe_dump(make_spec(args.scaling_user_rows)))
    print(f"\n== scaling: 1 vs 2 workers on the same {os.cpu_count()} cores (user table {args.scaling_user_rows:,} "
          f"rows, batch {args.batch_size} per worker, {args.steps} steps, {args.repeats} interleaved rounds; "
          f"samples/s from the median step) -- {load()}")
    ratios: dict[tuple[str, str], list[float]] = {}
    for round_index in range(args.repeats):
        for optimizer in args.embedding_optimizers:
            def run(workers: int, launcher: str, threads: int | None = None) -> dict:
                out = work / f"scaling-{round_index}-{optimizer}-{launcher}-{workers}-{threads}"
                return ple_train(table, validation, spec_path, out, workers=workers, launcher=launcher,
                                 batch_size=args.batch_size, steps=args.steps, embedding_optimizer=optimizer,
                                 model_params=model_params, threads=threads)

            anchor = run(1, "single")              # one worker on all cores (the target's anchor)
            per_core = run(1, "single", threads=1)  # one worker on one core: 2x this = no exchange cost at all
            for launcher in args.launchers:
                two = run(2, "horovodrun" if launcher == "horovodrun" else "torch-distributor")
                ratio = two["samples_per_s"] / anchor["samples_per_s"]
                efficiency = two["samples_per_s"] / (2 * per_core["samples_per_s"])
                ratios.setdefault((launcher, optimizer), []).append((ratio, efficiency))
                print(f"round {round_index + 1}: {launcher:<10} {optimizer:<16} 1 worker {anchor['samples_per_s']:>8,.0f}/s "
                      f"(1 thread {per_core['samples_per_s']:>7,.0f}/s)  2 workers {two['samples_per_s']:>8,.0f}/s  "
                      f"ratio {ratio:.2f}x  efficiency {efficiency:.2f}  bytes/step/worker "
                      f"{two['gradient_bytes'] / 1e6:.2f} MB  -- {load()}", flush=True)
    print(f"{'launcher':<12} {'embeddings':<16} {'2 vs 1 worker':>13} {'2 vs 2x(1 thread)':>18}  rounds")
    for (launcher, optimizer), values in ratios.items():
        print(f"{launcher:<12} {optimizer:<16} {statistics.median(v[0] for v in values):>12.2f}x "
              f"{statistics.median(v[1] for v in values):>17.2f}   " + " ".join(f"{r:.2f}/{e:.2f}" for r, e in values))
    print(f"-- {load()}")


def embeddings(args, work: Path, model_params: dict) -> None:
    import yaml

    sizes = sorted(args.embedding_rows)
    print(f"\n== embeddings at scale: user table rows vs step time, peak RSS, gradient bytes (1 worker, batch "
          f"{args.batch_size}, {args.steps} steps, dim 16) -- {load()}")
    print(f"{'embeddings':<16} {'user rows':>12} {'median step':>12} {'vs smallest':>12} {'peak RSS':>10} "
          f"{'grad bytes/step':>16}")
    validation = work / "validation"
    for optimizer in args.embedding_optimizers:
        anchor = None
        for rows in sizes:
            table = work / f"table-users-{rows}"
            if not table.exists():
                write_table(table, args.rows, args.row_group_rows, args.files, user_rows=rows, seed=1)
            spec_path = work / f"spec-{rows}.yaml"
            spec_path.write_text(yaml.safe_dump(make_spec(rows)))
            run = ple_train(table, validation, spec_path, work / f"emb-{optimizer}-{rows}", workers=1,
                            launcher="single", batch_size=args.batch_size, steps=args.steps,
                            embedding_optimizer=optimizer, model_params=model_params)
            anchor = anchor or run["median_step_s"]
            print(f"{optimizer:<16} {rows:>12,} {run['median_step_s'] * 1e3:>9.1f} ms {run['median_step_s'] / anchor:>11.2f}x "
                  f"{run['peak_rss'] / 2**20:>7,.0f} MB {run['gradient_bytes'] / 1e6:>13.2f} MB", flush=True)
    print(f"-- {load()}")


def random_batch(spec, n: int, generator):
    """(features, labels, masks) of n random rows of make_spec's spec, as torch tensors."""
    import torch

    features = {f.name: (torch.randn(n, generator=generator) if f.type == "numeric" else
                         torch.randint(1, int(f.vocab_size), (n,) if f.type == "categorical" else (n, f.max_len),
                                       generator=generator)) for f in spec.features}
    play = (torch.rand(n, generator=generator) < 0.4).float()
    labels = {"play": play, "watch_ratio": torch.rand(n, generator=generator),
              "share": (torch.rand(n, generator=generator) < 0.02).float(),
              "comment": (torch.rand(n, generator=generator) < 0.01).float()}
    return features, labels, {"play": torch.ones(n), "watch_ratio": play, "share": torch.ones(n),
                              "comment": torch.ones(n)}


def profile(args, model_params: dict) -> None:
    """Where one step's time goes (forward + loss, backward, world.step incl. optimizers), in this process."""
    import statistics

    import torch

    from ple_model import ModelSpec, build_model
    from ple_model.losses import masked_task_losses
    from ple_model.weighting import build_weighting
    from training.optim import build_optimizers, zero_grad
    from training.world import SingleProcessWorld, gradient_payload_bytes

    torch.set_num_threads(args.profile_threads)
    generator = torch.Generator().manual_seed(0)
    print(f"\n== profile of one step (batch {args.batch_size}, {args.profile_threads} torch thread(s), median of 10 "
          f"after 2 warm-up) -- {load()}")

    def batch(spec):
        return random_batch(spec, args.batch_size, generator)

    for rows in sorted(args.embedding_rows):
        spec = ModelSpec.model_validate(make_spec(rows))
        for optimizer in args.embedding_optimizers:
            torch.manual_seed(0)
            model, weighting, world = build_model("ple", spec, **model_params), build_weighting("decay", spec), \
                SingleProcessWorld()
            optim = build_optimizers(model, weighting, world, optimizer="adam", lr=1e-3, weight_decay=0.0,
                                     embedding_optimizer=optimizer, embedding_lr=1e-3)
            batches = [batch(spec) for _ in range(4)]
            phases: dict[str, list[float]] = {"forward+loss": [], "backward": [], "world.step": []}
            for index in range(12):
                features, labels, masks = batches[index % 4]
                start = time.perf_counter()
                loss = weighting.combine(masked_task_losses(spec, model(features), labels, masks))
                forward = time.perf_counter()
                zero_grad(optim.optimizers)
                loss.backward()
                backward = time.perf_counter()
                world.step(optim.optimizers, optim.parameters)
                end = time.perf_counter()
                if index >= 2:
                    for name, seconds in zip(phases, (forward - start, backward - forward, end - backward)):
                        phases[name].append(seconds)
            medians = {k: statistics.median(v) * 1e3 for k, v in phases.items()}
            print(f"{optimizer:<16} {rows:>12,} rows  " + "  ".join(f"{k} {v:7.1f} ms" for k, v in medians.items())
                  + f"  total {sum(medians.values()):7.1f} ms  gradient {gradient_payload_bytes(optim.parameters) / 1e6:.2f} MB",
                  flush=True)
            del model, optim


# --- precision: `ple train` fp32 vs bf16 ------------------------------------------------------

def precision_runs(args, work: Path, spec_path: Path, validation: Path, model_params: dict) -> dict:
    """`ple train --precision fp32|bf16`, interleaved over --repeats rounds: end-to-end samples/s per round."""
    runs: dict[str, list[dict]] = {"fp32": [], "bf16": []}
    for round_index in range(args.repeats):
        for precision in runs:
            out = work / f"precision-{round_index}-{precision}"
            run = ple_train(work / "table", validation, spec_path, out, workers=1, launcher="single",
                            batch_size=args.batch_size, steps=args.steps,
                            embedding_optimizer=args.embedding_optimizers[0], model_params=model_params,
                            extra=("--precision", precision, "--calibration", "none"))
            run["out"] = out
            runs[precision].append(run)
            print(f"round {round_index + 1}: {precision}  end to end {run['epoch_samples_per_s']:>8,.0f} samples/s  "
                  f"median step {run['samples_per_s']:>8,.0f} samples/s  ran {run['precision']['resolved']} "
                  f"({run['precision']['reason']})  -- {load()}", flush=True)
    return runs


def precision_auc(spec_path: Path, validation: Path, fp32_out: Path, bf16_out: Path) -> None:
    """Per-task validation AUC of the two models on the same rows: fp32's DeLong 95% interval, the paired one."""
    import pandas as pd

    from ple_model import load_model, model_inputs
    from ple_model.metrics import delong_auc, normal_interval
    from ple_model.prediction import predict

    frame = pd.concat([pd.read_parquet(f) for f in sorted(validation.glob("*.parquet"))], ignore_index=True)
    predictions = {}
    for name, out in (("fp32", fp32_out), ("bf16", bf16_out)):
        loaded = load_model(out / "model.pt")
        inputs = model_inputs(frame, loaded.spec)
        predictions[name], _ = predict(loaded.model, loaded.spec, inputs.features)
    print(f"{'task':<8} {'fp32 AUC [95% DeLong]':>30} {'bf16 AUC':>9} {'bf16 - fp32 [paired 95%]':>30}  inside")
    for task in loaded.spec.tasks:
        if task.type != "binary":
            continue
        in_space = np.asarray(inputs.masks[task.name]) > 0
        label = np.asarray(inputs.labels[task.name])[in_space]
        scores = np.vstack([predictions["fp32"][task.name][in_space], predictions["bf16"][task.name][in_space]])
        aucs, cov = delong_auc(label, scores)
        low, high = normal_interval(aucs[0], cov[0, 0])
        d_low, d_high = normal_interval(aucs[1] - aucs[0], cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
        print(f"{task.name:<8} {aucs[0]:>12.4f} [{low:.4f}, {high:.4f}] {aucs[1]:>9.4f} "
              f"{aucs[1] - aucs[0]:>+12.4f} [{d_low:+.4f}, {d_high:+.4f}]  {'yes' if low <= aucs[1] <= high else 'NO'}")


def _op_category(name: str) -> str:
    """What a profiled aten op belongs to (by its name)."""
    name = name.replace("aten::", "")
    if "embedding" in name or name in ("index_select", "index_add_", "_coalesce",
                                       "_sparse_coo_tensor_with_dims_and_tensors"):
        return "embedding gathers (+ backward)"
    if name in ("mm", "addmm", "bmm", "baddbmm", "matmul", "linear", "_addmm_activation"):
        return "GEMMs"
    if name in ("_to_copy", "to", "copy_"):
        return "autocast casts (bf16 <-> fp32)"
    if "softmax" in name:
        return "gate softmax (+ backward)"
    if name.startswith("_foreach") or "adam" in name:
        return "optimizer kernels"
    return "other (activations, gate mixing, losses, ...)"


def bf16_step_profile(args, model_params: dict, peak_gflops: float) -> None:
    """One in-process step (forward+loss under autocast, backward, optimizers): phase times, op categories
    (torch.profiler self CPU time), and its GEMM FLOP/s against the bf16 GEMM peak."""
    import statistics

    import torch
    from torch.profiler import ProfilerActivity, profile as torch_profile

    from ple_model import ModelSpec, autocast, build_model
    from ple_model.losses import masked_task_losses
    from ple_model.weighting import build_weighting
    from training.optim import build_optimizers, zero_grad
    from training.world import SingleProcessWorld

    spec = ModelSpec.model_validate(make_spec(args.scaling_user_rows))
    torch.manual_seed(0)
    model, weighting, world = build_model("ple", spec, **model_params), build_weighting("decay", spec), \
        SingleProcessWorld()
    optim = build_optimizers(model, weighting, world, optimizer="adam", lr=1e-3, weight_decay=0.0,
                             embedding_optimizer=args.embedding_optimizers[0], embedding_lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    batches = [random_batch(spec, args.batch_size, generator) for _ in range(4)]
    phases: dict[str, list[float]] = {"forward+loss": [], "backward": [], "optimizers": []}

    def step(index: int) -> tuple[float, float, float]:
        features, labels, masks = batches[index % 4]
        start = time.perf_counter()
        with autocast("bf16"):
            outputs = model(features)
        loss = weighting.combine(masked_task_losses(spec, outputs, labels, masks))
        forward = time.perf_counter()
        zero_grad(optim.optimizers)
        loss.backward()
        backward = time.perf_counter()
        world.step(optim.optimizers, optim.parameters)
        return forward - start, backward - forward, time.perf_counter() - backward

    for index in range(3 + args.profile_steps):
        times = step(index)
        if index >= 3:
            for name, seconds in zip(phases, times):
                phases[name].append(seconds)
    medians = {k: statistics.median(v) for k, v in phases.items()}
    total = sum(medians.values())
    with torch_profile(activities=[ProfilerActivity.CPU], with_flops=True) as profiler:
        for index in range(5):
            step(index)
    events = profiler.key_averages()
    flops_per_step = sum(e.flops for e in events) / 5
    by_category: dict[str, float] = {}
    for event in events:
        if event.key.startswith("aten::"):
            category = _op_category(event.key)
            by_category[category] = by_category.get(category, 0.0) + event.self_cpu_time_total
    profiled = sum(by_category.values())
    print(f"bf16 step in this process (batch {args.batch_size}, {torch.get_num_threads()} threads, median of "
          f"{args.profile_steps}): {total * 1e3:.1f} ms = " + ", ".join(f"{k} {v * 1e3:.1f} ms ({v / total:.0%})"
                                                                     for k, v in medians.items()))
    print("  ops by self CPU time (torch.profiler, 5 steps; the profiler inflates small ops): " + ", ".join(
        f"{k} {v / profiled:.0%}" for k, v in sorted(by_category.items(), key=lambda kv: -kv[1])))
    achieved = flops_per_step / total / 1e9
    print(f"  GEMM work {flops_per_step / 1e9:.2f} GFLOP per step (profiler count) / {total * 1e3:.1f} ms = "
          f"{achieved:.0f} GFLOP/s = {achieved / peak_gflops:.1%} of the bf16 GEMM peak {peak_gflops:.0f} GFLOP/s "
          "(measured above, bench/model_throughput.py's gemm_peaks)")


def precision(args, work: Path, model_params: dict) -> None:
    """`ple train` fp32 vs bf16 end to end, the CPU's flags and the path that ran, AUCs, the bf16 step's profile."""
    import statistics

    import torch
    import yaml

    from model_throughput import GEMM_SHAPES, gemm_peaks
    from training.precision import cpu_flags, resolve_precision

    flags = sorted(f for f in cpu_flags() if f.startswith(("amx", "avx512_bf16", "avx512f")))
    auto = resolve_precision("auto", torch.device("cpu"))
    print(f"\n== precision: `ple train` fp32 vs bf16 (1 worker, batch {args.batch_size}, {args.steps} steps, "
          f"{args.repeats} interleaved rounds) -- CPU flags: {' '.join(flags) or 'no AMX/AVX-512'}; "
          f"--precision auto here -> {auto.resolved} ({auto.reason}) -- {load()}")
    spec_path = work / "spec-precision.yaml"
    spec_path.write_text(yaml.safe_dump(make_spec(args.scaling_user_rows)))
    validation = work / "validation-precision"
    write_table(validation, args.precision_validation_rows, 25_000, 1, user_rows=args.scaling_user_rows, seed=3)
    runs = precision_runs(args, work, spec_path, validation, model_params)
    rates = {p: statistics.median(r["epoch_samples_per_s"] for r in v) for p, v in runs.items()}
    steps = {p: statistics.median(r["samples_per_s"] for r in v) for p, v in runs.items()}
    print(f"{'':<6} {'end to end samples/s (median)':>30} {'median step samples/s':>22}")
    for name in runs:
        print(f"{name:<6} {rates[name]:>30,.0f} {steps[name]:>22,.0f}")
    print(f"bf16 / fp32: end to end {rates['bf16'] / rates['fp32']:.2f}x, median step "
          f"{steps['bf16'] / steps['fp32']:.2f}x (target >= 1.6x end to end)")
    print(f"\nvalidation AUC, {args.precision_validation_rows:,} rows, the last round's two models:")
    precision_auc(spec_path, validation, runs["fp32"][-1]["out"], runs["bf16"][-1]["out"])
    from ple_runtime.snapshot import resolve_parquet_snapshot

    spec = __import__("ple_model").ModelSpec.model_validate(make_spec(args.scaling_user_rows))
    loader = loader_rate(resolve_parquet_snapshot(str(work / "table")).urls, spec, args.batch_size,
                         args.shuffle_buffer, args.reader_workers)
    print(f"\nloader alone (petastorm -> tensors): {loader:,.0f} rows/s = {rates['bf16'] / loader:.0%} of the bf16 "
          "run's wall time per row (it runs in a reader thread beside the step)")
    gemm = gemm_peaks()
    peak = max(gemm[(m, k, n, torch.bfloat16)] for m, k, n in GEMM_SHAPES)
    print(f"GEMM peak here (best of {len(GEMM_SHAPES)} shapes): bf16 {peak:.0f} GFLOP/s, fp32 "
          f"{max(gemm[(m, k, n, torch.float32)] for m, k, n in GEMM_SHAPES):.0f} GFLOP/s -- {load()}")
    bf16_step_profile(args, model_params, peak)
    print(f"-- {load()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", nargs="+", default=["loader", "profile", "scaling", "embeddings"],
                        choices=["loader", "profile", "scaling", "embeddings", "precision"])
    parser.add_argument("--profile-threads", type=int, default=1)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--row-group-rows", type=int, default=25_000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--shuffle-buffer", type=int, default=20_000)
    parser.add_argument("--reader-workers", type=int, default=1)
    parser.add_argument("--steps", type=int, default=60, help="training steps per measured run")
    parser.add_argument("--launchers", nargs="+", default=["horovodrun", "torch"], choices=["horovodrun", "torch"])
    parser.add_argument("--embedding-optimizers", nargs="+", default=["dense", "rowwise_adagrad", "sparse_adam"],
                        choices=["dense", "rowwise_adagrad", "sparse_adam"])
    parser.add_argument("--scaling-user-rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds of the scaling section")
    parser.add_argument("--embedding-rows", type=int, nargs="+", default=[10_000, 1_000_000, 10_000_000])
    parser.add_argument("--precision-validation-rows", type=int, default=50_000,
                        help="validation rows of the precision section (its AUC intervals)")
    parser.add_argument("--profile-steps", type=int, default=10, help="timed steps of the bf16 step profile")
    args = parser.parse_args()

    import torch

    from ple_model import ModelSpec

    # Paper shapes: single-layer experts, towers [256, 128, 64]; 2 levels, 1 specific + 1 shared expert per task.
    model_params = {"num_levels": 2}
    print(f"torch {torch.__version__}, {os.cpu_count()} cpus, torch threads {torch.get_num_threads()}; {load()}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_table(work / "table", args.rows, args.row_group_rows, args.files, user_rows=args.scaling_user_rows)
        write_table(work / "validation", 8192, 8192, 1, user_rows=args.scaling_user_rows, seed=2)
        if "loader" in args.sections:
            from ple_runtime.snapshot import resolve_parquet_snapshot

            spec = ModelSpec.model_validate(make_spec(args.scaling_user_rows))
            urls = resolve_parquet_snapshot(str(work / "table")).urls
            print(f"\n== loader vs step: {args.rows} rows, {args.files} files, row groups of {args.row_group_rows}; "
                  f"batch {args.batch_size} -- {load()}")
            loader = loader_rate(urls, spec, args.batch_size, args.shuffle_buffer, args.reader_workers)
            print(f"loader (petastorm -> tensors, reader_workers={args.reader_workers}): {loader:,.0f} rows/s")
            step = train_step_rate(urls, spec, args.batch_size, args.steps, model_params)
            print(f"PLE training step (data in memory, anchor):    {step:,.0f} samples/s")
            print(f"loader / training ratio: {loader / step:.1f}x (needs >= 2x)")
        if "profile" in args.sections:
            profile(args, model_params)
        if "scaling" in args.sections:
            scaling(args, work, model_params)
        if "embeddings" in args.sections:
            embeddings(args, work, model_params)
        if "precision" in args.sections:
            precision(args, work, model_params)


if __name__ == "__main__":
    main()
