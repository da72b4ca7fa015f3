"""Loader vs training throughput for PLE on CPU (or GPU when present).

    .venv/bin/python bench/training_throughput.py                 # defaults below
    .venv/bin/python bench/training_throughput.py --rows 400000 --row-group-rows 50000 --batch-size 2048

Prints three figures:
1. loader: rows/s through Petastorm (make_batch_reader + TransformSpec + BatchedDataLoader
   with the shuffling buffer) into torch tensors, one shard, nothing else running;
2. training step: samples/s of forward + Eq. 9 loss + backward + Adam for PLE on batches
   already in memory (the loader taken out);
3. end to end: `ple train` with --workers 1 and --workers 2 (horovodrun, Gloo), samples/s
   from the run record (steps x batch x workers / epoch seconds).
The loader must be >= 2x the training-step rate, or training waits on data.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

SPEC = {
    "features": [
        {"name": "user_idx", "type": "categorical", "vocab_size": 100000, "embedding_dim": 16},
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


def write_table(path: Path, rows: int, row_group_rows: int, files: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    path.mkdir(parents=True, exist_ok=True)
    per_file = rows // files
    for index in range(files):
        n = per_file
        play = rng.random(n) < 0.4
        columns = {
            "user_idx": rng.integers(0, 100000, n), "item_idx": rng.integers(0, 50000, n),
            "hour": rng.integers(0, 24, n),
            **{f"num_{i}": rng.normal(0, 1, n).astype(np.float32) for i in range(8)},
            "tag_idx": pa.array(list(rng.integers(0, 500, (n, 5))), type=pa.list_(pa.int64())),
            "play": play.astype(np.int32),
            "watch_ratio": pa.array(np.where(play, rng.random(n), np.nan), mask=~play),
            "share": (rng.random(n) < 0.02).astype(np.int32), "comment": (rng.random(n) < 0.01).astype(np.int32),
        }
        pq.write_table(pa.table(columns), path / f"part-{index:04d}.parquet", row_group_size=row_group_rows)


def loader_rate(urls, spec, batch_size: int, shuffle_buffer: int, reader_workers: int) -> float:
    from training.data import DeterministicBatches, shard_layout, split_batch

    layout = shard_layout(urls, 1)
    source = DeterministicBatches(urls, spec, rank=0, layout=layout, batch_size=batch_size, seed=1, shuffle=True,
                                  shuffle_buffer=shuffle_buffer, reader_workers=reader_workers)
    start, rows = time.perf_counter(), 0
    for batch in source.batches():
        features, labels, masks = split_batch(batch, spec)
        rows += len(labels["play"])
    return rows / (time.perf_counter() - start)


def train_step_rate(urls, spec, batch_size: int, steps: int, model_params: dict) -> float:
    import torch

    from ple_model import build_model
    from ple_model.losses import masked_task_losses
    from ple_model.weighting import build_weighting
    from training.data import DeterministicBatches, shard_layout, split_batch

    layout = shard_layout(urls, 1)
    source = DeterministicBatches(urls, spec, rank=0, layout=layout, batch_size=batch_size, seed=1, shuffle=False)
    batches = [split_batch(b, spec) for b in source.batches(limit=min(steps, 20))]
    model = build_model("ple", spec, **model_params)
    weighting = build_weighting("decay", spec)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for features, labels, masks in batches[:3]:  # warm-up
        loss = weighting.combine(masked_task_losses(spec, model(features), labels, masks))
        optimizer.zero_grad(); loss.backward(); optimizer.step()  # noqa: E702
    start = time.perf_counter()
    for step in range(steps):
        features, labels, masks = batches[step % len(batches)]
        loss = weighting.combine(masked_task_losses(spec, model(features), labels, masks))
        optimizer.zero_grad(); loss.backward(); optimizer.step()  # noqa: E702
    return steps * batch_size / (time.perf_counter() - start)


def end_to_end_rate(table: Path, spec_path: Path, workers: int, batch_size: int, steps: int, out: Path,
                    model_params: dict) -> float:
    command = [sys.executable, "-m", "jobs.train", "--train-path", str(table), "--validation-path", str(table),
               "--spec", str(spec_path), "--out", str(out), "--workers", str(workers), "--epochs", "1",
               "--batch-size", str(batch_size), "--max-steps-per-epoch", str(steps), "--no-progress",
               "--validation-batch-size", "16384"]
    for key, value in model_params.items():
        command += ["--set", f"model_params.{key}={json.dumps(value)}"]
    subprocess.run(command, cwd=REPO_ROOT, check=True, capture_output=True)
    record = json.loads((out / "run_record.json").read_text())
    return record["epochs"][0]["train_samples_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--row-group-rows", type=int, default=25_000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--shuffle-buffer", type=int, default=20_000)
    parser.add_argument("--reader-workers", type=int, default=1)
    parser.add_argument("--train-steps", type=int, default=60)
    parser.add_argument("--skip-end-to-end", action="store_true")
    args = parser.parse_args()

    import torch
    import yaml

    from ple_model import ModelSpec

    # Paper shapes: single-layer experts, towers [256, 128, 64]; 2 levels, 1 specific + 1 shared expert per task.
    model_params = {"num_levels": 2}
    spec = ModelSpec.model_validate(SPEC)
    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / "table"
        write_table(table, args.rows, args.row_group_rows, args.files)
        spec_path = Path(tmp) / "spec.yaml"
        spec_path.write_text(yaml.safe_dump(SPEC))
        from training.snapshot import resolve_parquet_snapshot

        urls = resolve_parquet_snapshot(str(table)).urls
        print(f"table: {args.rows} rows, {args.files} files, row groups of {args.row_group_rows}; "
              f"batch {args.batch_size}; torch threads {torch.get_num_threads()}")
        loader = loader_rate(urls, spec, args.batch_size, args.shuffle_buffer, args.reader_workers)
        print(f"loader (petastorm -> tensors, reader_workers={args.reader_workers}): {loader:,.0f} rows/s")
        step = train_step_rate(urls, spec, args.batch_size, args.train_steps, model_params)
        print(f"PLE training step (data in memory):            {step:,.0f} samples/s")
        print(f"loader / training ratio: {loader / step:.1f}x (needs >= 2x)")
        if not args.skip_end_to_end:
            for workers in (1, 2):
                rate = end_to_end_rate(table, spec_path, workers, args.batch_size, args.train_steps,
                                       Path(tmp) / f"run{workers}", model_params)
                print(f"ple train --workers {workers}: {rate:,.0f} samples/s (all workers together)")


if __name__ == "__main__":
    main()
