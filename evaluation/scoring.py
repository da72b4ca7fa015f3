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
from ple_model.metrics import GAIN_METRIC, evaluate_tasks, gate_usage, predictions_from_outputs

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


def calibration_curve(prediction: np.ndarray, label: np.ndarray, bins: int = 10) -> dict[str, list]:
    """Equal-count bins of the prediction: mean prediction vs mean label per bin.

    Equal-count (quantile) bins because predicted rates are skewed (a share
    rate of 1% puts nearly every row in the first equal-width bin).
    """
    if len(prediction) == 0:
        return {"mean_prediction": [], "observed": [], "count": [], "strategy": "quantile"}
    order = np.argsort(prediction, kind="stable")
    groups = [g for g in np.array_split(order, min(bins, len(prediction))) if len(g)]
    return {"mean_prediction": [float(prediction[g].mean()) for g in groups],
            "observed": [float(label[g].mean()) for g in groups],
            "count": [int(len(g)) for g in groups], "strategy": "quantile"}


def score_predictions(spec: ModelSpec, predictions: dict[str, np.ndarray], labels: dict, masks: dict,
                      calibration_bins: int = 10) -> dict[str, dict[str, Any]]:
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
        result["gain_metric"] = GAIN_METRIC[task.type][0]
    return metrics


def score_model(model: torch.nn.Module, spec: ModelSpec, frame: pd.DataFrame, batch_size: int = 8192,
                device: str = "cpu", calibration_bins: int = 10, keep_predictions: bool = False) -> ModelScores:
    features, labels, masks = model_inputs(frame, spec)
    predictions, gates = predict(model, spec, features, batch_size, device, with_gates=True)
    tasks = score_predictions(spec, predictions, labels, masks, calibration_bins)
    return ModelScores(tasks=tasks, gates=gates, rows=len(frame), predictions=predictions if keep_predictions else {})


def headline(metrics: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Flat {task.metric: value} of the compared metrics (for MLflow, logs and tables)."""
    flat = {}
    for task, values in metrics.items():
        for key in ("auc", "logloss", "mse", "mae", "calibration", "count"):
            if key in values and isinstance(values[key], (int, float)):
                flat[f"{task}.{key}"] = float(values[key])
    return flat
