"""Events per second of `ple extract` next to a DuckDB lower bound on the same files.

    .venv/bin/python bench/etl_throughput.py                        # one day of ~5M events, local[2]
    .venv/bin/python bench/etl_throughput.py --events 1000000 --keep /tmp/etl_bench
    .venv/bin/python bench/etl_throughput.py --demo                 # the demo's 8 days, one `--start/--end` run

One day: generates it (gzip level 1, 2 files, fault rate 0.05%) into a scratch data dir,
runs the DuckDB core work (bench/etl_duckdb.py: parse, validate, dedup, 6 h attribution
join, labels, item/user dims; 2 threads) and then `ple extract` of the day (empty lake,
no neighbours: the first-day case) in this process on the project's SparkSession
(local[2] unless PLE_SPARK_MASTER says otherwise; the JVM is started before the clock).
Prints both times, the ratio (the figure that survives a loaded machine), the load average
before and after, and whether both engines agree on the counts. `--demo`: `ple generate`
defaults (2000 users, 500 items, 20k impressions a day, 8 days), then one
`ple extract --start --end` over the 8 days (jobs and seconds per day on stderr).
docs/DATA.md records the measured figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

EVENTS_PER_IMPRESSION = 1.38  # measured on the default world (impressions + plays + shares + comments)
COMPARED = ("lines_read", "accepted", "quarantined", "duplicates", "examples")


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def _extract(data: Path, args, **days) -> tuple[float, list[dict]]:
    from extraction.extract import ExtractConfig, run
    from ple_runtime.spark import get_spark

    conf = dict(kv.split("=", 1) for kv in args.conf)
    if args.driver_memory:
        conf["spark.driver.memory"] = args.driver_memory
    spark = get_spark("ple-bench", conf)
    spark.range(1).count()  # JVM start is not part of the figure
    started = time.perf_counter()
    figures = run(ExtractConfig(data_dir=str(data), **days), spark)
    return time.perf_counter() - started, figures


def one_day(args, data: Path) -> dict:
    from datagen.events import FaultRates, GeneratorSettings, generate
    from etl_duckdb import core_extract

    day = dt.date(2026, 1, 5)
    settings = GeneratorSettings(
        users=args.users, items=args.items, days=1, start_date=day,
        impressions_per_day=int(args.events / EVENTS_PER_IMPRESSION), gzip=not args.no_gzip,
        faults=FaultRates.uniform(0.0005),
    )
    results: dict = {"cpu_count": os.cpu_count() or 0, "load_before": _load()}
    started = time.perf_counter()
    manifest = generate(settings, data / "raw", overwrite=True)
    seconds = time.perf_counter() - started
    lines = manifest["totals"]["lines"]
    size = sum(p.stat().st_size for p in (data / "raw" / "events").rglob("*") if p.is_file())
    results.update(events=lines, generate_seconds=round(seconds, 1), event_bytes_on_disk=size)
    print(f"generate: {lines:,} lines in {seconds:.1f}s ({size / 1e6:.0f} MB on disk); load {_load()}", flush=True)

    duck = core_extract(data / "raw", day.isoformat(), data / "duckdb" / "examples.parquet", threads=args.threads)
    print(f"duckdb core work ({args.threads} threads): {duck['seconds']:.1f}s = "
          f"{lines / duck['seconds']:,.0f} events/s; load {_load()}", flush=True)
    seconds, figures = _extract(data, args, date=day)
    ours = figures[0]
    print(f"ple extract: {seconds:.1f}s = {lines / seconds:,.0f} events/s; load {_load()}", flush=True)
    agree = {k: (int(ours[k]), int(duck[k])) for k in COMPARED}
    results.update(
        duckdb_seconds=round(duck["seconds"], 1), duckdb_events_per_s=round(lines / duck["seconds"]),
        extract_seconds=round(seconds, 1), extract_events_per_s=round(lines / seconds),
        ratio_extract_to_duckdb=round(seconds / duck["seconds"], 2), load_after=_load(),
        counts_agree=all(a == b for a, b in agree.values()), counts=agree,
    )
    print(f"ratio extract / duckdb: {results['ratio_extract_to_duckdb']}x (target <= 5x); "
          f"counts agree: {results['counts_agree']}", flush=True)
    return results


def demo(args, data: Path) -> dict:
    from jobs import generate as generate_job

    assert generate_job.main(["--data-dir", str(data), "--days", "8", "--overwrite"]) == 0
    days = sorted(p.name[3:] for p in (data / "raw" / "events").iterdir())
    load = _load()
    seconds, figures = _extract(data, args, start=dt.date.fromisoformat(days[0]), end=dt.date.fromisoformat(days[-1]))
    lines = int(sum(f["lines_read"] for f in figures))
    print(f"ple extract --start {days[0]} --end {days[-1]}: {seconds:.1f}s for {len(days)} days "
          f"({seconds / len(days):.1f}s a day, {lines:,} lines); load {load} -> {_load()}", flush=True)
    return {"cpu_count": os.cpu_count() or 0, "days": len(days), "lines": lines, "extract_seconds": round(seconds, 1),
            "load_before": load, "load_after": _load()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=5_000_000, help="target events for the day")
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--threads", type=int, default=2, help="DuckDB threads (the cores Spark gets)")
    parser.add_argument("--no-gzip", action="store_true")
    parser.add_argument("--driver-memory", help="spark.driver.memory (default: the project's, 4g)")
    parser.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE", help="another Spark setting")
    parser.add_argument("--demo", action="store_true", help="the demo's 8 days in one --start/--end run")
    parser.add_argument("--keep", metavar="DIR", help="data dir to use and keep (default: a temp dir, removed)")
    args = parser.parse_args(argv)

    data = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="etl_bench_"))
    shutil.rmtree(data / "lake", ignore_errors=True)
    try:
        results = demo(args, data) if args.demo else one_day(args, data)
        print(json.dumps(results, indent=2))
    finally:
        if not args.keep:
            shutil.rmtree(data, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
