"""`ple extract --date D`: raw event logs of day D -> validated, labelled examples in Delta.

Reads `<raw>/events/dt=D/` plus the partitions of D-1 and D+1 when present (late
engagement of D's impressions lands in D+1; D-1 is needed to tell a late
engagement from an orphan and to catch a retry delivered after midnight), the
item and user snapshots, the vocabulary table and the examples of the days before
D (history statistics). Writes, for dt = D only and replacing what a previous run
wrote: <lake>/examples, <lake>/quarantine, <lake>/data_quality; appends new values
to <lake>/vocabulary. Everything is checked before the first write; see docs/DATA.md.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
from pathlib import Path

from pydantic import Field, model_validator

from ple_runtime.config import JobConfig, Location, parse_job_config
from ple_runtime.lake import Lake, default_data_dir


class ExtractError(RuntimeError):
    """Input or table problem that stops the extract; the message names the path."""


class ExtractConfig(JobConfig):
    """Raw logs of one day (or a range of days, in order) -> examples, quarantine, data quality."""

    data_dir: Location = Field(default_factory=default_data_dir,
                          description="data root: <data>/raw is read, <data>/lake is written")
    raw_dir: Location | None = Field(None, description="raw logs folder (default: <data_dir>/raw)")
    date: dt.date | None = Field(None, description="the day to extract (YYYY-MM-DD)")
    start: dt.date | None = Field(None, description="first day of a range (with --end), extracted in order")
    end: dt.date | None = Field(None, description="last day of a range (inclusive)")
    attribution_window_hours: float = Field(6.0, gt=0, le=24,
                                            description="engagement counts if within this long after the impression")
    stats_window_days: int = Field(7, ge=1, le=365, description="history statistics: days before D to use")
    smoothing_weight: float = Field(20.0, ge=0, description="prior strength, in pseudo-impressions")
    max_late_hours: float = Field(24.0, ge=0, description="clock_skew if ts is earlier than partition start minus this")
    max_early_minutes: float = Field(60.0, ge=0, description="clock_skew if ts is later than partition end plus this")
    max_watch_ms: int = Field(4 * 3600 * 1000, gt=0, description="absurd_watch_ms above this")
    require_next_day: bool = Field(False, description="fail when D+1's partition is absent (labels would miss late engagement)")

    @model_validator(mode="after")
    def _one_way_to_name_days(self):
        if (self.date is None) == (self.start is None and self.end is None):
            raise ValueError("give either --date or both --start and --end")
        if self.date is None and (self.start is None or self.end is None or self.start > self.end):
            raise ValueError("--start and --end must both be given, start <= end")
        return self

    def days(self) -> list[str]:
        if self.date is not None:
            return [self.date.isoformat()]
        n = (self.end - self.start).days + 1
        return [(self.start + dt.timedelta(days=i)).isoformat() for i in range(n)]


# --- inputs ---------------------------------------------------------------------------------------

def events_dir(raw_dir: str, day: str) -> str:
    return str(Path(raw_dir, "events", f"dt={day}"))


def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file:")


def data_files(folder: str) -> list[str]:
    """Visible files of a local folder (Spark skips names starting with '.' or '_')."""
    return sorted(str(p) for p in Path(folder).iterdir() if p.is_file() and not p.name.startswith((".", "_")))


def check_partition(folder: str, required: bool) -> bool:
    """True when the partition can be read; False when absent and optional; else ExtractError."""
    if not _is_local(folder):
        return True  # remote storage: Spark reports problems at read time
    path = Path(folder)
    if not path.is_dir():
        if required:
            raise ExtractError(f"no raw events for this day: {folder} does not exist")
        return False
    files = data_files(folder)
    if not files:
        if required:
            raise ExtractError(f"no raw events for this day: {folder} holds no data files")
        return False
    for name in files:
        if not os.access(name, os.R_OK):
            raise ExtractError(f"cannot read {name}: permission denied")
        if name.endswith(".gz"):
            with open(name, "rb") as handle:
                if handle.read(2) != b"\x1f\x8b":
                    raise ExtractError(f"cannot read {name}: named .gz but is not gzip data")
    return True


def read_lines(spark, folder: str, day: str):
    from pyspark.sql import functions as F

    return spark.read.text(folder).select(
        F.lit(day).alias("dt"), F.input_file_name().alias("source_file"), F.col("value"))


def read_snapshot(spark, folder: str, what: str):
    if _is_local(folder) and not (Path(folder).is_dir() and data_files(folder)):
        raise ExtractError(f"the {what} snapshot is missing: {folder} holds no data files")
    return spark.read.text(folder)


# --- tables ---------------------------------------------------------------------------------------

def delta_exists(spark, path: str) -> bool:
    from delta.tables import DeltaTable

    return DeltaTable.isDeltaTable(spark, path)


def check_table_schema(spark, path: str, expected) -> None:
    """An existing table must have exactly the expected columns and types."""
    if not delta_exists(spark, path):
        return
    actual = spark.read.format("delta").load(path).schema
    have = {f.name: f.dataType for f in actual.fields}
    want = {f.name: f.dataType for f in expected.fields}
    problems = []
    if missing := [n for n in want if n not in have]:
        problems.append(f"missing columns {missing}")
    if extra := [n for n in have if n not in want]:
        problems.append(f"unexpected columns {extra}")
    if changed := [f"{n}: {have[n].simpleString()} (expected {want[n].simpleString()})"
                   for n in want if n in have and have[n] != want[n]]:
        problems.append(f"type changes {changed}")
    if problems:
        raise ExtractError(f"the table at {path} does not fit this pipeline's schema: {'; '.join(problems)}. "
                           "Migrate it or point --data-dir elsewhere; nothing was written.")


def table_version(spark, path: str) -> int | None:
    """The table's latest version. Local tables: the newest commit file in _delta_log
    (no Spark job); elsewhere DeltaTable.history(1)."""
    if _is_local(path):
        log = Path(path.removeprefix("file:"), "_delta_log")
        versions = [int(p.name[:-5]) for p in log.glob("*.json") if p.name[:-5].isdigit()] if log.is_dir() else []
        return max(versions) if versions else None
    from delta.tables import DeltaTable

    if not delta_exists(spark, path):
        return None
    return int(DeltaTable.forPath(spark, path).history(1).select("version").collect()[0][0])


def read_vocabulary(spark, path: str):
    """The vocabulary as of one pinned version, so the ids used for the examples are
    exactly the table's content before this run's append plus the new entries."""
    from feature_eng import schema as S

    version = table_version(spark, path)
    if version is None:
        return spark.createDataFrame([], S.VOCABULARY_SCHEMA), None
    return spark.read.format("delta").option("versionAsOf", version).load(path), version


def read_history(spark, path: str, first: str, last: str):
    """Examples rows of dt in [first, last] (a partition filter: only those days' files
    are read), only the columns the history statistics use."""
    from feature_eng import schema as S
    from pyspark.sql import functions as F

    columns = ("user_idx", "item_idx", "play", "watch_ratio", "share", "comment", "dt")
    if not delta_exists(spark, path):
        return spark.createDataFrame([], S.EXAMPLES_SCHEMA).select(*columns)
    return spark.read.format("delta").load(path).where(F.col("dt").between(first, last)).select(*columns)


def append_vocabulary(spark, path: str, new_entries) -> None:
    """MERGE, not a blind append: a concurrent extract that added the same values fails
    with a Delta conflict instead of giving one value two ids."""
    from delta.tables import DeltaTable

    from feature_eng import schema as S

    DeltaTable.createIfNotExists(spark).location(path).addColumns(S.VOCABULARY_SCHEMA).execute()
    (DeltaTable.forPath(spark, path).alias("t")
     .merge(new_entries.alias("s"), "t.vocabulary = s.vocabulary AND t.value = s.value")
     .whenNotMatchedInsertAll().execute())


def replace_partition(df, path: str, day: str, partition_by: str = "dt", files: int | None = None) -> None:
    """One Delta commit replacing partition `day`; `files`: at most this many data files."""
    if files is not None:
        df = df.coalesce(max(1, files))
    (df.write.format("delta").mode("overwrite")
     .option("replaceWhere", f"{partition_by} = '{day}'")
     .partitionBy(partition_by).save(path))


def files_for(rows: int, rows_per_file: int = 1_000_000) -> int:
    return max(1, -(-rows // rows_per_file))


# --- the job -----------------------------------------------------------------------------------------

def _spark_failure(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


class _StepTimer:
    """Prints how long each step of a day took (stderr), for operators and the benchmark."""

    def __init__(self, day: str):
        self.day, self.last, self.steps = day, time.perf_counter(), {}

    def __call__(self, step: str) -> None:
        now = time.perf_counter()
        self.steps[step] = now - self.last
        self.last = now
        print(f"[extract {self.day}] {step}: {self.steps[step]:.1f}s", file=sys.stderr, flush=True)


def extract_day(spark, config: ExtractConfig, day: str) -> dict[str, float]:
    from feature_eng import schema as S
    from feature_eng.features import parse_items, parse_users
    from feature_eng.pipeline import DayParams
    from feature_eng.validation import ValidationRules
    from pyspark import StorageLevel

    lake = Lake(config.data_dir)
    raw_dir = config.raw_dir or lake.raw
    params = DayParams(
        day=day, attribution_window_hours=config.attribution_window_hours,
        stats_window_days=config.stats_window_days, smoothing_weight=config.smoothing_weight,
        rules=ValidationRules(max_late_hours=config.max_late_hours, max_early_minutes=config.max_early_minutes,
                              max_watch_ms=config.max_watch_ms),
    )
    previous, following = params.neighbours()
    step = _StepTimer(day)

    # 1. inputs and existing tables, checked before any work
    for path, schema in ((lake.examples, S.EXAMPLES_SCHEMA), (lake.quarantine, S.QUARANTINE_SCHEMA),
                         (lake.data_quality, S.DATA_QUALITY_SCHEMA), (lake.vocabulary, S.VOCABULARY_SCHEMA)):
        check_table_schema(spark, path, schema)
    check_partition(events_dir(raw_dir, day), required=True)
    has_previous = check_partition(events_dir(raw_dir, previous), required=False)
    has_next = check_partition(events_dir(raw_dir, following), required=config.require_next_day)
    read = [(d, events_dir(raw_dir, d)) for d, present in ((previous, has_previous), (day, True),
                                                          (following, has_next)) if present]
    lines = read_lines(spark, read[0][1], read[0][0])
    for d, folder in read[1:]:
        lines = lines.unionByName(read_lines(spark, folder, d))
    items = parse_items(read_snapshot(spark, str(Path(raw_dir, "items")), "item"))
    users = parse_users(read_snapshot(spark, str(Path(raw_dir, "users")), "user"))

    # 2. classify every line and reconcile the day's counts: nothing is written before this.
    # Intermediate results are lazy local checkpoints: like persist() (memory, spilling
    # to disk) each is computed once, by the first action that needs it, and not by an
    # extra job of its own; unlike persist() they cut the lineage, so the plans built on
    # them stay small (the validation expression is large, and a cached plan is carried
    # inside every plan that uses it: planning slows down and the driver runs out of
    # memory). Small inputs with small plans (snapshots, history) are persisted.
    kept = []

    def keep(df, lineage: bool = False):
        df = df.persist(StorageLevel.MEMORY_AND_DISK) if lineage else df.localCheckpoint(eager=False)
        kept.append(df)
        return df

    try:
        return _extract_day(spark, config, day, lake, raw_dir, params, read, lines, items, users,
                            has_previous, has_next, step, keep)
    finally:
        for df in kept:
            _release(df)


def _release(df) -> None:
    """Drop a persisted DataFrame's or a local checkpoint's blocks (memory and disk)."""
    if df.is_cached:
        df.unpersist()
        return
    try:
        df._jdf.queryExecution().analyzed().rdd().unpersist(False)  # LogicalRDD of a checkpoint
    except Exception:  # noqa: BLE001 - best effort: Spark's ContextCleaner frees it later anyway
        pass


def _extract_day(spark, config, day, lake, raw_dir, params, read, lines, items, users,
                 has_previous, has_next, step, keep) -> dict[str, float]:
    from feature_eng import schema as S
    from feature_eng.features import history_summary
    from feature_eng.pipeline import (classify_lines, examples_from, labelled_impressions, new_vocabulary,
                                      quarantine_rows)
    from feature_eng.quality import (data_quality_rows, day_counts, format_summary,
                                     label_and_engagement_figures, reconcile)
    from pyspark.sql import functions as F

    try:
        items = keep(items, lineage=True)
        step("checks and item snapshot")
        classified = keep(classify_lines(lines, items, params))
        # one job: raw lines of the day (counted from the files), statuses, valid items
        lines_read, counts, items_known = day_counts(
            read_lines(spark, events_dir(raw_dir, day), day), classified, items, day)
        step(f"parse, classify and reconcile {len(read)} partitions")
    except Exception as err:  # noqa: BLE001 - Spark raises Py4J/Java errors of many kinds
        raise ExtractError(f"cannot read the raw logs of {day} under {raw_dir} "
                           f"(partitions {[f for _, f in read]}): {_spark_failure(err)}") from err
    reconcile(day, lines_read, counts)
    if items_known == 0:
        raise ExtractError(f"the item snapshot under {Path(raw_dir, 'items')} holds no valid item")

    labelled, engagement = labelled_impressions(classified, items, users, params, keep=keep)
    labelled = keep(labelled)
    vocabulary, vocabulary_version = read_vocabulary(spark, lake.vocabulary)
    new_entries = keep(new_vocabulary(labelled, vocabulary, params))
    # one job: labels (materialised for the examples) and the new vocabulary values
    sizes = {r["what"]: r["count"] for r in (
        new_entries.select(F.lit("new").alias("what"))
        .unionByName(labelled.select(F.lit("labelled").alias("what")))
        .groupBy("what").count().collect())}
    new_values, impressions = sizes.get("new", 0), sizes.get("labelled", 0)
    step("labels, context features and new vocabulary values")
    history = keep(read_history(spark, lake.examples, *params.history_range()), lineage=True)
    priors, history_days = history_summary(history)  # one job, reads only the window's partitions
    examples, priors = examples_from(labelled, vocabulary.unionByName(new_entries), history, params, priors)
    examples = keep(examples)

    # 3. writes: vocabulary first (examples reference its ids), then the day's partitions
    if new_values:
        append_vocabulary(spark, lake.vocabulary, new_entries)
    replace_partition(examples, lake.examples, day, files=files_for(impressions))
    step("write vocabulary and examples")
    replace_partition(quarantine_rows(classified, day), lake.quarantine, day,
                      files=files_for(counts["quarantined"]))
    step("write quarantine")

    figures: dict[str, float] = {
        "lines_read": lines_read, **counts,
        # from the persisted rows just written (same content as the table's partition)
        **label_and_engagement_figures(examples, engagement, day),
        "previous_partition_read": float(has_previous), "next_partition_read": float(has_next),
        "history_days_available": history_days, "vocabulary_new_values": new_values,
        **{f"prior:{k}": v for k, v in priors.items()},
    }
    dq = spark.createDataFrame(data_quality_rows(day, figures), S.DATA_QUALITY_SCHEMA)
    replace_partition(dq, lake.data_quality, day, files=1)
    step("data quality")
    figures["seconds"] = round(sum(step.steps.values()), 1)
    print(format_summary(day, figures))
    print(f"tables: examples v{table_version(spark, lake.examples)}, quarantine v{table_version(spark, lake.quarantine)}, "
          f"data_quality v{table_version(spark, lake.data_quality)}, vocabulary v{table_version(spark, lake.vocabulary)} "
          f"(read at v{vocabulary_version})")
    return figures


def main(argv: list[str] | None = None) -> int:
    config = parse_job_config(ExtractConfig, argv, prog="ple extract")
    from feature_eng.quality import ReconciliationError
    from ple_runtime.spark import get_spark

    spark = get_spark("ple-extract")
    try:
        for day in config.days():
            extract_day(spark, config, day)
    except (ExtractError, ReconciliationError) as err:
        print(f"extract failed: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
