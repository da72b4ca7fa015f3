"""Which rows an evaluation reads: one date partition of a Delta table at one version.

Three ways to pick the version (`resolve_date_snapshot`):
- an explicit `version` (Delta time travel, `versionAsOf`);
- a `timestamp`: the newest version committed at or before it (Delta's
  `timestampAsOf` rule; a timestamp after the last commit gives the last
  version);
- neither: the version RECORDED for that date = the newest table version whose
  commit changed that date's partition (an add/remove with dataChange, so an
  OPTIMIZE does not count). Later commits to other dates do not move it, so
  re-evaluating a date later reads the same version and reports the same
  number; a re-extract of that date moves it. Found by scanning the commit
  files of `_delta_log/` (no Spark). When old commits were cleaned up by log
  retention and no remaining commit touched the date, the oldest version that
  can still be rebuilt is used (the partition's content is the same there).

The log is read by `ple_runtime.delta_log` (the one reader; local tables and
object storage alike), and rows through `ple_runtime.storage`'s filesystems.

Rows are read either with pyarrow from the Parquet files of that version
(`training.snapshot`, no JVM: the default) or with Spark + Delta
(`versionAsOf` + a `dt` filter + toPandas over Arrow). `reader="auto"` uses
pyarrow and falls back to Spark for tables the log reader refuses (deletion
vectors, column mapping). Both read the same version, chosen here.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import pandas as pd

from ple_runtime import arrow_storage as storage, delta_log
from ple_runtime.config import absolute_location
from ple_runtime.delta_log import Commit, parse_timestamp  # noqa: F401 - re-exported for callers
from ple_runtime.maintenance import missing_files
from training.snapshot import (SnapshotError, is_delta_table, latest_delta_version, read_delta_log,
                               resolve_delta_snapshot, resolve_parquet_snapshot)

READERS = ("auto", "arrow", "spark")


class MissingPartitionError(LookupError):
    """The asked date has no rows in the table (at the asked version); the message says what exists."""


@dataclass
class DateSnapshot:
    """One date of one table, pinned at one version, with how the version was chosen."""

    table: str
    partition_column: str
    date: str
    version: int | None                   # None: plain Parquet (no versions)
    chosen_by: str                        # "version" | "timestamp" | "recorded" | "parquet"
    latest_version: int | None = None
    timestamp: str | None = None
    files: tuple[str, ...] = ()
    file_list_hash: str | None = None
    rows: int | None = None
    reader: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"table": self.table, "partition_column": self.partition_column, "date": self.date,
                "version": self.version, "chosen_by": self.chosen_by, "latest_version": self.latest_version,
                "timestamp": self.timestamp, "num_files": len(self.files), "file_list_hash": self.file_list_hash,
                "rows": self.rows, "reader": self.reader, **self.extra}


# --- the Delta log (ple_runtime.delta_log: local and object storage alike) -------------------

def delta_commits(table: str, partition_column: str = "dt") -> list[Commit]:
    """Every commit file still in `_delta_log/`, oldest first, with the partitions it changed."""
    try:
        return delta_log.commits(table, partition_column)
    except delta_log.DeltaLogError as error:
        raise SnapshotError(str(error)) from None


def recorded_version(table: str, date: str, partition_column: str = "dt") -> int:
    """The newest version whose commit changed partition `date` (see the module doc)."""
    table = absolute_location(table)
    commits = delta_commits(table, partition_column)
    touching = [c.version for c in commits if date in c.partitions_changed]
    if touching:
        return max(touching)
    earliest = min((c.version for c in commits), default=0)
    if earliest > 0:
        # Log retention removed the early commits: the date may predate them.
        snapshot = resolve_delta_snapshot(table, latest_delta_version(table), {partition_column: date})
        if snapshot.files:
            checkpoints = delta_log.checkpoint_versions(table)
            return max([v for v in checkpoints if v < earliest] or [earliest])
    raise MissingPartitionError(_missing_message(table, date, partition_column, None))


def version_at_timestamp(table: str, timestamp: str | dt.datetime) -> int:
    """Delta's timestampAsOf rule: the newest commit at or before the timestamp (UTC if naive)."""
    try:
        return delta_log.version_at(absolute_location(table), timestamp)
    except delta_log.DeltaLogError as error:
        raise SnapshotError(str(error)) from None


def _exists(location: str) -> bool:
    from pyarrow import fs as pafs

    filesystem, path = storage.filesystem(location)
    return filesystem.get_file_info(path).type != pafs.FileType.NotFound


def available_dates(table: str, version: int | None, partition_column: str = "dt") -> list[str]:
    try:
        location = absolute_location(table)
        if is_delta_table(location):
            files = resolve_delta_snapshot(location, version).files
        else:
            files = resolve_parquet_snapshot(location).files
    except (SnapshotError, storage.StorageError, OSError):
        return []
    return sorted({f.partition_values.get(partition_column) for f in files} - {None})


def _missing_message(table: str, date: str, partition_column: str, version: int | None) -> str:
    dates = available_dates(table, version, partition_column)
    shown = (", ".join(dates[:3]) + (" ... " + ", ".join(dates[-3:]) if len(dates) > 6 else
                                      (", " + ", ".join(dates[3:]) if len(dates) > 3 else ""))) if dates else "none"
    at = f" at version {version}" if version is not None else " at any version still in the log"
    return (f"no rows for {partition_column}={date} in {table}{at}; "
            f"{len(dates)} dates exist ({shown})")


# --- choosing the version ----------------------------------------------------------------

def resolve_date_snapshot(table: str, date: str | dt.date, *, version: int | None = None,
                          timestamp: str | dt.datetime | None = None,
                          partition_column: str = "dt") -> DateSnapshot:
    """Pin the version for `date` (module doc) and list its files; raises MissingPartitionError."""
    date = date.isoformat() if isinstance(date, dt.date) else str(date)
    if version is not None and timestamp is not None:
        raise ValueError("give a version or a timestamp, not both")
    local = absolute_location(table)  # a local path, or a URI as given (s3a://...)
    if not _exists(local):
        raise SnapshotError(f"table {table} does not exist")
    if not is_delta_table(local):
        if version is not None or timestamp is not None:
            raise SnapshotError(f"{table} is not a Delta table: it has no versions to travel to")
        snapshot = resolve_parquet_snapshot(local, {partition_column: date})
        if not snapshot.files:
            raise MissingPartitionError(_missing_message(table, date, partition_column, None))
        return DateSnapshot(table=table, partition_column=partition_column, date=date, version=None,
                            chosen_by="parquet", files=tuple(snapshot.paths),
                            file_list_hash=snapshot.file_list_hash, rows=snapshot.num_records)
    latest = latest_delta_version(local)
    if version is not None:
        chosen_by = "version"
    elif timestamp is not None:
        version, chosen_by = version_at_timestamp(local, timestamp), "timestamp"
    else:
        version, chosen_by = recorded_version(local, date, partition_column), "recorded"
    snapshot = resolve_delta_snapshot(local, version, {partition_column: date})
    if not snapshot.files:
        raise MissingPartitionError(_missing_message(table, date, partition_column, version))
    extra = {}
    if gone := missing_files(snapshot.paths):
        snapshot, extra = _after_vacuum(local, snapshot, gone, date, partition_column, chosen_by, latest)
    return DateSnapshot(table=table, partition_column=partition_column, date=date, version=snapshot.version,
                        chosen_by=chosen_by, latest_version=latest, extra=extra,
                        timestamp=parse_timestamp(timestamp).isoformat() if timestamp is not None else None,
                        files=tuple(snapshot.paths), file_list_hash=snapshot.file_list_hash,
                        rows=snapshot.num_records)


class VacuumedVersionError(SnapshotError):
    """The pinned version's files were deleted by VACUUM; the message names the version and what to do."""


def _after_vacuum(table: str, snapshot, gone: list[str], date: str, partition_column: str, chosen_by: str,
                  latest: int):
    """A version whose files VACUUM deleted. The version recorded for a date was only compacted
    since (no later commit changed the date: see recorded_version), so the latest version holds
    the same rows in other files and is read instead; a version asked for is an error."""
    changed_at = recorded_version(table, date, partition_column)
    if chosen_by == "recorded":
        return (resolve_delta_snapshot(table, latest, {partition_column: date}),
                {"recorded_version": snapshot.version, "read_at": "latest (the recorded version was compacted "
                                                                  "and vacuumed; same rows)"})
    same_rows = changed_at <= snapshot.version
    remedy = (f"no commit since v{snapshot.version} changed {partition_column}={date}, so --version {latest} reads "
              "the same rows" if same_rows else
              f"{partition_column}={date} was rewritten at v{changed_at}: --version {changed_at} reads those "
              "(other) rows")
    raise VacuumedVersionError(
        f"version {snapshot.version} of {table} ({partition_column}={date}) can no longer be read: VACUUM deleted "
        f"{len(gone)} of its {len(snapshot.files)} files (e.g. {gone[0]}). Evaluate on a version that still "
        f"exists ({remedy}), or restore the files from a backup. `ple maintain` keeps the versions registered "
        "models pin unless it is run with --force.")


def resolve_snapshot_or_fail(table: str, date, version=None, timestamp=None,
                             partition_column: str = "dt") -> DateSnapshot:
    """resolve_date_snapshot, with what a user can fix (missing date, not a table) as EvaluationFailed."""
    from .config import EvaluationFailed

    try:
        return resolve_date_snapshot(table, date, version=version, timestamp=timestamp,
                                     partition_column=partition_column)
    except (MissingPartitionError, SnapshotError) as error:
        raise EvaluationFailed(str(error)) from None


# --- reading the rows --------------------------------------------------------------------

def read_date_snapshot(snapshot: DateSnapshot, columns: Sequence[str], reader: str = "auto",
                       spark=None) -> pd.DataFrame:
    """The snapshot's rows (only `columns`) as pandas; sets snapshot.rows and snapshot.reader."""
    if reader not in READERS:
        raise ValueError(f"unknown reader {reader!r}; valid: {list(READERS)}")
    columns = list(dict.fromkeys(columns))
    frame = None
    if reader in ("auto", "arrow"):
        try:
            frame = _read_with_arrow(snapshot, columns)
            snapshot.reader = "arrow"
        except SnapshotError:
            if reader == "arrow":
                raise
    if frame is None:
        frame = _read_with_spark(snapshot, columns, spark)
        snapshot.reader = "spark"
    snapshot.rows = int(len(frame))
    return frame


def iter_date_snapshot(snapshot: DateSnapshot, columns: Sequence[str], rows_per_batch: int, reader: str = "auto",
                       spark=None) -> Iterator[pd.DataFrame]:
    """The snapshot's rows (only `columns`) as pandas frames of `rows_per_batch` rows (the last shorter), read
    batch by batch (evaluation/streaming.py); sets snapshot.reader, and snapshot.rows after the last batch."""
    from .streaming import frame_batches, parquet_batches

    if reader not in READERS:
        raise ValueError(f"unknown reader {reader!r}; valid: {list(READERS)}")
    columns = list(dict.fromkeys(columns))
    batches = None
    if reader in ("auto", "arrow"):
        try:
            if snapshot.version is not None:
                read_delta_log(absolute_location(snapshot.table), snapshot.version)  # refuses what arrow cannot read
            batches = parquet_batches(snapshot.files, columns, rows_per_batch)
            snapshot.reader = "arrow"
        except SnapshotError:
            if reader == "arrow":
                raise
    if batches is None:
        batches = frame_batches(_read_with_spark(snapshot, columns, spark), rows_per_batch)
        snapshot.reader = "spark"
    rows = 0
    try:
        for batch in batches:
            rows += len(batch)
            yield batch
    except KeyError as error:
        raise KeyError(f"{snapshot.table} ({snapshot.partition_column}={snapshot.date}, version "
                       f"{snapshot.version}): {error.args[0]}") from None
    snapshot.rows = rows


def _read_with_arrow(snapshot: DateSnapshot, columns: list[str]) -> pd.DataFrame:
    if snapshot.version is not None:
        # Refuses tables whose Parquet files are not the table's rows (deletion vectors, column mapping).
        read_delta_log(absolute_location(snapshot.table), snapshot.version)
    try:
        return storage.read_parquet(snapshot.files, columns).to_pandas()
    except KeyError as error:
        raise KeyError(f"{snapshot.table} ({snapshot.partition_column}={snapshot.date}, version "
                       f"{snapshot.version}): {error.args[0]}") from None


def _read_with_spark(snapshot: DateSnapshot, columns: list[str], spark=None) -> pd.DataFrame:
    from pyspark.sql import functions as F

    if spark is None:
        from ple_runtime.spark import get_spark

        spark = get_spark("ple-evaluate")
    spark.conf.set("spark.sql.execution.arrow.pyspark.enabled", "true")
    reader = spark.read.format("delta" if snapshot.version is not None else "parquet")
    if snapshot.version is not None:
        reader = reader.option("versionAsOf", snapshot.version)
    frame = reader.load(snapshot.table).where(F.col(snapshot.partition_column) == snapshot.date)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise KeyError(f"{snapshot.table} lacks columns {missing}; it has {sorted(frame.columns)}")
    return frame.select(*columns).toPandas()
