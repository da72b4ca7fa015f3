"""Pin a table to an exact set of Parquet files before training starts.

A Delta table is read from its transaction log (`_delta_log/`) directly, without
Spark: the newest checkpoint at or below the chosen version, then the JSON
commits after it, replaying `add`/`remove` actions. That yields the files of ONE
version, which every worker then reads by path; a commit that lands while the
run is going changes nothing the run reads (Delta never rewrites a data file
in place, and VACUUM keeps removed files for the retention period, 7 days by
default). Why not Spark (`versionAsOf` + `inputFiles()`): it needs a JVM on the
driver (~10 s and ~1 GB), cannot run inside a Horovod worker, and gives the
same list; `tests/training/test_snapshot.py` checks that it does.

A plain Parquet folder has no versions: its files are listed (sorted) and the
list is hashed, so a run record still says exactly what was read.

Partition values (`dt`) live in the directory names / the Delta log, not in the
data files.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import unquote, urlparse

DELTA_LOG = "_delta_log"
_COMMIT_RE = re.compile(r"^(\d{20})\.json$")
_CHECKPOINT_RE = re.compile(r"^(\d{20})\.checkpoint(?:\.(\d{10})\.(\d{10}))?\.parquet$")
_V2_CHECKPOINT_RE = re.compile(r"^(\d{20})\.checkpoint\.[0-9a-fA-F-]{36}\.(json|parquet)$")

# Reader features whose data files can be read as plain Parquet (checked further per table below).
_READABLE_FEATURES = {"timestampNtz", "vacuumProtocolCheck", "deletionVectors", "columnMapping",
                      "v2Checkpoint", "domainMetadata", "checkpointProtection"}


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


def _local_path(uri_or_path: str) -> str:
    if uri_or_path.startswith("file:"):
        return unquote(urlparse(uri_or_path).path)
    return uri_or_path


def is_delta_table(path: str) -> bool:
    return Path(_local_path(path), DELTA_LOG).is_dir()


# --- Delta -------------------------------------------------------------------

@dataclass
class DeltaLogState:
    version: int
    files: dict[str, dict]                   # path (as in the log) -> add action
    metadata: dict
    protocol: dict


def _log_listing(table: str) -> tuple[dict[int, str], dict[int, list[str]], set[int]]:
    log_dir = Path(table, DELTA_LOG)
    if not log_dir.is_dir():
        raise SnapshotError(f"{table} is not a Delta table (no {DELTA_LOG}/ folder)")
    commits: dict[int, str] = {}
    checkpoint_parts: dict[int, dict[tuple[int, int], str]] = {}
    v2_checkpoints: set[int] = set()
    for name in os.listdir(log_dir):
        if match := _COMMIT_RE.match(name):
            commits[int(match.group(1))] = str(log_dir / name)
        elif match := _CHECKPOINT_RE.match(name):
            part, parts = int(match.group(2) or 1), int(match.group(3) or 1)
            checkpoint_parts.setdefault(int(match.group(1)), {})[(part, parts)] = str(log_dir / name)
        elif match := _V2_CHECKPOINT_RE.match(name):
            v2_checkpoints.add(int(match.group(1)))
    # A checkpoint is usable only when all of its parts are there.
    checkpoints: dict[int, list[str]] = {}
    for version, found in checkpoint_parts.items():
        for parts in {p for _, p in found}:
            files = [found.get((i, parts)) for i in range(1, parts + 1)]
            if all(files):
                checkpoints[version] = files  # type: ignore[assignment]
    return commits, checkpoints, v2_checkpoints


def latest_delta_version(table: str) -> int:
    commits, checkpoints, _ = _log_listing(_local_path(table))
    versions = list(commits) + list(checkpoints)
    if not versions:
        raise SnapshotError(f"Delta table {table} has an empty {DELTA_LOG}/ (no commits)")
    return max(versions)


def _read_checkpoint(files: list[str]) -> list[dict]:
    import pyarrow.parquet as pq

    actions: list[dict] = []
    for file in files:
        available = set(pq.read_schema(file).names)
        columns = [c for c in ("add", "remove", "metaData", "protocol") if c in available]
        for row in pq.read_table(file, columns=columns).to_pylist():
            for key in columns:
                value = row.get(key)
                if value is not None:
                    actions.append({key: _maps_to_dicts(value)})
    return actions


def _maps_to_dicts(value: Any) -> Any:
    # pyarrow returns Parquet MAP values as lists of (key, value) tuples.
    if isinstance(value, dict):
        return {k: _maps_to_dicts(v) for k, v in value.items()}
    if isinstance(value, list) and value and all(isinstance(i, tuple) and len(i) == 2 for i in value):
        return {k: v for k, v in value}
    return value


def _read_commit(path: str) -> Iterable[dict]:
    with open(path) as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def read_delta_log(table: str, version: int | None = None) -> DeltaLogState:
    """Replay the log up to `version` (default: the latest) into the set of live files."""
    table = _local_path(table)
    commits, checkpoints, v2_checkpoints = _log_listing(table)
    latest = max(list(commits) + list(checkpoints), default=None)
    if latest is None:
        raise SnapshotError(f"Delta table {table} has no commits")
    version = latest if version is None else int(version)
    if version < 0 or version > latest:
        raise SnapshotError(f"Delta table {table} has versions 0..{latest}; version {version} does not exist")

    start = max((v for v in checkpoints if v <= version), default=None)
    files: dict[str, dict] = {}
    metadata: dict = {}
    protocol: dict = {}
    if start is not None:
        for action in _read_checkpoint(checkpoints[start]):
            if "add" in action:
                files[action["add"]["path"]] = action["add"]
            elif "metaData" in action:
                metadata = action["metaData"]
            elif "protocol" in action:
                protocol = action["protocol"]
        first = start + 1
    else:
        first = 0
    missing = [v for v in range(first, version + 1) if v not in commits]
    if missing:
        hint = (" (this table uses V2 checkpoints, which this reader does not parse)"
                if any(v <= version for v in v2_checkpoints) else "")
        raise SnapshotError(
            f"Delta log of {table} lacks commits {missing[:5]} needed to rebuild version {version} and has no "
            f"usable checkpoint before them{hint}; pick a newer --delta-version")
    for v in range(first, version + 1):
        for action in _read_commit(commits[v]):
            if "add" in action:
                files[action["add"]["path"]] = action["add"]
            elif "remove" in action:
                files.pop(action["remove"]["path"], None)
            elif "metaData" in action:
                metadata = action["metaData"]
            elif "protocol" in action:
                protocol = action["protocol"]
    state = DeltaLogState(version=version, files=files, metadata=metadata, protocol=protocol)
    _check_readable_as_parquet(table, state)
    return state


def _check_readable_as_parquet(table: str, state: DeltaLogState) -> None:
    """Refuse tables whose rows are not simply the rows of their Parquet files."""
    features = set(state.protocol.get("readerFeatures") or [])
    unknown = features - _READABLE_FEATURES
    if unknown:
        raise SnapshotError(f"Delta table {table} needs reader features {sorted(unknown)} that this reader "
                            "does not support; read it with Spark and write a plain copy")
    mode = (state.metadata.get("configuration") or {}).get("delta.columnMapping.mode", "none")
    if mode != "none":
        raise SnapshotError(f"Delta table {table} uses column mapping mode {mode!r}: Parquet column names "
                            "differ from the table's; not supported")
    with_dv = [p for p, a in state.files.items() if a.get("deletionVector")]
    if with_dv:
        raise SnapshotError(
            f"Delta table {table} version {state.version} has deletion vectors on {len(with_dv)} files "
            f"(e.g. {with_dv[0]}): their Parquet files still hold deleted rows. Run "
            "`REORG TABLE ... APPLY (PURGE)` or disable delta.enableDeletionVectors")


def _delta_file(table: str, action: dict) -> SnapshotFile:
    raw = action["path"]
    path = _local_path(raw) if "://" in raw or raw.startswith("file:") else str(Path(table, unquote(raw)))
    num_records = None
    if action.get("stats"):
        try:
            num_records = json.loads(action["stats"]).get("numRecords")
        except (TypeError, ValueError):
            num_records = None
    return SnapshotFile(path=path, size=action.get("size"), partition_values=dict(action.get("partitionValues") or {}),
                        num_records=num_records)


def resolve_delta_snapshot(table: str, version: int | None = None,
                           partition_filter: dict[str, Any] | None = None) -> Snapshot:
    """Files of `table` at `version` (default latest), keeping partitions that pass the filter.

    partition_filter: {column: value} (equality), {column: [values]} (any of),
    or {column: {"min": a, "max": b}} (inclusive string range; ISO dates sort as strings).
    """
    table = str(Path(_local_path(table)).resolve())
    state = read_delta_log(table, version)
    partition_columns = tuple(state.metadata.get("partitionColumns") or ())
    partition_filter = dict(partition_filter or {})
    for column in partition_filter:
        if column not in partition_columns:
            raise SnapshotError(f"Delta table {table} is partitioned by {list(partition_columns)}, "
                                f"not {column!r}; cannot select {column}")
    files = [_delta_file(table, a) for a in state.files.values()]
    files = sorted((f for f in files if _passes(f.partition_values, partition_filter)), key=lambda f: f.path)
    schema = json.loads(state.metadata["schemaString"]) if state.metadata.get("schemaString") else None
    return Snapshot(table=table, format="delta", version=state.version, files=tuple(files),
                    partition_filter=partition_filter, schema=schema, partition_columns=partition_columns)


def _passes(values: dict[str, str | None], partition_filter: dict[str, Any]) -> bool:
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


# --- plain Parquet --------------------------------------------------------------

def resolve_parquet_snapshot(path: str, partition_filter: dict[str, Any] | None = None) -> Snapshot:
    """Every `*.parquet` file under `path` (or `path` itself), skipping `_*`/`.*` entries."""
    root = Path(_local_path(path)).resolve()
    if root.is_file():
        candidates = [root]
        table = str(root.parent)
    elif root.is_dir():
        candidates = [p for p in root.rglob("*") if p.is_file() and _is_data_file(p.relative_to(root))]
        table = str(root)
    else:
        raise SnapshotError(f"{path} does not exist")
    files = []
    for file in sorted(candidates):
        parts = file.relative_to(table).parts[:-1]
        values = {k: unquote(v) for k, v in (p.split("=", 1) for p in parts if "=" in p)}
        files.append(SnapshotFile(path=str(file), size=file.stat().st_size, partition_values=values))
    partition_filter = dict(partition_filter or {})
    files = [f for f in files if _passes(f.partition_values, partition_filter)]
    partition_columns = tuple(sorted({k for f in files for k in f.partition_values}))
    return Snapshot(table=table, format="parquet", version=None, files=tuple(files),
                    partition_filter=partition_filter, partition_columns=partition_columns)


def _is_data_file(relative: Path) -> bool:
    return relative.suffix == ".parquet" and not any(p.startswith(("_", ".")) for p in relative.parts)


def resolve_snapshot(table: str, partition_filter: dict[str, Any] | None = None,
                     version: int | None = None) -> Snapshot:
    """Delta (pinned at `version`, default latest) or plain Parquet, detected from the folder."""
    if is_delta_table(table):
        return resolve_delta_snapshot(table, version, partition_filter)
    if version is not None:
        raise SnapshotError(f"{table} is not a Delta table; --delta-version does not apply")
    return resolve_parquet_snapshot(table, partition_filter)


def date_range_filter(column: str, start: dt.date, end: dt.date) -> dict[str, Any]:
    return {column: {"min": start.isoformat(), "max": end.isoformat()}}


def resolve_with_spark(spark, table: str, version: int, partition_filter_sql: str | None = None) -> list[str]:
    """The same file list through Spark + Delta (`versionAsOf` + `inputFiles()`); used to cross-check."""
    frame = spark.read.format("delta").option("versionAsOf", version).load(table)
    if partition_filter_sql:
        frame = frame.where(partition_filter_sql)
    return sorted(_local_path(f) for f in frame.inputFiles())
