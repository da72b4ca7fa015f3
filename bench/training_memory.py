"""Training's peak memory against the training day's size: `ple train` (PLE, 1 epoch) on 1x, 5x, ... copies of a day.

    .venv/bin/python bench/scale.py --impressions 200000 --keep /tmp/scale02     # a lake (extract's row groups)
    .venv/bin/python bench/training_memory.py --data /tmp/scale02/impressions-200000 --copies 1 5

A day `c` times as large is a Parquet table (`dt=` folders) whose training day (scale.py's day 1) and
validation day (day 2) hold `c` hard links of each of that day's extracted files (`--fixed-validation`: the
validation day once, as before 2026-12-07, which left validation and calibration out of the growth): the same
row groups as extract wrote them, `c` times as many rows, the same model and vocabulary (the lake's). Each size is
trained as the user runs it (a `ple` subprocess), and the peak proportional set size of its process tree
sampled every 0.2 s, or the largest process's exact peak resident set if larger (bench/scale.py's `run_stage`). Prints per size: rows, row groups, the shuffling
buffer, seconds, samples/s, peak memory, and the embedding tables' bytes with their optimizer state
(part of the peak, the same at every size), and the growth against the first size.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import DAYS, REPO, StageFailed, _embedding_bytes, _table_state_bytes, run_stage  # noqa: E402


def copied_days(data: Path, copies: int, root: Path, validation_copies: int) -> Path:
    sys.path.insert(0, str(REPO))
    from ple_runtime.snapshot import resolve_date_snapshot

    table = root / f"examples-x{copies}"
    shutil.rmtree(table, ignore_errors=True)
    for day, count in ((DAYS[0], copies), (DAYS[1], validation_copies)):
        folder = table / f"dt={day}"
        folder.mkdir(parents=True)
        for copy in range(count):
            for index, path in enumerate(resolve_date_snapshot(str(data / "lake" / "examples"), day).files):
                os.link(path, folder / f"part-{copy:03d}-{index:03d}.parquet")
    return table


def train(data: Path, table: Path, out: Path, log: Path, extra: list[str]) -> dict:
    seconds, peak = run_stage(["train", "--table", str(table), "--train-start", DAYS[0], "--train-end", DAYS[0],
                               "--validation-date", DAYS[1], "--vocabulary-table", str(data / "lake" / "vocabulary"),
                               "--spec", str(REPO / "conf" / "video_spec.yaml"), "--model", "ple", "--epochs", "1",
                               "--out", str(out), "--no-progress", *extra], log)
    record = json.loads((out / "run_record.json").read_text())
    tables = _embedding_bytes(out / "model.pt")
    embeddings = record["embeddings"]
    # A plain Parquet table (the copies) has no row count in a Delta log: the plan's shards say it.
    rows = record["train_snapshot"]["num_records"] or sum(record["rows_per_shard"])
    return {"rows": rows, "row_groups": record["train_row_groups"], "steps": record["steps_per_epoch"],
            "rss_gb": (record.get("peak_rss_bytes_rank0") or 0) / 1e9,
            "buffer": record["shuffle_buffer_rank0"], "seconds": seconds, "peak_gb": peak / 1e9,
            "tables_mb": tables / 1e6,
            "state_mb": _table_state_bytes(embeddings["optimizer"], tables, embeddings["rows"]) / 1e6,
            "optimizer": embeddings["optimizer"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a size folder of `bench/scale.py --keep`")
    parser.add_argument("--copies", type=int, nargs="+", default=[1, 5], help="training day sizes, in copies")
    parser.add_argument("--set", action="append", default=[],
                        help="train settings, e.g. max_steps_per_epoch=250 (the shuffling buffer fills before the "
                             "first step, so a capped epoch reaches the same peak, sooner)")
    parser.add_argument("--fixed-validation", action="store_true",
                        help="the validation day once at every size (only the training day grows)")
    args = parser.parse_args()
    extra = [item for setting in args.set for item in ("--set", setting)]
    root = Path(tempfile.mkdtemp(prefix="ple-training-memory-"))
    print(f"machine: {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB; load average before: "
          + " ".join(f"{x:.1f}" for x in os.getloadavg()), flush=True)
    results = {}
    try:
        for copies in args.copies:
            table = copied_days(args.data, copies, root, 1 if args.fixed_validation else copies)
            try:
                found = train(args.data, table, root / f"run-x{copies}", root / f"train-x{copies}.log", extra)
            except StageFailed as failure:
                print(f"x{copies}: {failure}", flush=True)
                break
            results[copies] = found
            print(f"x{copies}: {found['rows']:>10,} rows in {found['row_groups']} row groups, shuffle buffer "
                  f"{found['buffer']:,} rows; {found['seconds']:6.1f} s {found['rows'] / found['seconds']:>7,.0f} "
                  f"samples/s ({found['steps']} steps)  peak {found['peak_gb']:5.2f} GB (the trainer's own max RSS "
                  f"{found['rss_gb']:.2f} GB), of which embedding tables {found['tables_mb']:.1f} MB "
                  f"+ {found['optimizer']} state and gradient {found['state_mb']:.1f} MB", flush=True)
            shutil.rmtree(table)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print("load average after: " + " ".join(f"{x:.1f}" for x in os.getloadavg()))
    anchor = results.get(args.copies[0])
    for copies in args.copies[1:]:
        if anchor and copies in results:
            found = results[copies]
            fixed = (anchor["tables_mb"] + anchor["state_mb"]) / 1e3
            print(f"x{copies} the rows -> time x{found['seconds'] / anchor['seconds']:.2f}, memory "
                  f"x{found['peak_gb'] / anchor['peak_gb']:.2f}; without the tables and their state "
                  f"x{(found['peak_gb'] - fixed) / (anchor['peak_gb'] - fixed):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
