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

`--replicate N ...` measures sizes too large to score here in the time (the model scores ~5k rows/s on
this 2-core box): the pass reads the day once and keeps its compact arrays N times over, as a pass over N
copies would (bench/replicated_evaluate.py); all that follows the pass is the product's code. The streamed
sizes also print the process's exact peak resident set (getrusage), the resident set after the pass,
and the peak's growth past the first size against the kept arrays' growth.

    .venv/bin/python bench/evaluation_memory.py --data /tmp/evalmem/data --day 2026-01-12 --copies 1 10 \
        --replicate 10 101 203 --set uncertainty.resamples=200

`--stage publish` measures `ple publish` instead (the gate's pass, the exports, the registration into a
fresh registry per size under the run's temporary folder; the lake's vocabulary; the TorchScript-based ONNX
exporter): the same day sizes, the same figures (the compact arrays from the publish record's `scoring`).

    .venv/bin/python bench/evaluation_memory.py --stage publish --data /tmp/scale02/impressions-200000 \
        --copies 1 4 --baseline-code /work/main --baseline-copies 1 4
"""

from __future__ import annotations

import argparse
import hashlib
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


def copied_day(data: Path, copies: int, root: Path, day: str = DAY) -> Path:
    """A Parquet table whose partition `dt=DAY` is `copies` hard links of each of the day's Delta files."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from ple_runtime.snapshot import resolve_date_snapshot

    files = resolve_date_snapshot(str(data / "lake" / "examples"), day).files
    table = root / f"examples-x{copies}"
    folder = table / f"dt={day}"
    shutil.rmtree(table, ignore_errors=True)
    folder.mkdir(parents=True)
    for copy in range(copies):
        for index, path in enumerate(files):
            os.link(path, folder / f"part-{copy:03d}-{index:03d}.parquet")
    return table


def evaluate(data: Path, table: Path, out: Path, log: Path, code: str | None, extra: list[str], day: str,
             replicate: int | None = None) -> dict:
    """One `ple evaluate` (the baseline's `code` first on PYTHONPATH), or, streaming, the same through
    bench/replicated_evaluate.py (`replicate` copies of the kept arrays; 1 = the plain run)."""
    environment = dict(os.environ, PYTHONPATH=code) if code else dict(os.environ)
    figures_path = out.parent / f"{out.name}.figures.json"
    program = None
    if code is None:
        environment.update(PLE_BENCH_REPLICATE=str(replicate or 1), PLE_BENCH_RECORD=str(figures_path))
        program = [sys.executable, str(Path(__file__).resolve().parent / "replicated_evaluate.py")]
    args = ["evaluate", "--model", str(data / "runs" / "ple"), "--table", str(table), "--data-dir", str(data),
            "--date", day, "--no-with-production", "--out", str(out), *extra]
    seconds, peak = run_stage(args, log, env=environment, program=program)
    record = json.loads((out / "metrics.json").read_text())
    figures = json.loads(figures_path.read_text()) if figures_path.exists() else {}
    scoring = record.get("scoring") or {}
    return {"rows": record["model"]["rows"] or record["snapshot"]["rows"], "seconds": seconds, "peak_gb": peak / 1e9,
            "compact_bytes": scoring.get("compact_bytes"), "per_row": scoring.get("compact_bytes_per_row"),
            "spilled": scoring.get("spilled"), "auc": record["model"]["tasks"]["play"]["auc"],
            "max_rss_gb": figures.get("peak_rss_bytes", 0) / 1e9, "after_pass_gb": figures.get("rss_after_pass_bytes", 0) / 1e9}


def publish(data: Path, table: Path, out: Path, log: Path, code: str | None, extra: list[str], day: str) -> dict:
    """One `ple publish` of the lake's run into a fresh registry (the baseline's `code` first on PYTHONPATH)."""
    environment = dict(os.environ, PYTHONPATH=code) if code else dict(os.environ)
    args = ["publish", "--model", str(data / "runs" / "ple"), "--table", str(table), "--date", day,
            "--data-dir", str(out / "registry"), "--vocabulary-table", str(data / "lake" / "vocabulary"),
            "--onnx-exporter", "torchscript", "--out", str(out), *extra]
    seconds, peak = run_stage(args, log, env=environment)
    (path,) = out.glob("publish-*.json")
    record = json.loads(path.read_text())
    scoring = record.get("scoring") or {}
    return {"rows": record["snapshot"]["rows"], "seconds": seconds, "peak_gb": peak / 1e9,
            "compact_bytes": scoring.get("compact_bytes"), "per_row": scoring.get("compact_bytes_per_row"),
            "spilled": scoring.get("spilled"), "auc": record["candidate_metrics"]["play"]["auc"],
            "max_rss_gb": 0, "after_pass_gb": 0, "digest": hashlib.sha256(json.dumps(
                [record[k] for k in ("candidate_metrics", "gate_evidence", "gate")], sort_keys=True).encode()
            ).hexdigest()[:12]}


def _print(label: str, size: str, found: dict) -> None:
    compact = (f"kept {found['compact_bytes'] / 1e9:.3f} GB ({found['per_row']} B a row"
               f"{', spilled' if found['spilled'] else ''})" if found["compact_bytes"] else "")
    exact = (f"  max RSS {found['max_rss_gb']:5.2f} GB (after the pass {found['after_pass_gb']:4.2f})"
             if found["max_rss_gb"] else "")
    print(f"{label:<9} {size:>5}: {found['rows']:>11,} rows {found['seconds']:7.1f} s "
          f"{found['rows'] / found['seconds']:>8,.0f} rows/s  peak {found['peak_gb']:5.2f} GB{exact}  {compact}  "
          f"play AUC {found['auc']:.4f}" + (f"  gate figures sha256 {found['digest']}" if "digest" in found else ""),
          flush=True)


def _growth(results: dict[tuple[str, str], dict]) -> None:
    """Per kind of run: each size against the first, and the bar: peak <= 1.3 x (first peak + added arrays)."""
    for label in ("baseline", "streaming", "replicated"):
        sizes = [size for (kind, size) in results if kind == label]
        if len(sizes) < 2:
            continue
        anchor = results[(label, sizes[0])]
        for size in sizes[1:]:
            found = results[(label, size)]
            line = (f"{label}: {size} ({found['rows'] / anchor['rows']:.1f}x the rows) -> time "
                    f"x{found['seconds'] / anchor['seconds']:.2f}, memory x{found['peak_gb'] / anchor['peak_gb']:.2f}")
            if found["max_rss_gb"] and found["compact_bytes"]:
                added = (found["compact_bytes"] - anchor["compact_bytes"]) / 1e9
                bar = 1.3 * (anchor["max_rss_gb"] + added)
                line += (f"; max RSS {found['max_rss_gb']:.2f} GB against 1.3 x ({anchor['max_rss_gb']:.2f} + "
                         f"{added:.2f} kept arrays added) = {bar:.2f} GB: {'met' if found['max_rss_gb'] <= bar else 'NOT met'}"
                         f"; {(found['max_rss_gb'] - anchor['max_rss_gb']) * 1e9 / (found['rows'] - anchor['rows']):.0f}"
                         " B a row added")
            print(line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a folder with lake/examples and runs/ple "
                                                                 "(a size folder of `bench/scale.py --keep`)")
    parser.add_argument("--day", default=DAY, help="the test day (a partition of lake/examples)")
    parser.add_argument("--stage", choices=["evaluate", "publish"], default="evaluate",
                        help="the job measured (publish: gate, exports, registration; no --replicate)")
    parser.add_argument("--copies", type=int, nargs="*", default=[1, 4], help="day sizes, in copies of the day")
    parser.add_argument("--replicate", type=int, nargs="*", default=[],
                        help="day sizes, in copies of the day's kept arrays (bench/replicated_evaluate.py)")
    parser.add_argument("--baseline-code", help="another checkout (PYTHONPATH) to measure first")
    parser.add_argument("--baseline-copies", type=int, nargs="+", help="its sizes (default: --copies)")
    parser.add_argument("--set", action="append", default=[], help="evaluate settings, e.g. memory_budget_mb=64; "
                                                                   "uncertainty.* ones apply to the baseline too")
    args = parser.parse_args()
    if args.stage == "publish" and args.replicate:
        parser.error("--replicate measures `ple evaluate` only")
    extra = [item for setting in args.set for item in ("--set", setting)]
    baseline_set = [item for setting in args.set if setting.startswith("uncertainty.") for item in ("--set", setting)]
    root = Path(tempfile.mkdtemp(prefix="ple-evaluation-memory-"))
    print(f"machine: {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB; load average before: "
          + " ".join(f"{x:.1f}" for x in os.getloadavg()), flush=True)
    runs = [("streaming", f"x{c}", c, None) for c in args.copies]
    runs += [("replicated", f"r{c}", 1, c) for c in args.replicate]
    if args.baseline_code:
        runs = [("baseline", f"x{c}", c, None) for c in (args.baseline_copies or args.copies)] + runs
    results: dict[tuple[str, str], dict] = {}
    try:
        for label, size, copies, replicate in runs:
            if any(kind == label and found is None for (kind, _), found in results.items()):
                continue  # a smaller size of this kind failed
            table = copied_day(args.data, copies, root, args.day)
            name = f"{label}-{size}"
            code = args.baseline_code if label == "baseline" else None
            settings = baseline_set if label == "baseline" else extra
            try:
                if args.stage == "publish":
                    results[(label, size)] = publish(args.data, table, root / name, root / f"{name}.log", code,
                                                     settings, args.day)
                else:
                    results[(label, size)] = evaluate(args.data, table, root / name, root / f"{name}.log", code,
                                                      settings, args.day, replicate)
                _print(label, size, results[(label, size)])
            except StageFailed as failure:
                print(f"{label:<9} {size:>5}: {failure}", flush=True)
                results[(label, size)] = None
            shutil.rmtree(table)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print("load average after: " + " ".join(f"{x:.1f}" for x in os.getloadavg()))
    _growth({key: found for key, found in results.items() if found is not None})
    return 0


if __name__ == "__main__":
    sys.exit(main())
