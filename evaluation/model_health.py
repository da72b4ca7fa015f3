"""Model health on a day: calibration and prediction drift per task, from arrays.

Kept apart from the scoring loop on purpose: `task_health` takes the predictions, labels and
sample spaces of ONE day (numpy arrays, however they were produced: all at once or
accumulated batch by batch), and `prediction_drift` compares two days' histograms. The
reference day of a model is its validation day (the day training selected it on, from its
lineage): prediction drift is the population stability index (PSI) of a task's predictions
on the evaluated day against that day, on fixed bins of [0, 1] (the same bins every day, so
histograms recorded on different days compare).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

PREDICTION_BINS = 20        # fixed bins of [0, 1]: binary probabilities and the watch ratio alike
PSI_FLOOR = 1e-4            # a bin's share in PSI is at least this (an empty bin would make it infinite)


def prediction_histogram(predictions: np.ndarray) -> list[float]:
    """Shares of the predictions in PREDICTION_BINS equal bins of [0, 1] (values outside are clipped)."""
    values = np.clip(np.asarray(predictions, dtype=np.float64).reshape(-1), 0.0, 1.0)
    if values.size == 0:
        return []
    counts = np.histogram(values, bins=PREDICTION_BINS, range=(0.0, 1.0))[0]
    return (counts / values.size).tolist()


def psi(reference: list[float], current: list[float]) -> float:
    """Population stability index of two histograms of shares on the same bins."""
    if not reference or not current or len(reference) != len(current):
        return math.nan
    p = np.maximum(np.asarray(reference), PSI_FLOOR)
    q = np.maximum(np.asarray(current), PSI_FLOOR)
    return float(np.sum((q - p) * np.log(q / p)))


def task_health(spec, predictions: dict[str, np.ndarray], labels: dict, masks: dict) -> dict[str, dict[str, Any]]:
    """Per task, inside its sample space: mean prediction, observed mean, their ratio
    (calibration) and the histogram of the predictions."""
    health = {}
    for task in spec.tasks:
        if task.name not in predictions:
            continue
        in_space = np.asarray(masks[task.name]).reshape(-1) > 0
        # the sample space's rows in their own dtypes, means summed in float64 (no float64 copies of the day)
        prediction = np.asarray(predictions[task.name]).reshape(-1)[in_space]
        label = np.asarray(labels[task.name]).reshape(-1)[in_space]
        mean_prediction = float(prediction.mean(dtype=np.float64)) if prediction.size else math.nan
        observed = float(label.mean(dtype=np.float64)) if label.size else math.nan
        health[task.name] = {"rows": int(prediction.size), "mean_prediction": mean_prediction, "observed": observed,
                             "calibration": mean_prediction / observed if observed else math.nan,
                             "histogram": prediction_histogram(prediction)}
    return health


def prediction_drift(health: dict[str, dict[str, Any]], reference: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Per task: PSI of the day's predictions against the reference day's."""
    return {task: psi(reference[task]["histogram"], figures["histogram"])
            for task, figures in health.items() if task in reference}


def validation_day(model) -> tuple[str, str, int | None] | None:
    """(table, date, version) of the day the model was validated on, from its lineage; None if unknown."""
    summary = (model.loaded.metadata or {}).get("validation_snapshot") or \
        (model.run_record or {}).get("validation_snapshot")
    if not isinstance(summary, dict) or not summary.get("partitions"):
        return None
    dates = sorted({value for p in summary["partitions"] for value in json.loads(p).values()})
    return (summary["table"], dates[-1], summary.get("version")) if len(dates) == 1 else None


def add_prediction_drift(record: dict[str, Any], reference: dict[str, Any] | None) -> None:
    """Into an evaluation record's `model_health`: each task's PSI against `reference`
    ({"date": ..., "tasks": task_health of that day}), or why there is none."""
    health = record.get("model_health") or {}
    if not reference or not reference.get("tasks"):
        record["prediction_drift"] = {"reference": None, "note": (reference or {}).get("note")}
        return
    drift = prediction_drift(health, reference["tasks"])
    record["prediction_drift"] = {"reference": reference["date"], "psi": drift}
    for task, value in drift.items():
        health[task]["prediction_psi"] = value


def validation_reference(model, options, spark=None) -> dict[str, Any]:
    """{"date", "tasks": task_health} of the model's predictions on its validation day (the
    version it was trained with), or {"note": why not}: the reference of prediction drift. The day is
    read and scored batch by batch, as the test day (evaluation/streaming.py)."""
    from ple_model.model_inputs import source_columns
    from ple_runtime.snapshot import resolve_date_snapshot

    from .snapshot_rows import iter_date_snapshot
    from ple_model.prediction import aligned_batch_rows

    from .streaming import CompactStore, PassSettings, ScoredModel, score_day

    found = validation_day(model)
    if found is None:
        return {"note": "the model's lineage names no single validation day"}
    table, date, version = found
    scored = ScoredModel("model", model.loaded.model, model.spec)
    budget = None if options.memory_budget_mb is None else options.memory_budget_mb * 2 ** 20
    with CompactStore(budget, options.spill_dir) as store:
        try:
            snapshot = resolve_date_snapshot(table, date, version=version, partition_column="dt")
            batches = iter_date_snapshot(snapshot, source_columns(model.spec),
                                         aligned_batch_rows(options.rows_per_batch, options.batch_size),
                                         options.reader, spark)
            day = score_day(batches, [scored], {"model": model.spec}, store,
                            PassSettings(options.batch_size, options.device))
        except Exception as error:  # noqa: BLE001 (a vacuumed or moved validation day must not stop an evaluation)
            return {"note": f"validation day {date} of {table} unreadable: {type(error).__name__}: {error}"}
        if scored.error:
            return {"note": scored.error}
        predictions = day.predictions["model"]
        if model.calibration:
            predictions = model.calibration.apply_numpy(predictions)
        return {"date": date, "tasks": task_health(model.spec, predictions, day.labels["model"], day.masks["model"])}
