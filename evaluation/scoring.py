"""Predict and score models on one table snapshot.

`model_inputs(frame, spec)` turns table rows into what the model reads, exactly
as training's reader does (training/data.py): null categorical -> 0 (the OOV
id), null numeric -> 0.0; a task's sample space is its mask column AND a
non-null label, so a null label is never scored.

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

from ple_model import ModelSpec
from ple_model.metrics import (GAIN_METRIC, calibration_curve, evaluate_tasks, expected_calibration_error, gate_usage,
                               predictions_from_outputs)

# Metrics the gate and the comparisons look at, with their direction (True = higher is better).
COMPARED_METRICS: dict[str, dict[str, bool]] = {
    "binary": {"auc": True, "logloss": False},
    "regression": {"mse": False},
}


def needed_columns(spec: ModelSpec) -> list[str]:
    columns = [*spec.feature_names, *(t.label for t in spec.tasks), *(t.mask for t in spec.tasks if t.mask)]
    return list(dict.fromkeys(columns))


def _as_float(series: pd.Series) -> np.ndarray:
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _id_array(series: pd.Series, max_len: int) -> np.ndarray:
    """A column of id arrays (lists / arrays / None) -> (rows, max_len) int64, 0-padded or truncated."""
    out = np.zeros((len(series), max_len), dtype=np.int64)
    for row, value in enumerate(series.to_numpy()):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        ids = np.nan_to_num(np.asarray(value, dtype=np.float64), nan=0.0).astype(np.int64)[:max_len]
        out[row, :len(ids)] = ids
    return out


def model_inputs(frame: pd.DataFrame, spec: ModelSpec) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """-> (features as tensors, labels {task: float array}, masks {task: 0/1 array})."""
    features: dict[str, torch.Tensor] = {}
    for feature in spec.features:
        column = frame[feature.name]
        if feature.type == "numeric":
            features[feature.name] = torch.from_numpy(np.nan_to_num(_as_float(column), nan=0.0).astype(np.float32))
        elif feature.type == "categorical":
            features[feature.name] = torch.from_numpy(np.nan_to_num(_as_float(column), nan=0.0).astype(np.int64))
        else:
            features[feature.name] = torch.from_numpy(_id_array(column, int(feature.max_len)))
    labels, masks = {}, {}
    for task in spec.tasks:
        label = _as_float(frame[task.label])
        in_space = ~np.isnan(label)
        if task.mask is not None:
            in_space &= np.nan_to_num(_as_float(frame[task.mask]), nan=0.0) > 0
        labels[task.name] = np.where(in_space, label, 0.0)
        masks[task.name] = in_space.astype(np.float64)
    return features, labels, masks


@dataclass
class ModelScores:
    tasks: dict[str, dict[str, Any]]                 # per task: metrics + calibration_curve
    gates: list[dict[str, dict[str, Any]]] | None    # gate_usage per level, None for ungated models
    rows: int
    predictions: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    calibration_effect: dict[str, Any] | None = None   # per task: figures before/after calibration


def predict(model: torch.nn.Module, spec: ModelSpec, features: dict[str, torch.Tensor], batch_size: int = 8192,
            device: str = "cpu", with_gates: bool = False) -> tuple[dict[str, np.ndarray], list | None]:
    """Predictions (probabilities / values) for every row, and gate usage averaged over rows."""
    rows = len(next(iter(features.values()))) if features else 0
    chunks: dict[str, list[np.ndarray]] = {t: [] for t in spec.task_names}
    gate_parts: list[tuple[int, list]] = []
    layout = getattr(model, "gate_layout", None) if with_gates else None
    model.eval()
    with torch.no_grad():
        for start in range(0, rows, batch_size):
            batch = {name: values[start:start + batch_size].to(device) for name, values in features.items()}
            if layout:
                outputs, gates = model.forward_with_gates(batch)
                gate_parts.append((len(next(iter(batch.values()))), gate_usage(gates, layout)))
            else:
                outputs = model(batch)
            for task, values in predictions_from_outputs(spec, outputs).items():
                chunks[task].append(values)
    predictions = {t: (np.concatenate(c) if c else np.zeros(0, dtype=np.float32)) for t, c in chunks.items()}
    return predictions, (_average_gate_usage(gate_parts) if layout else None)


def _average_gate_usage(parts: list[tuple[int, list]]) -> list | None:
    """Row-weighted mean of per-batch gate_usage (exact: every figure is a mean over rows)."""
    if not parts:
        return None
    total = sum(n for n, _ in parts)
    merged = []
    for level_index, level in enumerate(parts[0][1]):
        merged_level = {}
        for gate, usage in level.items():
            def mean_of(getter):
                return sum(n * getter(p[level_index][gate]) for n, p in parts) / total
            merged_level[gate] = {
                "mean_weight": {e: mean_of(lambda g, e=e: g["mean_weight"][e]) for e in usage["mean_weight"]},
                "entropy": mean_of(lambda g: g["entropy"]),
                "normalized_entropy": mean_of(lambda g: g["normalized_entropy"]),
            }
        merged.append(merged_level)
    return merged


def score_predictions(spec: ModelSpec, predictions: dict[str, np.ndarray], labels: dict, masks: dict,
                      calibration_bins: int = 10) -> dict[str, dict[str, Any]]:
    """Point metrics per task (ple_model.metrics.evaluate_tasks) + calibration curve and ECE."""
    metrics = evaluate_tasks(spec, predictions, labels, masks)
    for task in spec.tasks:
        if task.name not in metrics:
            continue
        in_space = np.asarray(masks[task.name]) > 0
        prediction = np.asarray(predictions[task.name], dtype=np.float64)[in_space]
        label = np.asarray(labels[task.name], dtype=np.float64)[in_space]
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
