"""The lake-maintenance stage (`ple maintain`): compact the lake's Delta tables (OPTIMIZE) and VACUUM them, keeping the files
of every table version a registered model pins (its evaluation, training, validation and
vocabulary snapshots), unless --force.

    ple maintain [--data-dir ple_data] [--tables examples quarantine] [--target-file-mb 128]
                 [--retention-hours 168] [--no-retention-check] [--no-compact] [--no-vacuum] [--force]

Prints, per table, the live files, files per partition, files and bytes on disk before and
after, and which pins raised the retention (or, with --force, which pinned versions lost
files); writes the same as JSON to <data>/reports/maintain/. Exit 1 when a table cannot be
maintained (the message says which and why). The Delta primitives (retention that keeps pins,
OPTIMIZE, VACUUM) are ple_runtime/maintenance.py.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from pydantic import Field, field_validator

from ple_runtime.config import JobConfig, Location
from ple_runtime.errors import InputError
from ple_runtime.lake import Lake, default_data_dir

LAKE_TABLES = ("examples", "quarantine", "data_quality", "vocabulary", "backfill_metrics")


class MaintainConfig(JobConfig):
    """Compact and vacuum the lake's Delta tables, keeping the versions registered models pin."""

    data_dir: Location = Field(default_factory=default_data_dir, description="data root: <data>/lake is maintained")
    tables: list[str] = Field(list(LAKE_TABLES), description=f"lake tables to maintain (of {list(LAKE_TABLES)}; "
                                                             "absent ones are skipped)")
    target_file_mb: int = Field(128, ge=1, description="compaction's target file size "
                                                       "(spark.databricks.delta.optimize.maxFileSize)")
    retention_hours: float = Field(168.0, ge=0, description="VACUUM keeps files removed less than this many hours ago")
    retention_check: bool = Field(True, description="Delta's check that refuses a retention shorter than the "
                                                    "table's delta.deletedFileRetentionDuration (7 days)")
    compact: bool = Field(True, description="run OPTIMIZE (compaction) on each table")
    vacuum: bool = Field(True, description="run VACUUM on each table")
    force: bool = Field(False, description="vacuum with --retention-hours even where that deletes files a "
                                           "registered model's pinned version needs (it can no longer be "
                                           "evaluated on that version)")
    tracking_uri: str | None = Field(None, description="MLflow registry whose models' pins are kept "
                                                       "(default: $MLFLOW_TRACKING_URI or <data>/registry)")
    out: Location | None = Field(None, description="report JSON file (default <data>/reports/maintain/<time>.json)")

    @field_validator("tables")
    @classmethod
    def _known_tables(cls, tables: list[str]) -> list[str]:
        if unknown := [t for t in tables if t not in LAKE_TABLES]:
            raise ValueError(f"unknown lake tables {unknown}; valid: {list(LAKE_TABLES)}")
        return tables


def run(config: MaintainConfig, spark=None) -> dict:
    """Maintain each existing table; returns the report (also written to JSON)."""
    from model_registry.pins import registered_pins
    from model_registry.registry import registry_settings
    from ple_runtime import delta_log
    from ple_runtime.lineage import run_context, write_json
    from ple_runtime.spark import get_spark

    lake = Lake(config.data_dir)
    tables = {name: getattr(lake, name) for name in config.tables}
    tables = {name: path for name, path in tables.items() if delta_log.is_delta_table(path)}
    if not tables:
        raise InputError(f"no Delta table of {config.tables} under {lake.root}/lake: nothing to maintain "
                         "(check --data-dir)")
    pins = registered_pins(registry_settings(config.data_dir, config.tracking_uri)) if config.vacuum else []
    spark = spark or get_spark("ple-maintain")
    report = {"format": "ple-maintain/1", "config": config.model_dump(mode="json"), **run_context(), "tables": {}}
    for name, path in tables.items():
        report["tables"][name] = maintain_table(spark, name, path, [p for p in pins if p.table == path], config)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"-{int(time.time() * 1e6) % 1_000_000:06d}"
    out = Path(config.out) if config.out else Path(lake.reports, "maintain", f"maintain-{stamp}.json")
    report["report_path"] = str(write_json(out, report))
    return report


def maintain_table(spark, name: str, path: str, pins, config: MaintainConfig) -> dict:
    """Compaction then VACUUM of one table; its figures before/after and what happened to its pins."""
    from ple_runtime import maintenance

    started = time.perf_counter()
    before = maintenance.table_files(path)
    record: dict = {"table": path, "before": before.to_dict()}
    if config.compact:
        record["compaction"] = maintenance.compact(spark, path, config.target_file_mb * 2**20)
    if config.vacuum:
        retention = maintenance.retention_keeping(path, pins, config.retention_hours, config.force)
        try:
            maintenance.vacuum(spark, path, retention.hours, config.retention_check)
        except Exception as error:  # noqa: BLE001 - Delta's retention check raises IllegalArgumentException
            if "retention" not in str(error).lower():
                raise
            raise InputError(f"VACUUM of {path} with a retention of {retention.hours:g} h was refused by Delta's "
                             f"retention check (shorter than the table's delta.deletedFileRetentionDuration); "
                             "raise --retention-hours or pass --no-retention-check") from None
        record["vacuum"] = {"requested_hours": retention.requested_hours, "retention_hours": retention.hours,
                            "kept_for": [p.describe() for p in retention.kept_for],
                            "lost": _lost_pins(retention.exposed)}
    record["after"] = maintenance.table_files(path).to_dict()
    record["seconds"] = round(time.perf_counter() - started, 1)
    _print_table(name, record)
    return record


def _lost_pins(exposed) -> list[dict]:
    """Forced: the pinned versions whose files the VACUUM deleted."""
    from ple_runtime.maintenance import pinned_files_missing

    lost = []
    for pin in exposed:
        needed, gone = pinned_files_missing(pin)
        if gone:
            lost.append({"pin": pin.describe(), "version": pin.version, "files_needed": needed,
                         "files_deleted": len(gone)})
    return lost


def _print_table(name: str, record: dict) -> None:
    before, after = record["before"], record["after"]
    print(f"{name}: v{before['version']} -> v{after['version']}, {before['partitions']} partitions; "
          f"live files {before['live_files']} -> {after['live_files']} "
          f"({before['files_per_partition']} -> {after['files_per_partition']} per partition); "
          f"on disk {before['disk_files']} -> {after['disk_files']} files, "
          f"{before['disk_bytes']:,} -> {after['disk_bytes']:,} bytes ({record['seconds']} s)")
    vacuum = record.get("vacuum")
    if vacuum and vacuum["kept_for"]:
        print(f"  retention raised from {vacuum['requested_hours']:g} h to {vacuum['retention_hours']:g} h to keep "
              f"the files of: {'; '.join(vacuum['kept_for'])} (--force vacuums them anyway)")
    for lost in (vacuum or {}).get("lost", []):
        print(f"  WARNING (--force): {lost['pin']}: {lost['files_deleted']} of its {lost['files_needed']} files "
              "were deleted; that model can no longer be evaluated on that version", file=sys.stderr)
