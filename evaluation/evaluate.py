"""One evaluation: a candidate model (and the models it is compared with) on one date snapshot.

`evaluate_on_snapshot` reads the snapshot once and scores every model on the
same rows:
- the candidate: per-task metrics, calibration curves, gate usage;
- the published model (registry alias, default `production`) when there is one;
- single-task baselines (model name `single_task`) trained on the same data:
  their metric per task gives the MTL gain of Eq. 11
  (`ple_model.metrics.mtl_gain`; AUC for binary tasks, MSE reversed for
  regression; positive = the multi-task model is better);
- any other models named with `compare` (one more point on the seesaw plot).
A model that cannot be scored on this table (a column its spec needs is
missing) is reported with its error instead of failing the evaluation; only the
candidate must score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

import pandas as pd

from ple_model.metrics import GAIN_METRIC, mtl_gain

from .models import ResolvedModel
from .scoring import COMPARED_METRICS, ModelScores, needed_columns, score_model
from .snapshot import DateSnapshot, read_date_snapshot

EVALUATION_FORMAT = "ple-evaluation/1"


@dataclass
class ScoringOptions:
    batch_size: int = 8192
    device: str = "cpu"
    calibration_bins: int = 10
    reader: str = "auto"


def snapshot_columns(snapshot: DateSnapshot) -> set[str]:
    import pyarrow.parquet as pq

    return set(pq.read_schema(snapshot.files[0]).names) if snapshot.files else set()


def model_entry(model: ResolvedModel, scores: ModelScores | None, error: str | None = None) -> dict[str, Any]:
    return {"identity": model.identity(), "label": model.label, "model_id": model.model_id,
            "tasks": scores.tasks if scores else {}, "gates": scores.gates if scores else None,
            "rows": scores.rows if scores else 0, "error": error}


def score_models(frame: pd.DataFrame, models: Iterable[ResolvedModel], options: ScoringOptions,
                 available: set[str]) -> list[dict[str, Any]]:
    entries = []
    for model in models:
        missing = [c for c in needed_columns(model.spec) if c not in available]
        if missing:
            entries.append(model_entry(model, None, f"the table lacks columns {missing} that this model's spec needs"))
            continue
        try:
            scores = score_model(model.loaded.model, model.spec, frame, options.batch_size, options.device,
                                 options.calibration_bins)
            entries.append(model_entry(model, scores))
        except Exception as error:  # noqa: BLE001 (a baseline failing must not hide the candidate's figures)
            entries.append(model_entry(model, None, f"{type(error).__name__}: {error}"))
    return entries


def single_task_baselines(candidate: dict[str, Any], baselines: list[dict[str, Any]], spec) -> dict[str, Any]:
    """Per candidate task, the first single-task model that predicts it; then Eq. 11."""
    by_task: dict[str, dict[str, Any]] = {}
    sources: dict[str, str] = {}
    ignored = []
    for entry in baselines:
        if entry["error"]:
            ignored.append({"model": entry["label"], "reason": entry["error"]})
            continue
        if entry["identity"]["model_name"] != "single_task":
            ignored.append({"model": entry["label"], "reason": f"model {entry['identity']['model_name']!r} is "
                                                                "not a single-task model"})
            continue
        for task, metrics in entry["tasks"].items():
            if task in candidate["tasks"] and task not in by_task:
                by_task[task] = metrics
                sources[task] = entry["label"]
    gain = mtl_gain(candidate["tasks"], by_task, spec) if by_task else {}
    return {"gain": {t: (g if math.isfinite(g) else None) for t, g in gain.items()},
            "metric": {t.name: GAIN_METRIC[t.type][0] for t in spec.tasks},
            "single_task_metric": {t: by_task[t][GAIN_METRIC[spec.task(t).type][0]] for t in by_task},
            "single_task_model": sources, "tasks_without_baseline": [t for t in spec.task_names if t not in by_task],
            "ignored": ignored}


def compare_metrics(candidate: dict[str, Any], reference: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per task and compared metric: both values, the difference, and whether the candidate is better."""
    comparison: dict[str, dict[str, dict[str, Any]]] = {}
    for task, metrics in candidate["tasks"].items():
        other = reference["tasks"].get(task)
        if other is None:
            continue
        kind = "binary" if "auc" in metrics else "regression"
        rows = {}
        for metric, higher_is_better in COMPARED_METRICS[kind].items():
            mine, theirs = metrics.get(metric, math.nan), other.get(metric, math.nan)
            difference = mine - theirs
            rows[metric] = {"candidate": mine, "reference": theirs, "difference": difference,
                            "higher_is_better": higher_is_better,
                            "improvement": difference if higher_is_better else -difference}
        comparison[task] = rows
    return comparison


def evaluate_on_snapshot(snapshot: DateSnapshot, candidate: ResolvedModel, *, production: ResolvedModel | None = None,
                         production_note: str | None = None, single_task: list[ResolvedModel] = (),
                         compare: list[ResolvedModel] = (), options: ScoringOptions | None = None,
                         spark=None, frame: pd.DataFrame | None = None) -> dict[str, Any]:
    """Score every model on the snapshot's rows; returns the evaluation record (JSON-safe)."""
    options = options or ScoringOptions()
    available = snapshot_columns(snapshot)
    wanted = needed_columns(candidate.spec)
    for other in [production, *single_task, *compare]:
        if other is not None:
            wanted += [c for c in needed_columns(other.spec) if c in available]
    if frame is None:
        frame = read_date_snapshot(snapshot, list(dict.fromkeys(wanted)), options.reader, spark)
    if len(frame) == 0:
        raise ValueError(f"{snapshot.table} {snapshot.partition_column}={snapshot.date} version {snapshot.version} "
                         "has no rows")
    (candidate_entry,) = score_models(frame, [candidate], options, available | set(frame.columns))
    if candidate_entry["error"]:
        raise ValueError(f"cannot score {candidate.label}: {candidate_entry['error']}")
    record: dict[str, Any] = {"format": EVALUATION_FORMAT, "snapshot": snapshot.summary(), "model": candidate_entry}
    if production is not None:
        (production_entry,) = score_models(frame, [production], options, available)
        record["production"] = production_entry
        if not production_entry["error"]:
            record["production_comparison"] = compare_metrics(candidate_entry, production_entry)
    else:
        record["production"] = None
        record["production_note"] = production_note
    baselines = score_models(frame, single_task, options, available)
    record["single_task"] = baselines
    record["mtl_gain"] = single_task_baselines(candidate_entry, baselines, candidate.spec) if baselines else None
    record["compare"] = score_models(frame, compare, options, available)
    record["spec"] = candidate.spec.model_dump(mode="json")
    return record


def seesaw_points(record: dict[str, Any]) -> list[dict[str, Any]]:
    """One point per model (as in the paper): {label, kind, metrics {task: gain metric value}}."""
    from ple_model import ModelSpec

    spec = ModelSpec.model_validate(record["spec"])
    metric_of = {t.name: GAIN_METRIC[t.type][0] for t in spec.tasks}

    def point(entry, kind):
        values = {t: entry["tasks"][t].get(metric_of[t]) for t in metric_of if t in entry["tasks"]}
        return {"label": entry["label"], "kind": kind, "metrics": values}

    points = [point(record["model"], "candidate")]
    if record.get("production") and not record["production"]["error"]:
        points.append(point(record["production"], "production"))
    for entry in record.get("compare") or []:
        if not entry["error"]:
            points.append(point(entry, "compare"))
    gain = record.get("mtl_gain")
    if gain and gain["single_task_metric"]:
        points.append({"label": "single-task", "kind": "single_task", "metrics": dict(gain["single_task_metric"])})
    return points
