"""Lake maintenance: compaction (Delta OPTIMIZE) and VACUUM of the lake's tables, keeping the
files of versions that registered models pin (docs/PIPELINE.md, "Lake maintenance").

Daily appends write one or more small files per partition and table; re-extracts and the
vocabulary MERGE leave removed files behind. OPTIMIZE rewrites each partition's small files
into files of up to a target size (a commit with dataChange=false: the rows, and the version
evaluation records for a date, do not change). VACUUM deletes the files that no version newer
than the retention still references. Delta cannot keep chosen files through a VACUUM, so a
pinned version is protected by the retention: it is raised, per table, until every file a
pinned version needs was removed after the cut-off (`retention_keeping`).
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from dataclasses import dataclass, field

from ple_runtime import arrow_storage, delta_log

MARGIN_HOURS = 1.0  # a remove's deletionTimestamp is taken before its commit file is written


@dataclass(frozen=True)
class Pin:
    """One table version a registered model's lineage names."""

    table: str
    version: int
    model: str          # "<registered name> v<version>"
    role: str           # evaluation | train | validation | vocabulary

    def describe(self) -> str:
        return f"{self.model} ({self.role}) pins v{self.version}"


@dataclass(frozen=True)
class TableFiles:
    """What a table holds on storage: live files (latest version) and every data file on disk."""

    version: int
    live_files: int
    live_bytes: int
    partitions: int
    disk_files: int
    disk_bytes: int

    @property
    def files_per_partition(self) -> float:
        return self.live_files / self.partitions if self.partitions else 0.0

    def to_dict(self) -> dict:
        return {"version": self.version, "live_files": self.live_files, "live_bytes": self.live_bytes,
                "partitions": self.partitions, "files_per_partition": round(self.files_per_partition, 2),
                "disk_files": self.disk_files, "disk_bytes": self.disk_bytes}


def table_files(table: str) -> TableFiles:
    from pyarrow import fs as pafs

    latest = delta_log.snapshot(table)
    partitions = Counter(tuple(sorted(f.partition_values.items())) for f in latest.files)
    filesystem, root = arrow_storage.filesystem(table)
    on_disk = [info for info in filesystem.get_file_info(pafs.FileSelector(root, recursive=True))
               if info.type == pafs.FileType.File and f"/{delta_log.DELTA_LOG}/" not in info.path
               and info.base_name.endswith(".parquet")]
    return TableFiles(version=latest.version, live_files=len(latest.files),
                      live_bytes=sum(f.size or 0 for f in latest.files), partitions=len(partitions),
                      disk_files=len(on_disk), disk_bytes=sum(info.size or 0 for info in on_disk))


def missing_files(paths) -> list[str]:
    """The paths (local or URIs) that no longer exist on storage."""
    from pyarrow import fs as pafs

    gone = []
    for path in paths:
        filesystem, inside = arrow_storage.filesystem(path)
        if filesystem.get_file_info(inside).type == pafs.FileType.NotFound:
            gone.append(path)
    return gone


def pinned_files_missing(pin: Pin) -> tuple[int, list[str]]:
    """(files the pinned version needs, those of them that are gone)."""
    files = [f.path for f in delta_log.snapshot(pin.table, pin.version).files]
    return len(files), missing_files(files)


@dataclass
class Retention:
    """The retention VACUUM runs with on one table, and the pins that raised it."""

    requested_hours: float
    hours: float
    kept_for: list[Pin] = field(default_factory=list)
    exposed: list[Pin] = field(default_factory=list)   # --force: pins whose files this retention may delete


def retention_keeping(table: str, pins: list[Pin], requested_hours: float, force: bool,
                      now: dt.datetime | None = None) -> Retention:
    """The retention that keeps every file `pins` need: a file a version v needs can only be
    removed by a commit after v, so keeping what was removed since commit v+1 keeps all of v's."""
    now = now or dt.datetime.now(dt.timezone.utc)
    commits = delta_log.commits(table)
    result = Retention(requested_hours, requested_hours)
    for pin in sorted(pins, key=lambda p: p.version):
        later = [c for c in commits if c.version > pin.version]
        if not later:
            continue  # the latest version: VACUUM never deletes live files
        removed_since_h = (now.timestamp() * 1000 - later[0].timestamp_ms) / 3_600_000
        needed = math.ceil((removed_since_h + MARGIN_HOURS) * 100) / 100
        if needed <= requested_hours:
            continue
        if force:
            result.exposed.append(pin)
        else:
            result.hours = max(result.hours, needed)
            result.kept_for.append(pin)
    return result


def compact(spark, table: str, target_file_bytes: int) -> dict:
    """Delta OPTIMIZE (bin-packing compaction) of every partition, files up to the target size."""
    from delta.tables import DeltaTable

    spark.conf.set("spark.databricks.delta.optimize.maxFileSize", str(target_file_bytes))
    metrics = DeltaTable.forPath(spark, table).optimize().executeCompaction().collect()[0]["metrics"]
    return {"files_added": int(metrics["numFilesAdded"]), "files_removed": int(metrics["numFilesRemoved"])}


def vacuum(spark, table: str, retention_hours: float, retention_check: bool) -> None:
    """Delta VACUUM with a retention; Delta's own check refuses one shorter than the table's
    delta.deletedFileRetentionDuration (7 days) unless `retention_check` is off."""
    from delta.tables import DeltaTable

    key = "spark.databricks.delta.retentionDurationCheck.enabled"
    previous = spark.conf.get(key, "true")
    spark.conf.set(key, str(retention_check).lower())
    try:
        DeltaTable.forPath(spark, table).vacuum(retention_hours)
    finally:
        spark.conf.set(key, previous)
