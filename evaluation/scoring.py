"""Predict and score models on one table snapshot.

Table rows become what a model reads through `ple_model.model_inputs`, the
function training's reader calls too: the same null handling, and a task's
sample space is its mask column AND a non-null label, so a null label is never
scored.

`score_model` predicts in batches under torch.no_grad and returns per-task
metrics (ple_model.metrics.evaluate_tasks: AUC/logloss/calibration for binary
tasks, MSE/MAE for regression, each inside the task's sample space), a binned
calibration curve per task, and the gate usage of gated models (expert weight
per task per level and the gates' entropy), averaged over every row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from ple_model import ModelSpec, model_inputs
from ple_model.metrics import GAIN_METRIC, calibration_curve, evaluate_tasks, expected_calibration_error
from ple_model.prediction import predict

# Metrics the gate and the comparisons look at, with their direction (True = higher is better).
COMPARED_METRICS: dict[str, dict[str, bool]] = {
    "binary": {"auc": True, "logloss": False},
    "regression": {"mse": False},
}


@dataclass
class ModelScores:
    tasks: dict[str, dict[str, Any]]                 # per task: metrics + calibration_curve
    gates: list[dict[str, dict[str, Any]]] | None    # gate_usage per level, None for ungated models
    rows: int
    predictions: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    calibration_effect: dict[str, Any] | None = None   # per task: figures before/after calibration


def score_predictions(spec: ModelSpec, predictions: dict[str, np.ndarray], labels: dict, masks: dict,
                      calibration_bins: int = 10) -> dict[str, dict[str, Any]]:
    """Point metrics per task (ple_model.metrics.evaluate_tasks) + calibration curve and ECE."""
    metrics = evaluate_tasks(spec, predictions, labels, masks)
    for task in spec.tasks:
        if task.name not in metrics:
            continue
        in_space = np.asarray(masks[task.name]) > 0
        # rows in space only, in their own dtypes (the curve's means sum in float64): no float64 copies of the day
        prediction, label = np.asarray(predictions[task.name])[in_space], np.asarray(labels[task.name])[in_space]
        result = metrics[task.name]
        if task.type == "regression":
            # Same meaning as the binary tasks' figure: mean prediction / mean observed value.
            mean_label = result.get("mean_label", math.nan)
            result["calibration"] = (result["mean_prediction"] / mean_label
                                     if mean_label and math.isfinite(mean_label) else math.nan)
        result["calibration_curve"] = calibration_curve(prediction, label, calibration_bins)
        result["ece"] = expected_calibration_error(result["calibration_curve"])
        result["gain_metric"] = GAIN_METRIC[task.type][0]
    return metrics


CALIBRATION_FIGURES = ("ece", "calibration", "logloss", "mse", "auc")


def calibration_change(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per task: the calibration figures before and after post-hoc calibration (same rows)."""
    return {task: {"before": {k: before[task][k] for k in CALIBRATION_FIGURES if k in before[task]},
                   "after": {k: after[task][k] for k in CALIBRATION_FIGURES if k in after[task]}}
            for task in after if task in before}


def score_model(model: torch.nn.Module, spec: ModelSpec, frame: pd.DataFrame, batch_size: int = 8192,
                device: str = "cpu", calibration_bins: int = 10, keep_predictions: bool = False,
                calibration=None) -> ModelScores:
    """Score a model on a frame; with a `calibration` (ple_model.calibration), the tasks' metrics are those of
    the calibrated predictions and `calibration_effect` compares them with the raw ones."""
    features, labels, masks = model_inputs(frame, spec)
    predictions, gates = predict(model, spec, features, batch_size, device, with_gates=True)
    effect = None
    if calibration is not None:
        raw = score_predictions(spec, predictions, labels, masks, calibration_bins)
        predictions = calibration.apply_numpy(predictions)
    tasks = score_predictions(spec, predictions, labels, masks, calibration_bins)
    if calibration is not None:
        effect = calibration_change(raw, tasks)
    return ModelScores(tasks=tasks, gates=gates, rows=len(frame), predictions=predictions if keep_predictions else {},
                       calibration_effect=effect)


def headline(metrics: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Flat {task.metric: value} of the compared metrics (for MLflow, logs and tables)."""
    flat = {}
    for task, values in metrics.items():
        for key in ("auc", "logloss", "mse", "mae", "calibration", "count"):
            if key in values and isinstance(values[key], (int, float)):
                flat[f"{task}.{key}"] = float(values[key])
    return flat
