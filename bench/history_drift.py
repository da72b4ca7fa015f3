"""How much each history feature's daily mean moves from day to day, on an extracted lake.

    .venv/bin/python bench/history_drift.py --fresh /tmp/drift          # generate 14 days, extract, measure
    .venv/bin/python bench/history_drift.py --data-dir /tmp/drift       # measure a lake already extracted
    .venv/bin/python bench/history_drift.py --fresh /tmp/drift --days 14 --impressions-per-day 20000

`--fresh DIR`: `ple generate` (default world: 2000 users, 500 items, ~20k impressions a day, no
faults) into DIR, then one `ple extract --start --end` over every day with the code on the path
(run it from another checkout to measure that checkout's features). Then, from the examples and
data-quality tables (the project's Delta log reader and pyarrow, no Spark): per day, the days of history present and the
mean of every `*_hist_*` column; per feature, the largest relative day-to-day change of its mean
(|m(d) - m(d-1)| / |m(d-1)|) over the days whose whole window is present (history_days_available
= the window), and over the days from the lake's second day on. The figure docs/DATA.md asks of a
rule that makes features independent of the lake's age: < 2% once the window is full.
Not a timing: no load figure is needed (the counts do not depend on the machine).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _fresh(data_dir: Path, days: int, impressions: int) -> None:
    from datagen.generate import GenerateConfig, run as generate
    from extraction.extract import ExtractConfig, run as extract

    config = GenerateConfig(data_dir=str(data_dir), days=days, impressions_per_day=impressions, fault_rate=0.0,
                            overwrite=True)
    generate(config)
    first = config.start_date.isoformat()
    last = config.start_date.fromordinal(config.start_date.toordinal() + days - 1).isoformat()
    extract(ExtractConfig(data_dir=str(data_dir), start=first, end=last))


def _table(path: str, columns: list[str] | None = None) -> list:
    """(dt, pyarrow table of the file) per data file of the Delta table's latest version."""
    import pyarrow.parquet as pq

    from ple_runtime.delta_log import snapshot

    return [(f.partition_values["dt"], pq.read_table(f.path, columns=columns)) for f in snapshot(path).files]


def daily_means(data_dir: Path) -> tuple[list[str], dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """(history columns, {day: {column: mean}}, {day: data-quality figures}), read through the
    project's Delta log reader (ple_runtime.delta_log) and pyarrow: no Spark."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ple_runtime.delta_log import snapshot
    from ple_runtime.lake import Lake

    lake = Lake(str(data_dir))
    files = snapshot(lake.examples).files
    columns = [name for name in pq.read_schema(files[0].path).names if "_hist_" in name]
    sums: dict[str, dict[str, float]] = {}
    rows: dict[str, int] = {}
    for file in files:
        day, table = file.partition_values["dt"], pq.read_table(file.path, columns=columns)
        rows[day] = rows.get(day, 0) + table.num_rows
        day_sums = sums.setdefault(day, dict.fromkeys(columns, 0.0))
        for column in columns:
            day_sums[column] += float(pa.compute.sum(table[column]).as_py() or 0.0)
    means = {day: {c: sums[day][c] / rows[day] for c in columns} for day in sorted(sums)}
    figures: dict[str, dict[str, float]] = {}
    for day, table in _table(lake.data_quality, ["metric", "value"]):
        for metric, value in zip(table["metric"].to_pylist(), table["value"].to_pylist()):
            figures.setdefault(day, {})[metric] = value
    return columns, means, figures


def max_change(means: dict[str, dict[str, float]], days: list[str], column: str) -> tuple[float, str]:
    """The largest |relative change| of the column's mean between consecutive days of `days`."""
    worst, where = 0.0, "-"
    for before, after in zip(days, days[1:]):
        old, new = means[before][column], means[after][column]
        change = abs(new - old) / abs(old) if old else float("inf")
        if change > worst:
            worst, where = change, after
    return worst, where


def report(data_dir: Path, window: int) -> None:
    columns, means, figures = daily_means(data_dir)
    days = list(means)
    print(f"lake {data_dir}: {len(days)} days, window {window} days")
    short = [c.replace("_hist_", ":").replace("_impressions_log", "_imp") for c in columns]
    print(f"{'dt':<11} {'hist':>4} {'examples':>8} " + " ".join(f"{s:>16}" for s in short))
    for day in days:
        present = figures.get(day, {}).get("history_days_available", float("nan"))
        print(f"{day:<11} {present:>4.0f} {figures.get(day, {}).get('examples', 0):>8.0f} "
              + " ".join(f"{means[day][c]:>16.5f}" for c in columns))
    full = [d for d in days if figures.get(d, {}).get("history_days_available", 0) >= window]
    print(f"\nmax day-to-day change of the daily mean: full window ({full[0] if full else '-'} on, "
          f"{len(full)} days) | from the lake's 2nd day on (the 1st has no history)")
    for column in columns:
        full_change, full_day = max_change(means, full, column)
        all_change, all_day = max_change(means, days[1:], column)
        verdict = "ok" if full_change < 0.02 else "MOVES >= 2%"
        print(f"  {column:<32} {100 * full_change:7.2f}% ({full_day})  {verdict:<12} | "
              f"{100 * all_change:7.2f}% ({all_day})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--data-dir", type=Path, help="a data root whose lake is extracted already")
    where.add_argument("--fresh", type=Path, help="generate and extract into this data root first")
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--impressions-per-day", type=int, default=20_000)
    parser.add_argument("--window", type=int, default=7, help="the lake's stats_window_days")
    args = parser.parse_args()
    if args.fresh:
        _fresh(args.fresh, args.days, args.impressions_per_day)
    report(args.fresh or args.data_dir, args.window)
    return 0


if __name__ == "__main__":
    sys.exit(main())
