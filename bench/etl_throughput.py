"""Events per second of `ple generate` and `ple extract` for one day of logs.

    .venv/bin/python bench/etl_throughput.py                       # ~5M events, local[2]
    .venv/bin/python bench/etl_throughput.py --events 500000 --keep /tmp/etl_bench

Generates one day (gzip level 1, 2 files) into a scratch data dir, then extracts
it (no neighbour partitions, empty lake: the first-day case) in this process on
the project's SparkSession (local[2] unless PLE_SPARK_MASTER says otherwise).
Prints the figures; docs/DATA.md records the measured ones.
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

EVENTS_PER_IMPRESSION = 1.38  # measured on the default world (impressions + plays + shares + comments)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=5_000_000, help="target events for the day")
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--no-gzip", action="store_true")
    parser.add_argument("--skip-extract", action="store_true")
    parser.add_argument("--keep", metavar="DIR", help="data dir to use and keep (default: a temp dir, removed)")
    args = parser.parse_args(argv)

    from datagen.events import FaultRates, GeneratorSettings, generate

    data = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="etl_bench_"))
    day = dt.date(2026, 1, 5)
    settings = GeneratorSettings(
        users=args.users, items=args.items, days=1, start_date=day,
        impressions_per_day=int(args.events / EVENTS_PER_IMPRESSION), gzip=not args.no_gzip,
        faults=FaultRates.uniform(0.0005),
    )
    results: dict[str, float | int | str] = {"cpu_count": os.cpu_count() or 0}
    try:
        started = time.perf_counter()
        manifest = generate(settings, data / "raw", overwrite=True)
        seconds = time.perf_counter() - started
        lines = manifest["totals"]["lines"]
        size = sum(p.stat().st_size for p in (data / "raw" / "events").rglob("*") if p.is_file())
        results.update(generate_lines=lines, generate_seconds=round(seconds, 1),
                       generate_events_per_s=round(lines / seconds), event_bytes_on_disk=size)
        print(f"generate: {lines:,} lines in {seconds:.1f}s = {lines / seconds:,.0f} events/s "
              f"({size / 1e6:.0f} MB on disk)", flush=True)

        if not args.skip_extract:
            from jobs import extract
            from ple_runtime.spark import get_spark

            spark = get_spark("ple-bench")
            spark.range(1).count()  # JVM start is not part of the figure
            started = time.perf_counter()
            code = extract.main(["--data-dir", str(data), "--date", day.isoformat()])
            seconds = time.perf_counter() - started
            if code != 0:
                return code
            results.update(extract_seconds=round(seconds, 1), extract_events_per_s=round(lines / seconds),
                           spark_master=spark.sparkContext.master)
            print(f"extract: {lines:,} lines in {seconds:.1f}s = {lines / seconds:,.0f} events/s", flush=True)
        print(json.dumps(results, indent=2))
    finally:
        if not args.keep:
            shutil.rmtree(data, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
