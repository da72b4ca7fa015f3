"""The lake's Delta tables as extract reads and writes them: schema checks, table versions,
the pinned vocabulary, the history window, and the writes of a pass of days (docs/DATA.md).

Writes, in this order (each its own Delta commit; Delta has no multi-table transaction, so
the order is what keeps a failure harmless): per pass of days, the vocabulary MERGE (examples
reference its ids), then `replaceWhere dt in [first, last]` of examples; per run, quarantine
and, last, data_quality (a day with a data-quality record is complete).
"""

from __future__ import annotations

import contextlib

from feature_eng import schema as S
from feature_eng.extract_pass import PassOutputs
from feature_eng.features import HISTORY_COLUMNS
from feature_eng.params import ExtractParams, shift_day
from ple_runtime.errors import InputError
from ple_runtime.hadoop_storage import HadoopFileSystem
from ple_runtime.lake import Lake
from ple_runtime.local_frames import empty_frame, local_frame

ROWS_PER_FILE = 1_000_000
ONE_TASK_ROWS = 250_000  # below this a day's partition is written by one task (one file)


def files_for(rows: int, parallelism: int = 1) -> int:
    """Data files for a partition of `rows` rows: one per million rows, but at least one per
    core once the rows are many (a coalesce to fewer files would write them on fewer cores)."""
    files = max(1, -(-rows // ROWS_PER_FILE))
    return files if rows < ONE_TASK_ROWS else max(files, parallelism)


class LakeTables:
    def __init__(self, spark, lake: Lake, row_group_bytes: int | None = None):
        self.spark, self.lake = spark, lake
        self.row_group_bytes = row_group_bytes  # of the examples (ExtractConfig.row_group_mb)
        self.fs = HadoopFileSystem(spark)

    # --- reading and checking ---------------------------------------------------------------

    def version(self, path: str) -> int | None:
        """The table's latest version: the newest commit file in its _delta_log (no Spark job)."""
        commits = [e.name[:-5] for e in self.fs.list_files(f"{path.rstrip('/')}/_delta_log", include_hidden=True)
                   if e.name.endswith(".json")]
        versions = [int(c) for c in commits if c.isdigit()]
        return max(versions) if versions else None

    def exists(self, path: str) -> bool:
        return self.version(path) is not None

    def check_schemas(self) -> None:
        """Existing tables must have exactly the columns and types of feature_eng/schema.py."""
        for path, expected in ((self.lake.examples, S.EXAMPLES_SCHEMA), (self.lake.quarantine, S.QUARANTINE_SCHEMA),
                               (self.lake.data_quality, S.DATA_QUALITY_SCHEMA),
                               (self.lake.vocabulary, S.VOCABULARY_SCHEMA)):
            if self.exists(path):
                check_schema(path, self.spark.read.format("delta").load(path).schema, expected)

    def extracted_days(self) -> set[str]:
        """Days with a data-quality record (written last: the day's extract completed)."""
        if not self.exists(self.lake.data_quality):
            return set()
        rows = self.spark.read.format("delta").load(self.lake.data_quality).select("dt").distinct().collect()
        return {r["dt"] for r in rows}

    def check_order(self, first_day: str, allow_gap: bool) -> None:
        """Refuse to start a run at `first_day` when the lake holds extracted days before it but
        not the day before it: its history features and new vocabulary ids would differ from
        what an in-order run gives (a backfill running out of order)."""
        if allow_gap:
            return
        done = self.extracted_days()
        previous = shift_day(first_day, -1)
        earlier = sorted(d for d in done if d < first_day)
        if earlier and previous not in done:
            raise InputError(
                f"the lake {self.lake.root}/lake holds extracted days up to {earlier[-1]} but not {previous}: "
                f"extract {shift_day(earlier[-1], 1)}..{previous} first (days run in order: {first_day}'s history "
                "features and new vocabulary ids depend on the days before it), or pass --allow-gap to extract "
                f"{first_day} anyway. (A day stopped by its health check has no record until it is extracted "
                "again, fixed or with --accept-day-health: its extract log says why.) Nothing was written.")

    def pinned_vocabulary(self):
        """(the vocabulary at its latest version, that version): the ids a day uses are exactly
        that content plus the day's new entries."""
        version = self.version(self.lake.vocabulary)
        if version is None:
            return empty_frame(self.spark, S.VOCABULARY_SCHEMA), None
        return self.spark.read.format("delta").option("versionAsOf", version).load(self.lake.vocabulary), version

    def history(self, first_day: str, params: ExtractParams):
        """Examples rows of the days before `first_day` that its statistics window holds (a
        partition filter: only those days' files are read; later days of a pass take their
        history from the pass itself), only the columns the history statistics use."""
        from pyspark.sql import functions as F

        if not self.exists(self.lake.examples):
            return empty_frame(self.spark, S.EXAMPLES_SCHEMA).select(*HISTORY_COLUMNS)
        return (self.spark.read.format("delta").load(self.lake.examples)
                .where(F.col("dt").between(*params.history_range(first_day))).select(*HISTORY_COLUMNS))

    def quality_figures(self, first: str, last: str) -> dict[str, dict[str, float]]:
        """{day: {metric: value}} of the data-quality records of first..last (a few hundred rows a
        day: the day-health window)."""
        from pyspark.sql import functions as F

        if not self.exists(self.lake.data_quality):
            return {}
        rows = (self.spark.read.format("delta").load(self.lake.data_quality)
                .where(F.col("dt").between(first, last)).collect())
        result: dict[str, dict[str, float]] = {}
        for row in rows:
            result.setdefault(row["dt"], {})[row["metric"]] = row["value"]
        return result

    def day_profiles(self, days: list[str]) -> dict[str, dict[str, float]]:
        """{day: {profile:<feature>:<bin>: count}} of the examples of `days` as written (two small
        Spark jobs: the days' first new vocabulary ids, then one aggregation of the examples)."""
        from pyspark.sql import functions as F

        from feature_eng.health import day_profiles

        floors = {}
        if self.exists(self.lake.vocabulary):
            floors = {(r["first_seen_dt"], r["vocabulary"]): r["floor"] for r in (
                self.spark.read.format("delta").load(self.lake.vocabulary).where(F.col("first_seen_dt").isin(days))
                .groupBy("first_seen_dt", "vocabulary").agg(F.min("id").alias("floor")).collect())}
        examples = self.spark.read.format("delta").load(self.lake.examples).where(F.col("dt").isin(days))
        result: dict[str, dict[str, float]] = {day: {} for day in days}
        for row in day_profiles(examples, floors).collect():
            result[row["dt"]][row["metric"]] = row["value"]
        return result

    # --- writing ----------------------------------------------------------------------------

    def write_examples(self, outputs: PassOutputs) -> dict[str, dict[str, float]]:
        """The vocabulary first (examples reference its ids), then the days' examples (one commit);
        returns each day's figures completed with the label figures observed while writing."""
        from pyspark.sql import Observation

        from feature_eng.extract_pass import final_figures, label_aggregates

        days = list(outputs.days)
        if outputs.new_vocabulary_values:
            self.add_vocabulary(outputs.new_vocabulary)
        labels = Observation(f"labels {days[0]}..{days[-1]}")
        examples = outputs.examples.observe(labels, *label_aggregates(days))
        rows = max(int(figures["labelled_impressions"]) for figures in outputs.figures.values())
        files = files_for(rows, self.spark.sparkContext.defaultParallelism)
        if files == 1 and len(days) > 1:
            # small days: one file each, written (and computed) in parallel instead of by one task
            examples, files = examples.repartition(len(days), "dt"), None
        # else every write task holds rows of every day: as many tasks as the largest day wants files
        replace_where(examples, self.lake.examples, _days_between(days[0], days[-1]), files=files,
                      row_group_bytes=self.row_group_bytes)
        return final_figures(outputs, labels.get)

    def write_quality(self, days: list[str], quarantine, figures: list[dict[str, float]]) -> None:
        """The quarantine rows and data-quality figures of `days` (consecutive), one Delta commit
        each, data_quality last: a day with a data-quality record is complete. `figures` may stop
        before the last day (a day that failed its health check): that day gets its quarantine
        rows but no data-quality record (a record written earlier is removed)."""
        where = _days_between(days[0], days[-1])
        quarantined = int(sum(f["quarantined"] for f in figures))
        replace_where(quarantine, self.lake.quarantine, where, files=files_for(quarantined))
        rows = [(day, metric, float(value)) for day, day_figures in zip(days, figures)
                for metric, value in sorted(day_figures.items())]
        replace_where(local_frame(self.spark, rows, S.DATA_QUALITY_SCHEMA), self.lake.data_quality, where, files=1)

    def add_vocabulary(self, new_entries) -> None:
        """New entries: a MERGE, not a blind append, so a concurrent extract that added the same
        values fails with a Delta conflict instead of giving one value two ids. The table's first
        entries create it (a write that fails if another extract created it meanwhile)."""
        from delta.tables import DeltaTable

        path = self.lake.vocabulary
        if not self.exists(path):
            new_entries.coalesce(1).write.format("delta").mode("errorifexists").save(path)
            return
        (DeltaTable.forPath(self.spark, path).alias("t")
         .merge(new_entries.alias("s"), "t.vocabulary = s.vocabulary AND t.value = s.value")
         .whenNotMatchedInsertAll().execute())

    def versions(self) -> dict[str, int | None]:
        return {name: self.version(getattr(self.lake, name))
                for name in ("examples", "quarantine", "data_quality", "vocabulary")}


def check_schema(path: str, actual, expected) -> None:
    """`actual` must have exactly the columns and types of `expected`; the message names the table."""
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
        raise InputError(f"the table at {path} does not fit this pipeline's schema: {'; '.join(problems)}. "
                         "Migrate it or point --data-dir elsewhere; nothing was written.")


def _days_between(first: str, last: str) -> str:
    return f"dt >= '{first}' AND dt <= '{last}'"


def replace_where(df, path: str, where: str, files: int | None = None, row_group_bytes: int | None = None) -> None:
    """One Delta commit replacing the rows (partitions of `dt`) that match `where`; with `row_group_bytes`,
    Parquet row groups end at about that size (parquet.block.size) whatever the file's rows."""
    if files is not None:
        df = df.coalesce(max(1, files))
    with parquet_block_size(df.sparkSession, row_group_bytes):
        df.write.format("delta").mode("overwrite").option("replaceWhere", where).partitionBy("dt").save(path)


@contextlib.contextmanager
def parquet_block_size(spark, size: int | None):
    """parquet.block.size for the writes inside. A Hadoop setting: Delta takes it from the session's
    Hadoop configuration, not from the writer's options; restored after, as the session is shared."""
    if size is None:
        yield
        return
    hadoop = spark.sparkContext._jsc.hadoopConfiguration()
    previous = hadoop.get("parquet.block.size")
    hadoop.set("parquet.block.size", str(int(size)))
    try:
        yield
    finally:
        if previous is None:
            hadoop.unset("parquet.block.size")
        else:
            hadoop.set("parquet.block.size", previous)
