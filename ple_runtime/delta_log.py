"""The one reader of Delta tables' transaction logs outside Spark (no JVM).

What the jobs need from a log, for a table on local disk or object storage:
- the latest version (`latest_version`);
- the data files of one version, with partition values, sizes and record counts,
  optionally only some partitions (`snapshot`): what training pins and workers read,
  what evaluation reads with pyarrow;
- the version current at a timestamp (`version_at`, Delta's `timestampAsOf` rule);
- the commits still in the log, each with its time and the partitions whose data
  it changed (`commits`): how evaluation pins the version recorded for a date.

Built on delta-rs (`deltalake`): state reconstruction (newest checkpoint, then the
commits after it) at any version, protocol and metadata. deltalake >= 1.0 does not
need pyarrow (it returns Arrow data through arro3), so it lives beside the pinned
pyarrow 14; its optional `pyarrow` extra asks for pyarrow >= 21, and 0.18.2 is the
newest release that installs with pyarrow 14 at all. Results are taken as Python
lists from arro3, never handed to pyarrow. Why this was checked and what was
compared: docs/CLUSTER.md ("One Delta log reader").

What delta-rs does not give is the actions of ONE commit, and commit times by
Delta's rule (see `version_at`), so `commits` reads the commit files themselves
(JSON lines, a stable part of the Delta protocol) and their modification times
through `ple_runtime.arrow_storage`; `version_at` is built on it.

Tables whose Parquet files are not simply the table's rows are refused with a
`DeltaLogError` saying what to do (deletion vectors on live files, column mapping,
reader features a plain Parquet reader cannot honour): callers read those with Spark.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from ple_runtime import arrow_storage
from ple_runtime.errors import StageError

DELTA_LOG = "_delta_log"
_COMMIT_RE = re.compile(r"^(\d{20})\.json$")
_CHECKPOINT_RE = re.compile(r"^(\d{20})\.checkpoint(\.\d{10}\.\d{10}|\.[0-9a-fA-F-]{36})?\.(parquet|json)$")
# Reader features whose data files a plain Parquet reader still reads correctly
# (deletion vectors and column mapping are checked per table below).
_READABLE_FEATURES = {"timestampNtz", "vacuumProtocolCheck", "deletionVectors", "columnMapping",
                      "v2Checkpoint", "domainMetadata", "checkpointProtection"}


class DeltaLogError(StageError, ValueError):
    """The table cannot be read as asked; the message names the table and says why."""


@dataclass(frozen=True)
class DeltaFile:
    path: str                                   # absolute path, or URI in the table's own scheme
    size: int | None
    partition_values: dict[str, str | None] = field(default_factory=dict)
    num_records: int | None = None              # from the file's Delta statistics, when written


@dataclass(frozen=True)
class DeltaSnapshot:
    """The data files of one version of a table (only those passing `partition_filter`)."""

    table: str
    version: int
    files: tuple[DeltaFile, ...]
    partition_columns: tuple[str, ...]
    partition_filter: dict[str, Any] = field(default_factory=dict)
    schema: dict | None = None                  # Delta's schemaString, parsed

    @property
    def num_records(self) -> int | None:
        counts = [f.num_records for f in self.files]
        return None if any(c is None for c in counts) else int(sum(counts))


@dataclass(frozen=True)
class Commit:
    version: int
    timestamp_ms: int                           # Delta's commit time (see `commits`)
    operation: str | None
    partitions_changed: frozenset[str]          # partition values whose data this commit changed


def _table(table: str) -> str:
    """Local tables as absolute paths; URIs as given (file paths keep the caller's scheme)."""
    return arrow_storage.local_path(table) if arrow_storage.is_local(table) else table.rstrip("/")


def _open(table: str, version: int | None = None):
    from deltalake import DeltaTable
    from deltalake.exceptions import DeltaError, TableNotFoundError

    options = arrow_storage.delta_rs_storage_options(table)
    try:
        return DeltaTable(arrow_storage.to_uri(table), version=version, storage_options=options)
    except TableNotFoundError as err:
        raise DeltaLogError(f"{table} is not a Delta table (no readable {DELTA_LOG}/): {err}") from err
    except (DeltaError, OSError) as err:
        if version is not None:
            latest = latest_version(table)
            if not 0 <= version <= latest:
                raise DeltaLogError(f"Delta table {table} has versions up to {latest}; "
                                    f"version {version} does not exist") from err
        raise DeltaLogError(f"cannot read version {version if version is not None else 'latest'} of "
                            f"Delta table {table}: {err}") from err


def is_delta_table(table: str) -> bool:
    from deltalake import DeltaTable

    try:
        return DeltaTable.is_deltatable(arrow_storage.to_uri(table), arrow_storage.delta_rs_storage_options(table))
    except Exception:  # noqa: BLE001 - unreachable store, bad URI: not a table we can read
        return False


def latest_version(table: str) -> int:
    return int(_open(_table(table)).version())


def snapshot(table: str, version: int | None = None,
             partition_filter: dict[str, Any] | None = None) -> DeltaSnapshot:
    """The files of `table` at `version` (default: latest) in partitions passing the filter.

    partition_filter: {column: value} (equality), {column: [values]} (any of), or
    {column: {"min": a, "max": b}} (inclusive string range: ISO dates sort as strings).
    """
    table = _table(table)
    if version is not None and version < 0:
        raise DeltaLogError(f"Delta table {table}: version {version} does not exist (versions start at 0)")
    delta = _open(table, version)
    metadata = delta.metadata()
    partition_columns = tuple(metadata.partition_columns)
    partition_filter = dict(partition_filter or {})
    if unknown := [c for c in partition_filter if c not in partition_columns]:
        raise DeltaLogError(f"Delta table {table} is partitioned by {list(partition_columns)}, "
                            f"not {unknown}; cannot select by {unknown[0]!r}")
    _check_readable_as_parquet(table, delta)

    actions = delta.get_add_actions(flatten=True)
    columns = {name: actions.column(name).to_pylist() for name in actions.column_names}
    records = columns.get("num_records") or [None] * len(columns["path"])
    files = []
    for i, relative in enumerate(columns["path"]):
        values = {c: columns[f"partition.{c}"][i] for c in partition_columns}
        if not passes(values, partition_filter):
            continue
        # Log paths are URL-encoded (RFC 2396); the file names on storage are not.
        path = relative if "://" in relative else arrow_storage.join(table, unquote(relative))
        files.append(DeltaFile(path=path, size=columns["size_bytes"][i], partition_values=values,
                               num_records=records[i]))
    return DeltaSnapshot(table=table, version=int(delta.version()), files=tuple(sorted(files, key=lambda f: f.path)),
                         partition_columns=partition_columns, partition_filter=partition_filter,
                         schema=json.loads(delta.schema().to_json()))


def _check_readable_as_parquet(table: str, delta) -> None:
    """Refuse tables whose rows are not simply the rows of their Parquet files."""
    protocol = delta.protocol()
    features = set(protocol.reader_features or [])
    if unknown := features - _READABLE_FEATURES:
        raise DeltaLogError(f"Delta table {table} needs reader features {sorted(unknown)} that a plain Parquet "
                            "reader does not honour; read it with Spark, or write a plain copy")
    mode = (delta.metadata().configuration or {}).get("delta.columnMapping.mode", "none")
    if mode != "none":
        raise DeltaLogError(f"Delta table {table} uses column mapping mode {mode!r}: its Parquet column names "
                            "differ from the table's; read it with Spark")
    if "deletionVectors" in features:
        with_dv = delta.deletion_vectors().read_all().column("filepath").to_pylist()
        if with_dv:
            raise DeltaLogError(
                f"Delta table {table} version {delta.version()} has deletion vectors on {len(with_dv)} files "
                f"(e.g. {with_dv[0]}): their Parquet files still hold deleted rows. Run "
                "`REORG TABLE ... APPLY (PURGE)` or disable delta.enableDeletionVectors, or read it with Spark")


def passes(values: dict[str, str | None], partition_filter: dict[str, Any]) -> bool:
    """Whether a file's partition values pass a filter (see `snapshot`)."""
    for column, wanted in partition_filter.items():
        value = values.get(column)
        if isinstance(wanted, dict):
            if value is None:
                return False
            if wanted.get("min") is not None and value < str(wanted["min"]):
                return False
            if wanted.get("max") is not None and value > str(wanted["max"]):
                return False
        elif isinstance(wanted, (list, tuple, set)):
            if value not in {str(w) for w in wanted}:
                return False
        elif value != str(wanted):
            return False
    return True


# --- time travel and commits ------------------------------------------------------------

def parse_timestamp(value: str | dt.datetime) -> dt.datetime:
    """An aware datetime (UTC when no zone is given)."""
    moment = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def version_at(table: str, timestamp: str | dt.datetime) -> int:
    """Delta's `timestampAsOf` rule: the newest version committed at or before `timestamp`,
    commit times as in `commits`. A timestamp after the last commit gives the latest
    version; one before the oldest commit still in the log is an error.

    Not delta-rs's `load_as_version(datetime)`: deltalake 1.6 does not make equal
    commit times increasing (common on S3, whose modification times have one-second
    resolution) and picks another version than Spark for them, and it answers version
    0 for a timestamp before the first commit where Spark refuses."""
    table = _table(table)
    moment = parse_timestamp(timestamp)
    target_ms = int(moment.timestamp() * 1000)
    found = commits(table)
    if not found:
        raise DeltaLogError(f"Delta table {table} has no commit files")
    eligible = [c.version for c in found if c.timestamp_ms <= target_ms]
    if not eligible:
        first = dt.datetime.fromtimestamp(found[0].timestamp_ms / 1000, dt.timezone.utc)
        raise DeltaLogError(f"timestamp {moment.isoformat()} is before the oldest commit still in the log of "
                            f"{table} (version {found[0].version} at {first.isoformat()})")
    return max(eligible)


@dataclass(frozen=True)
class _LogEntry:
    name: str
    path: str
    mtime_ms: int


def _log_entries(table: str) -> list[_LogEntry]:
    from pyarrow import fs as pafs

    filesystem, root = arrow_storage.filesystem(table)
    log_dir = f"{root}/{DELTA_LOG}"
    try:
        infos = filesystem.get_file_info(pafs.FileSelector(log_dir, allow_not_found=False))
    except (FileNotFoundError, OSError) as err:
        raise DeltaLogError(f"{table} is not a Delta table (cannot list {DELTA_LOG}/: {err})") from err
    return [_LogEntry(i.base_name, i.path, int(i.mtime.timestamp() * 1000) if i.mtime else 0)
            for i in infos if i.type == pafs.FileType.File]


def checkpoint_versions(table: str) -> list[int]:
    """Versions that have a checkpoint file in the log (any kind), oldest first."""
    return sorted({int(m.group(1)) for e in _log_entries(_table(table)) if (m := _CHECKPOINT_RE.match(e.name))})


def commits(table: str, partition_column: str = "dt") -> list[Commit]:
    """Every commit file still in the log, oldest first, with the values of
    `partition_column` whose data it changed (add/remove actions with dataChange, so an
    OPTIMIZE changes none) and its time: the commit's inCommitTimestamp when present,
    else its file's modification time, made strictly increasing as Delta does."""
    table = _table(table)
    filesystem, _ = arrow_storage.filesystem(table)
    entries = sorted(((int(m.group(1)), e) for e in _log_entries(table) if (m := _COMMIT_RE.match(e.name))),
                     key=lambda item: item[0])

    def read(entry: _LogEntry) -> tuple[str | None, int | None, frozenset[str]]:
        operation, in_commit_ms, changed = None, None, set()
        with filesystem.open_input_stream(entry.path) as stream:
            for line in stream.read().decode().splitlines():
                if not line.strip():
                    continue
                action = json.loads(line)
                if "commitInfo" in action:
                    operation = action["commitInfo"].get("operation")
                    in_commit_ms = action["commitInfo"].get("inCommitTimestamp")
                for kind in ("add", "remove"):
                    if kind in action and action[kind].get("dataChange", True):
                        value = (action[kind].get("partitionValues") or {}).get(partition_column)
                        if value is not None:
                            changed.add(value)
        return operation, in_commit_ms, frozenset(changed)

    # Remote stores answer each GET in tens of milliseconds: read a few at a time.
    with ThreadPoolExecutor(max_workers=8) as pool:
        contents = list(pool.map(read, [e for _, e in entries]))
    result: list[Commit] = []
    previous_ms = -1
    for (version, entry), (operation, in_commit_ms, changed) in zip(entries, contents):
        timestamp_ms = int(in_commit_ms) if in_commit_ms is not None else entry.mtime_ms
        timestamp_ms = max(timestamp_ms, previous_ms + 1)
        previous_ms = timestamp_ms
        result.append(Commit(version, timestamp_ms, operation, changed))
    return result
