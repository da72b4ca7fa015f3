"""Pin a table to an exact set of Parquet files: the one snapshot module of training and evaluation.

Training pins a date range (`resolve_snapshot`); evaluation pins one date at one version
(`resolve_date_snapshot`: an explicit version, a timestamp, or the version recorded for the date).
Every failure is a `SnapshotError` (a `StageError`, exit 1): a log the reader refuses, a missing
table (`MissingPartitionError` for a missing date), a version VACUUM deleted (`VacuumedVersionError`).

A Delta table is pinned through the one Delta log reader, `ple_runtime.delta_log`
(delta-rs, no JVM; local tables and tables on object storage alike): the files of
ONE version, which every worker then reads by path; a commit that lands while the
run is going changes nothing the run reads (Delta never rewrites a data file in
place, and VACUUM keeps removed files for the retention period, 7 days by
default). Why not Spark (`versionAsOf` + `inputFiles()`): it needs a JVM on the
driver (~10 s and ~1 GB), cannot run inside a Horovod worker, and gives the same
list; `tests/training/test_training_snapshot.py` checks that it does.

A plain Parquet folder has no versions: its files are listed (sorted, through
`ple_runtime.arrow_storage`, so also on object storage) and the list is hashed, so a run
record still says exactly what was read.

Partition values (`dt`) live in the directory names / the Delta log, not in the
data files.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import posixpath
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from ple_runtime import arrow_storage, delta_log
from ple_runtime.config import absolute_location
from ple_runtime.delta_log import Commit, parse_timestamp
from ple_runtime.errors import StageError
from ple_runtime.maintenance import missing_files

DELTA_LOG = delta_log.DELTA_LOG


class SnapshotError(StageError, ValueError):
    """The table cannot be pinned or read as asked; the message says why. (A ValueError too: callers that
    validate settings treat an unpinnable table as a bad value.)"""


class MissingPartitionError(SnapshotError, LookupError):
    """The asked date has no rows in the table (at the asked version); the message says what exists."""


class VacuumedVersionError(SnapshotError):
    """The pinned version's files were deleted by VACUUM; the message names the version and what to do."""


@contextmanager
def _log_errors():
    """The one place a Delta log reader error becomes a SnapshotError (its message kept)."""
    try:
        yield
    except delta_log.DeltaLogError as error:
        raise SnapshotError(str(error)) from None


@dataclass(frozen=True)
class SnapshotFile:
    path: str                               # absolute local path (or URI for remote stores)
    size: int | None = None
    partition_values: dict[str, str | None] = field(default_factory=dict)
    num_records: int | None = None          # from Delta stats when present

    @property
    def url(self) -> str:
        # Not Path.as_uri(): it percent-encodes `=` (dt=...), and petastorm uses the URL path verbatim.
        return self.path if "://" in self.path else "file://" + str(Path(self.path).resolve())


@dataclass(frozen=True)
class Snapshot:
    """The exact files of one table (version) selected for one purpose (train / validation)."""

    table: str
    format: str                              # "delta" or "parquet"
    version: int | None                      # Delta version read; None for plain Parquet
    files: tuple[SnapshotFile, ...]
    partition_filter: dict[str, Any] = field(default_factory=dict)
    schema: dict | None = None               # Delta schemaString (parsed), when known
    partition_columns: tuple[str, ...] = ()

    @property
    def urls(self) -> list[str]:
        return [f.url for f in self.files]

    @property
    def paths(self) -> list[str]:
        return [f.path for f in self.files]

    @property
    def file_list_hash(self) -> str:
        """sha256 over (path relative to the table, size) of every file: same files, same hash."""
        digest = hashlib.sha256()
        for file in sorted(self.files, key=lambda f: f.path):
            digest.update(f"{_relative(file.path, self.table)}\t{file.size}\n".encode())
        return digest.hexdigest()

    @property
    def num_records(self) -> int | None:
        counts = [f.num_records for f in self.files]
        return None if any(c is None for c in counts) else int(sum(counts))

    def summary(self) -> dict[str, Any]:
        """What a run record keeps: enough to re-read exactly these files."""
        return {
            "table": self.table, "format": self.format, "version": self.version,
            "partition_filter": self.partition_filter, "num_files": len(self.files),
            "num_records": self.num_records, "file_list_hash": self.file_list_hash,
            "partitions": sorted({json.dumps(f.partition_values, sort_keys=True) for f in self.files}),
        }

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["files"] = [asdict(f) for f in self.files]
        data["partition_columns"] = list(self.partition_columns)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Snapshot":
        data = dict(data)
        data["files"] = tuple(SnapshotFile(**f) for f in data["files"])
        data["partition_columns"] = tuple(data.get("partition_columns") or ())
        return cls(**data)


def _relative(path: str, root: str) -> str:
    try:
        return os.path.relpath(path, root)
    except ValueError:
        return path


def is_delta_table(path: str) -> bool:
    return delta_log.is_delta_table(path)


def latest_delta_version(table: str) -> int:
    with _log_errors():
        return delta_log.latest_version(table)


def check_readable_as_parquet(table: str, version: int) -> None:
    """Refuses (SnapshotError) a version whose Parquet files are not the table's rows (deletion vectors,
    column mapping): those are read through Spark instead."""
    with _log_errors():
        delta_log.snapshot(table, version)


def resolve_delta_snapshot(table: str, version: int | None = None,
                           partition_filter: dict[str, Any] | None = None) -> Snapshot:
    """Files of `table` at `version` (default latest), keeping partitions that pass the filter.

    partition_filter: {column: value} (equality), {column: [values]} (any of),
    or {column: {"min": a, "max": b}} (inclusive string range; ISO dates sort as strings).
    """
    with _log_errors():
        pinned = delta_log.snapshot(table, version, partition_filter)
    files = tuple(SnapshotFile(path=f.path, size=f.size, partition_values=dict(f.partition_values),
                               num_records=f.num_records) for f in pinned.files)
    return Snapshot(table=pinned.table, format="delta", version=pinned.version, files=files,
                    partition_filter=dict(pinned.partition_filter), schema=pinned.schema,
                    partition_columns=tuple(pinned.partition_columns))


# --- plain Parquet --------------------------------------------------------------

def resolve_parquet_snapshot(path: str, partition_filter: dict[str, Any] | None = None) -> Snapshot:
    """Every `*.parquet` file under `path` (or `path` itself), skipping `_*`/`.*` entries."""
    from pyarrow import fs

    filesystem, root = arrow_storage.filesystem(path)
    info = filesystem.get_file_info(root)
    if info.type == fs.FileType.NotFound:
        raise SnapshotError(f"{path} does not exist")
    if info.type == fs.FileType.File:
        found, table_root = [info], posixpath.dirname(root)
    else:
        found = [i for i in filesystem.get_file_info(fs.FileSelector(root, recursive=True))
                 if i.type == fs.FileType.File and _is_data_file(posixpath.relpath(i.path, root))]
        table_root = root
    table = table_root if arrow_storage.is_local(path) else _uri_like(path, table_root)
    files = []
    for item in sorted(found, key=lambda i: i.path):
        parts = posixpath.relpath(item.path, table_root).split("/")[:-1]
        values = {k: unquote(v) for k, v in (p.split("=", 1) for p in parts if "=" in p)}
        location = item.path if arrow_storage.is_local(path) else _uri_like(path, item.path)
        files.append(SnapshotFile(path=location, size=item.size, partition_values=values))
    partition_filter = dict(partition_filter or {})
    files = [f for f in files if delta_log.passes(f.partition_values, partition_filter)]
    partition_columns = tuple(sorted({k for f in files for k in f.partition_values}))
    return Snapshot(table=table, format="parquet", version=None, files=tuple(files),
                    partition_filter=partition_filter, partition_columns=partition_columns)


def _uri_like(location: str, bucket_path: str) -> str:
    """bucket/key inside an object store -> a URI in the scheme the caller used (s3a://bucket/key)."""
    return f"{arrow_storage.scheme(location)}://{bucket_path}"


def _is_data_file(relative: str) -> bool:
    parts = relative.split("/")
    return relative.endswith(".parquet") and not any(p.startswith(("_", ".")) for p in parts)


def resolve_snapshot(table: str, partition_filter: dict[str, Any] | None = None,
                     version: int | None = None) -> Snapshot:
    """Delta (pinned at `version`, default latest) or plain Parquet, detected from the folder."""
    if is_delta_table(table):
        return resolve_delta_snapshot(table, version, partition_filter)
    if version is not None:
        raise SnapshotError(f"{table} is not a Delta table; --delta-version does not apply")
    return resolve_parquet_snapshot(table, partition_filter)


def last_commit_writing(table: str, partition_column: str, days: set[str] | None,
                        up_to_version: int) -> delta_log.Commit | None:
    """The newest commit <= `up_to_version` whose data change touched one of `days` (any commit when
    `days` is None); None when log retention removed them all."""
    with _log_errors():
        commits = [c for c in delta_log.commits(table, partition_column) if c.version <= up_to_version]
    writing = [c for c in commits if days is None or c.partitions_changed & days]
    return max(writing, key=lambda c: c.version, default=None)


def days_between(start: dt.date, end: dt.date) -> set[str]:
    return {(start + dt.timedelta(days=i)).isoformat() for i in range((end - start).days + 1)}


def date_range_filter(column: str, start: dt.date, end: dt.date) -> dict[str, Any]:
    return {column: {"min": start.isoformat(), "max": end.isoformat()}}


def resolve_with_spark(spark, table: str, version: int, partition_filter_sql: str | None = None) -> list[str]:
    """The same file list through Spark + Delta (`versionAsOf` + `inputFiles()`); used to cross-check."""
    frame = spark.read.format("delta").option("versionAsOf", version).load(table)
    if partition_filter_sql:
        frame = frame.where(partition_filter_sql)
    return sorted(arrow_storage.local_path(f) if arrow_storage.is_local(f) else f for f in frame.inputFiles())


# --- one date at one version (evaluation) -----------------------------------------------------
#
# Three ways to pick the version (`resolve_date_snapshot`):
# - an explicit `version` (Delta time travel, `versionAsOf`);
# - a `timestamp`: the newest version committed at or before it (Delta's
#   `timestampAsOf` rule; a timestamp after the last commit gives the last
#   version);
# - neither: the version RECORDED for that date = the newest table version whose
#   commit changed that date's partition (an add/remove with dataChange, so an
#   OPTIMIZE does not count). Later commits to other dates do not move it, so
#   re-evaluating a date later reads the same version and reports the same
#   number; a re-extract of that date moves it. Found by scanning the commit
#   files of `_delta_log/` (no Spark). When old commits were cleaned up by log
#   retention and no remaining commit touched the date, the oldest version that
#   can still be rebuilt is used (the partition's content is the same there).

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
    with _log_errors():
        return delta_log.commits(table, partition_column)


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
    with _log_errors():
        return delta_log.version_at(absolute_location(table), timestamp)


def _exists(location: str) -> bool:
    from pyarrow import fs as pafs

    filesystem, path = arrow_storage.filesystem(location)
    return filesystem.get_file_info(path).type != pafs.FileType.NotFound


def available_dates(table: str, version: int | None, partition_column: str = "dt") -> list[str]:
    try:
        location = absolute_location(table)
        if is_delta_table(location):
            files = resolve_delta_snapshot(location, version).files
        else:
            files = resolve_parquet_snapshot(location).files
    except (SnapshotError, arrow_storage.StorageError, OSError):
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
