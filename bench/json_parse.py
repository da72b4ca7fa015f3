"""What each step of parsing a raw partition costs, `from_json` next to Spark's JSON data source.

    .venv/bin/python bench/etl_throughput.py --keep /tmp/etl_prof/b5m     # makes the 5M-event day
    .venv/bin/python bench/json_parse.py /tmp/etl_prof/b5m 2026-01-05      # ~3 min on 2 cores

The extract parses each raw line with `from_json` on the text (feature_eng.validation) because
it keeps the raw line (the quarantine stores it) and its hash (the duplicate order uses it);
the JSON data source parses the same bytes without a per-line `Reader` but keeps neither.
Readings of the day's own partition, same schema and corrupt-record option, alternated
`--rounds` times, each written to Spark's `noop` sink (computed, nothing stored):
- `text + xxhash64`: reading and hashing the lines (the floor every reading shares);
- `JSON data source`: `spark.read.schema(...).json(...)`;
- `from_json`: the extract's parsing alone;
- `validate_lines`: parsing and every check (`reason`);
- `parse_partition`: what the extract keeps of each line (adds the item lookup).
Prints seconds per round, the medians with their range, and the load average before and after
(local[2] unless PLE_SPARK_MASTER says otherwise; the JVM is started and the files are read
once before the clock). docs/DATA.md records the figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", help="a data dir with raw/events/dt=<day> and raw/items (as `ple extract` reads)")
    parser.add_argument("day", help="YYYY-MM-DD: the partition to parse")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    from pyspark.sql import functions as F

    from extraction.raw_logs import RawLogs
    from feature_eng import schema as S
    from feature_eng.features import parse_items
    from feature_eng.params import ExtractParams
    from feature_eng.validation import parse_partition, validate_lines
    from ple_runtime.spark import get_spark

    spark = get_spark("ple-bench-json", {})
    raw = RawLogs(spark, f"{args.data_dir.rstrip('/')}/raw")
    partition = raw.partition(args.day)
    if partition is None:
        parser.error(f"no raw events for {args.day} under {raw.events_dir(args.day)}")
    paths = [entry.path for entry in partition.files]
    items = parse_items(raw.read_snapshot("items")).cache()
    options = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": S.CORRUPT_COLUMN}
    readings = {
        "text + xxhash64": lambda: spark.read.text(paths).select(F.xxhash64("value")),
        "JSON data source": lambda: spark.read.schema(S.RAW_EVENT_STRING_SCHEMA).options(**options).json(paths),
        "from_json": lambda: spark.read.text(paths).select(
            F.from_json("value", S.RAW_EVENT_STRING_SCHEMA, options).alias("j")).select("j.*"),
        "validate_lines": lambda: validate_lines(raw.read_lines([partition]), ExtractParams()),
        "parse_partition": lambda: parse_partition(raw.read_lines([partition]), items, ExtractParams(), True),
    }
    items.count()
    lines = spark.read.text(paths).count()  # starts the JVM, warms the file cache
    load_before = _load()
    seconds: dict[str, list[float]] = {name: [] for name in readings}
    for round_number in range(1, args.rounds + 1):
        for name, reading in readings.items():
            started = time.perf_counter()
            reading().write.format("noop").mode("overwrite").save()
            seconds[name].append(time.perf_counter() - started)
            print(f"round {round_number}  {name:<18} {seconds[name][-1]:6.2f} s", flush=True)
    print(f"\n{lines:,} lines, {os.cpu_count()} cores, {spark.sparkContext.master}; "
          f"load average {load_before} before, {_load()} after")
    floor = statistics.median(seconds["text + xxhash64"])
    for name, values in seconds.items():
        median = statistics.median(values)
        beyond = "the floor" if name == "text + xxhash64" else f"{median - floor:5.2f} s beyond the floor"
        print(f"{name:<18} median {median:6.2f} s ({min(values):.2f}-{max(values):.2f}), "
              f"{lines / median:>9,.0f} lines/s, {beyond}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
