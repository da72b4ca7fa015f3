"""Pin a table to an exact set of Parquet files before training starts.

A Delta table is pinned through the one Delta log reader, `ple_runtime.delta_log`
(delta-rs, no JVM; local tables and tables on object storage alike): the files of
ONE version, which every worker then reads by path; a commit that lands while the
run is going changes nothing the run reads (Delta never rewrites a data file in
place, and VACUUM keeps removed files for the retention period, 7 days by
default). Why not Spark (`versionAsOf` + `inputFiles()`): it needs a JVM on the
driver (~10 s and ~1 GB), cannot run inside a Horovod worker, and gives the same
list; `tests/training/test_training_snapshot.py` checks that it does.

A plain Parquet folder has no versions: its files are listed (sorted, through
`ple_runtime.storage`, so also on object storage) and the list is hashed, so a run
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from ple_runtime import arrow_storage as storage, delta_log

DELTA_LOG = delta_log.DELTA_LOG


class SnapshotError(ValueError):
    """The table cannot be pinned or read as asked; the message says why."""


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
    try:
        return delta_log.latest_version(table)
    except delta_log.DeltaLogError as error:
        raise SnapshotError(str(error)) from None


def read_delta_log(table: str, version: int | None = None) -> delta_log.DeltaSnapshot:
    """Compatibility name (evaluation/snapshot.py): the files of a version, refusing unreadable tables."""
    try:
        return delta_log.snapshot(table, version)
    except delta_log.DeltaLogError as error:
        raise SnapshotError(str(error)) from None


def resolve_delta_snapshot(table: str, version: int | None = None,
                           partition_filter: dict[str, Any] | None = None) -> Snapshot:
    """Files of `table` at `version` (default latest), keeping partitions that pass the filter.

    partition_filter: {column: value} (equality), {column: [values]} (any of),
    or {column: {"min": a, "max": b}} (inclusive string range; ISO dates sort as strings).
    """
    try:
        pinned = delta_log.snapshot(table, version, partition_filter)
    except delta_log.DeltaLogError as error:
        raise SnapshotError(str(error)) from None
    files = tuple(SnapshotFile(path=f.path, size=f.size, partition_values=dict(f.partition_values),
                               num_records=f.num_records) for f in pinned.files)
    return Snapshot(table=pinned.table, format="delta", version=pinned.version, files=files,
                    partition_filter=dict(pinned.partition_filter), schema=pinned.schema,
                    partition_columns=tuple(pinned.partition_columns))


# --- plain Parquet --------------------------------------------------------------

def resolve_parquet_snapshot(path: str, partition_filter: dict[str, Any] | None = None) -> Snapshot:
    """Every `*.parquet` file under `path` (or `path` itself), skipping `_*`/`.*` entries."""
    from pyarrow import fs

    filesystem, root = storage.filesystem(path)
    info = filesystem.get_file_info(root)
    if info.type == fs.FileType.NotFound:
        raise SnapshotError(f"{path} does not exist")
    if info.type == fs.FileType.File:
        found, table_root = [info], posixpath.dirname(root)
    else:
        found = [i for i in filesystem.get_file_info(fs.FileSelector(root, recursive=True))
                 if i.type == fs.FileType.File and _is_data_file(posixpath.relpath(i.path, root))]
        table_root = root
    table = table_root if storage.is_local(path) else _uri_like(path, table_root)
    files = []
    for item in sorted(found, key=lambda i: i.path):
        parts = posixpath.relpath(item.path, table_root).split("/")[:-1]
        values = {k: unquote(v) for k, v in (p.split("=", 1) for p in parts if "=" in p)}
        location = item.path if storage.is_local(path) else _uri_like(path, item.path)
        files.append(SnapshotFile(path=location, size=item.size, partition_values=values))
    partition_filter = dict(partition_filter or {})
    files = [f for f in files if delta_log.passes(f.partition_values, partition_filter)]
    partition_columns = tuple(sorted({k for f in files for k in f.partition_values}))
    return Snapshot(table=table, format="parquet", version=None, files=tuple(files),
                    partition_filter=partition_filter, partition_columns=partition_columns)


def _uri_like(location: str, bucket_path: str) -> str:
    """bucket/key inside an object store -> a URI in the scheme the caller used (s3a://bucket/key)."""
    return f"{storage.scheme(location)}://{bucket_path}"


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
    try:
        commits = [c for c in delta_log.commits(table, partition_column) if c.version <= up_to_version]
    except delta_log.DeltaLogError as error:
        raise SnapshotError(str(error)) from None
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
    return sorted(storage.local_path(f) if storage.is_local(f) else f for f in frame.inputFiles())
