"""The cost of the day-health checks as a share of `ple extract`'s time, on days of N events.

    .venv/bin/python bench/day_health_cost.py --events 1000000          # two days of ~1M events, local[2]
    .venv/bin/python bench/day_health_cost.py --events 5000000 --keep /tmp/health_bench

Generates two consecutive days (the first is the second's trailing window), extracts them
in order (one `ple extract --date` each, the project's SparkSession started before the
clock), then times, on the second day, each part of the checks again on their own: the
per-day profile (Spark: the day's first new vocabulary ids, one aggregation of the written
examples), the read of the window's data-quality records, and the comparison in Python.
Prints each part, its share of the second day's extract time (the anchor, measured in the
same run), the machine and the load average before and after (a loaded machine slows both
sides; the share is the figure that survives it). docs/measurements/day_health.md records runs.
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

EVENTS_PER_IMPRESSION = 1.38  # as bench/etl_throughput.py (impressions + plays + shares + comments)


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def _timed(fn):
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def measure(args, data: Path) -> dict:
    from datagen.events import FaultRates, GeneratorSettings, generate
    from extraction.extract import ExtractConfig, run
    from extraction.tables import LakeTables
    from feature_eng.health import assess_day
    from feature_eng.params import shift_day
    from ple_runtime.lake import Lake
    from ple_runtime.spark import get_spark

    days = [dt.date(2026, 1, 5), dt.date(2026, 1, 6)]
    settings = GeneratorSettings(users=args.users, items=args.items, days=2, start_date=days[0],
                                 impressions_per_day=int(args.events / EVENTS_PER_IMPRESSION),
                                 faults=FaultRates.uniform(0.0005))
    results: dict = {"cpu_count": os.cpu_count() or 0, "load_before": _load()}
    generated = generate(settings, data / "raw", overwrite=True)
    results["events_per_day"] = generated["totals"]["lines"] // 2
    spark = get_spark("ple-bench-health")
    spark.range(1).count()  # JVM start is not part of any figure
    extract_seconds = []
    for day in days:
        seconds, _ = _timed(lambda: run(ExtractConfig(data_dir=str(data), date=day), spark))
        extract_seconds.append(seconds)
        print(f"ple extract {day}: {seconds:.1f}s; load {_load()}", flush=True)
    tables, day = LakeTables(spark, Lake(str(data))), days[1].isoformat()
    config = ExtractConfig(data_dir=str(data), date=days[1])
    parts = {}
    parts["profile (Spark)"], profile = _timed(lambda: tables.day_profiles([day]))
    parts["window read (Delta)"], earlier = _timed(lambda: tables.quality_figures(
        shift_day(day, -config.day_health.window_days), shift_day(day, -1)))
    figures = {**earlier.pop(day, {}), **profile[day]}
    parts["comparison (Python)"], health = _timed(lambda: assess_day(day, figures, earlier, config.day_health,
                                                                     config.stats_window_days, []))
    anchor = extract_seconds[1]
    for name, seconds in parts.items():
        print(f"  {name}: {seconds:.2f}s = {100 * seconds / anchor:.1f}% of the extract", flush=True)
    total = sum(parts.values())
    print(f"day-health checks: {total:.1f}s of {anchor:.1f}s = {100 * total / anchor:.1f}% of the extract "
          f"({len(health.checks)} checks, {len(health.breaches)} breached); load {_load()}", flush=True)
    results.update(extract_seconds=[round(s, 1) for s in extract_seconds],
                   parts_seconds={k: round(v, 2) for k, v in parts.items()}, checks_seconds=round(total, 2),
                   share_of_extract=round(total / anchor, 4), load_after=_load())
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000, help="target events a day")
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--keep", metavar="DIR", help="data dir to use and keep (default: a temp dir, removed)")
    args = parser.parse_args(argv)
    data = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="health_bench_"))
    shutil.rmtree(data / "lake", ignore_errors=True)
    try:
        print(json.dumps(measure(args, data), indent=2))
    finally:
        if not args.keep:
            shutil.rmtree(data, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
