"""What `ple evaluate` does, callable from other jobs (publish, backfill) and tests."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ple_runtime.config import config_as_dict
from ple_runtime.lineage import run_context, write_json

from .evaluate import ScoringOptions, evaluate_on_snapshot, seesaw_points
from .models import ResolvedModel, find_model_files, load_model_ref
from .registry import RegistrySettings, registry_settings, version_by_alias
from .report import evaluation_report
from .snapshot import MissingPartitionError, SnapshotError, resolve_date_snapshot


class EvaluationFailed(RuntimeError):
    """The evaluation cannot run (missing date, missing model...); the message says what to fix."""


def settings_from(config) -> RegistrySettings:
    return registry_settings(config.data_dir, config.tracking_uri, config.registered_model)


def load_or_fail(ref: str, settings: RegistrySettings, workdir: Path, device: str) -> ResolvedModel:
    try:
        return load_model_ref(ref, settings, workdir, device)
    except (LookupError, FileNotFoundError, ValueError) as error:
        raise EvaluationFailed(f"model {ref!r}: {error}") from None


def load_production(settings: RegistrySettings, alias: str, workdir: Path,
                    device: str) -> tuple[ResolvedModel | None, str | None]:
    """The published model, or (None, why there is none)."""
    if not settings.exists():
        return None, f"no registry at {settings.tracking_uri} yet"
    version = version_by_alias(settings, alias)
    if version is None:
        return None, f"registered model {settings.model_name!r} has no @{alias} alias"
    return load_model_ref(f"models:/{settings.model_name}/{version.version}", settings, workdir, device), None


def resolve_snapshot_or_fail(table: str, date, version=None, timestamp=None, partition_column: str = "dt"):
    try:
        return resolve_date_snapshot(table, date, version=version, timestamp=timestamp,
                                     partition_column=partition_column)
    except (MissingPartitionError, SnapshotError) as error:
        raise EvaluationFailed(str(error)) from None


def summary_lines(record: dict[str, Any]) -> list[str]:
    lines = []
    snapshot = record["snapshot"]
    lines.append(f"{record['model']['label']} on {snapshot['partition_column']}={snapshot['date']} "
                 f"version {snapshot['version']} ({snapshot['rows']} rows)")
    gain = (record.get("mtl_gain") or {}).get("gain", {})
    comparison = record.get("production_comparison") or {}
    for task, metrics in record["model"]["tasks"].items():
        shown = ", ".join(f"{k}={metrics[k]:.4f}" for k in ("auc", "logloss", "mse") if k in metrics
                          and isinstance(metrics[k], float) and math.isfinite(metrics[k]))
        extra = ""
        if task in gain and gain[task] is not None:
            extra += f"; MTL gain {gain[task]:+.4f}"
        if task in comparison:
            metric = "auc" if "auc" in comparison[task] else "mse"
            extra += f"; vs production {comparison[task][metric]['improvement']:+.4f} ({metric})"
        lines.append(f"{task}: {shown} (n={metrics.get('count')}){extra}")
    return lines


def run_evaluation(config, workdir: Path, spark=None) -> dict[str, Any]:
    """Evaluate per an EvaluateConfig; writes metrics.json + report.html; returns paths and the record."""
    device = config.resolved_device
    settings = settings_from(config)
    snapshot = resolve_snapshot_or_fail(config.table_path, config.date, config.version, config.timestamp,
                                        config.partition_column)
    candidate = load_or_fail(config.model, settings, workdir / "candidate", device)
    production, note = (None, "comparison with the published model turned off")
    if config.with_production:
        try:
            production, note = load_production(settings, config.production_alias, workdir / "production", device)
        except Exception as error:  # noqa: BLE001 (a broken registry must not block evaluating a run)
            production, note = None, f"could not load the published model: {type(error).__name__}: {error}"
    try:
        single_task = [load_or_fail(str(p), settings, workdir, device) for p in find_model_files(config.single_task_runs)]
    except FileNotFoundError as error:
        raise EvaluationFailed(f"single-task runs: {error}") from None
    compare = [load_or_fail(ref, settings, workdir / f"compare{i}", device) for i, ref in enumerate(config.compare)]
    options = ScoringOptions(config.batch_size, device, config.calibration_bins, config.reader)
    try:
        record = evaluate_on_snapshot(snapshot, candidate, production=production, production_note=note,
                                      single_task=single_task, compare=compare, options=options, spark=spark)
    except (KeyError, ValueError, SnapshotError) as error:
        raise EvaluationFailed(str(error).strip("'\"")) from None
    record["config"] = config_as_dict(config)
    record["lineage"] = {"run": run_context(), "model_training_run": _training_lineage(candidate)}
    out = Path(config.out) if config.out else default_out(config, candidate, snapshot.version)
    out.mkdir(parents=True, exist_ok=True)
    metrics_path = write_json(out / "metrics.json", record)
    report_path = out / "report.html"
    tmp = report_path.with_suffix(".html.tmp")
    tmp.write_text(evaluation_report(record, seesaw_points(record)))
    tmp.replace(report_path)
    return {"metrics_path": metrics_path, "report_path": report_path, "record": record,
            "summary": summary_lines(record)}


def default_out(config, candidate: ResolvedModel, version: int | None) -> Path:
    from ple_runtime.lake import Lake

    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in candidate.model_id)
    return Path(Lake(config.data_dir).reports, "evaluate", name, f"{config.date}-v{version}")


def _training_lineage(model: ResolvedModel) -> dict[str, Any]:
    """What the model was trained on, from its run record or model.pt metadata."""
    lineage: dict[str, Any] = {}
    metadata = model.loaded.metadata or {}
    for key in ("snapshot", "validation_snapshot", "code", "epoch"):
        if key in metadata:
            lineage[key] = metadata[key]
    if model.run_record:
        record = model.run_record
        for key in ("delta_version", "train_snapshot", "validation_snapshot", "code_version", "config"):
            if key in record:
                lineage[f"run_record.{key}"] = record[key]
    return lineage
