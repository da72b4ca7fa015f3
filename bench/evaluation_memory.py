"""Evaluation's peak memory against the test day's size: `ple evaluate` on 1x, 2x, ... copies of one day.

    .venv/bin/python bench/scale.py --impressions 1000000 --keep /tmp/scale1m     # a lake and a trained run
    .venv/bin/python bench/evaluation_memory.py --data /tmp/scale1m/impressions-1000000 --copies 1 4
    # the code before streaming, on the same day, as the anchor measured in the same run:
    .venv/bin/python bench/evaluation_memory.py --data ... --copies 1 4 --baseline-code /path/to/old/checkout

The day (scale.py's day 3, `2026-01-03`) is read from the Delta table at `--data`; a day `c` times as
large is a plain Parquet table whose `dt=` folder holds `c` hard links of each of that day's files
(no extra disk; user ids repeat, so users have `c` times the rows). Each size is evaluated as the user
runs it (a `ple` subprocess, one model, intervals included, no published model), and the peak
proportional set size of its process tree sampled every 0.2 s (bench/scale.py's `run_stage`).
Prints per size: rows, seconds, rows/s, peak memory, the compact arrays kept (bytes and bytes a row,
from metrics.json's `scoring`), and the growth against the first size; `--baseline-code` then runs
the sizes of `--baseline-copies` with another checkout's code first on PYTHONPATH (the in-memory path),
in the same run.
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
from scale import DAYS, StageFailed, run_stage  # noqa: E402

DAY = DAYS[2]


def copied_day(data: Path, copies: int, root: Path) -> Path:
    """A Parquet table whose partition `dt=DAY` is `copies` hard links of each of the day's Delta files."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from ple_runtime.snapshot import resolve_date_snapshot

    files = resolve_date_snapshot(str(data / "lake" / "examples"), DAY).files
    table = root / f"examples-x{copies}"
    folder = table / f"dt={DAY}"
    shutil.rmtree(table, ignore_errors=True)
    folder.mkdir(parents=True)
    for copy in range(copies):
        for index, path in enumerate(files):
            os.link(path, folder / f"part-{copy:03d}-{index:03d}.parquet")
    return table


def evaluate(data: Path, table: Path, out: Path, log: Path, code: str | None, extra: list[str]) -> dict:
    environment = dict(os.environ, PYTHONPATH=code) if code else None
    args = ["evaluate", "--model", str(data / "runs" / "ple"), "--table", str(table), "--data-dir", str(data),
            "--date", DAY, "--no-with-production", "--out", str(out), *extra]
    seconds, peak = run_stage(args, log, env=environment)
    record = json.loads((out / "metrics.json").read_text())
    rows = record["snapshot"]["rows"]
    scoring = record.get("scoring") or {}
    return {"rows": rows, "seconds": seconds, "peak_gb": peak / 1e9, "compact_bytes": scoring.get("compact_bytes"),
            "per_row": scoring.get("compact_bytes_per_row"), "spilled": scoring.get("spilled"),
            "auc": record["model"]["tasks"]["play"]["auc"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a size folder of `bench/scale.py --keep`")
    parser.add_argument("--copies", type=int, nargs="+", default=[1, 4], help="day sizes, in copies of the day")
    parser.add_argument("--baseline-code", help="another checkout (PYTHONPATH) to measure first")
    parser.add_argument("--baseline-copies", type=int, nargs="+", help="its sizes (default: --copies)")
    parser.add_argument("--set", action="append", default=[], help="evaluate settings, e.g. memory_budget_mb=64; "
                                                                   "uncertainty.* ones apply to the baseline too")
    args = parser.parse_args()
    extra = [item for setting in args.set for item in ("--set", setting)]
    args.baseline_set = [item for setting in args.set if setting.startswith("uncertainty.")
                         for item in ("--set", setting)]
    root = Path(tempfile.mkdtemp(prefix="ple-evaluation-memory-"))
    print(f"machine: {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB; load average before: "
          + " ".join(f"{x:.1f}" for x in os.getloadavg()), flush=True)
    results: dict[tuple[str, int], dict] = {}
    try:
        for label, code in [("streaming", None)] + ([("baseline", args.baseline_code)] if args.baseline_code else []):
            for copies in (args.baseline_copies or args.copies) if label == "baseline" else args.copies:
                table = copied_day(args.data, copies, root)
                try:
                    found = evaluate(args.data, table, root / f"{label}-x{copies}", root / f"{label}-x{copies}.log",
                                     code, extra if label == "streaming" else args.baseline_set)
                except StageFailed as failure:
                    print(f"{label:<9} x{copies}: {failure}", flush=True)
                    break
                results[(label, copies)] = found
                compact = (f"kept {found['compact_bytes'] / 1e9:.3f} GB ({found['per_row']} B a row"
                           f"{', spilled' if found['spilled'] else ''})" if found["compact_bytes"] else "")
                print(f"{label:<9} x{copies}: {found['rows']:>11,} rows {found['seconds']:7.1f} s "
                      f"{found['rows'] / found['seconds']:>8,.0f} rows/s  peak {found['peak_gb']:5.2f} GB  {compact}  "
                      f"play AUC {found['auc']:.4f}", flush=True)
                shutil.rmtree(table)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print("load average after: " + " ".join(f"{x:.1f}" for x in os.getloadavg()))
    for label in ("baseline", "streaming"):
        sizes = (args.baseline_copies or args.copies) if label == "baseline" else args.copies
        anchor = results.get((label, sizes[0]))
        for copies in sizes[1:]:
            if anchor and (label, copies) in results:
                found = results[(label, copies)]
                print(f"{label}: x{copies} the rows -> time x{found['seconds'] / anchor['seconds']:.2f}, "
                      f"memory x{found['peak_gb'] / anchor['peak_gb']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
