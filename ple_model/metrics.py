"""Per-task evaluation inside each task's sample space, MTL gain (Eq. 11), gate diagnostics.

`evaluate_tasks(spec, predictions, labels, masks)`:
- predictions: PROBABILITIES for binary tasks (apply `predictions_from_outputs`
  to model outputs, which are logits), values for regression tasks.
- labels / masks keyed by task name; numpy arrays, lists or torch tensors.
  A task with no mask entry uses every row.
Returns {task: {metric: float}}:
- binary: auc (NaN when undefined, with `auc_undefined_reason`), logloss,
  mean_prediction, observed_rate, calibration (= mean_prediction /
  observed_rate; 1 is calibrated), count, positives.
- regression: mse, mae, mean_prediction, mean_label, count.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Sequence

import numpy as np
import torch
from sklearn.metrics import log_loss, mean_absolute_error, mean_squared_error, roc_auc_score

from .spec import ModelSpec

# Which metric Eq. 11 compares per task type, and whether higher is better.
GAIN_METRIC = {"binary": ("auc", True), "regression": ("mse", False)}


def _numpy(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().float().cpu().numpy().reshape(-1)
    return np.asarray(values, dtype=np.float64).reshape(-1)


def predictions_from_outputs(spec: ModelSpec, outputs: Mapping[str, Any]) -> Dict[str, np.ndarray]:
    """Model outputs (logits / values) -> predictions (probabilities / values) as numpy."""
    result = {}
    for task in spec.tasks:
        if task.name in outputs:
            values = torch.as_tensor(outputs[task.name]).detach().float()
            result[task.name] = (torch.sigmoid(values) if task.type == "binary" else values).cpu().numpy().reshape(-1)
    return result


def evaluate_tasks(spec: ModelSpec, predictions: Mapping[str, Any], labels: Mapping[str, Any],
                   masks: Mapping[str, Any] | None = None) -> Dict[str, Dict[str, float]]:
    masks = masks or {}
    results: Dict[str, Dict[str, float]] = {}
    for task in spec.tasks:
        if task.name not in predictions:
            continue
        prediction = _numpy(predictions[task.name])
        label = _numpy(labels[task.name])
        if prediction.shape != label.shape:
            raise ValueError(f"task {task.name!r}: {prediction.shape[0]} predictions but {label.shape[0]} labels")
        if task.name in masks:
            in_space = _numpy(masks[task.name]) > 0
        elif task.mask is not None:
            raise KeyError(f"task {task.name!r} has a sample-space mask (column {task.mask!r}) but masks has no entry")
        else:
            in_space = np.ones_like(label, dtype=bool)
        prediction, label = prediction[in_space].astype(np.float64), label[in_space].astype(np.float64)
        count = int(label.shape[0])
        if task.type == "binary":
            results[task.name] = _binary_metrics(prediction, label, count)
        else:
            results[task.name] = _regression_metrics(prediction, label, count)
    return results


def _binary_metrics(prediction: np.ndarray, label: np.ndarray, count: int) -> Dict[str, Any]:
    metrics: Dict[str, Any] = {"count": count, "positives": int((label > 0.5).sum())}
    if count == 0:
        return {**metrics, "auc": math.nan, "auc_undefined_reason": "no rows in the task's sample space",
                "logloss": math.nan, "mean_prediction": math.nan, "observed_rate": math.nan,
                "calibration": math.nan}
    if np.any((label != 0) & (label != 1)):
        raise ValueError("binary labels must be 0 or 1 inside the sample space")
    if np.any((prediction < 0) | (prediction > 1)):
        raise ValueError("binary predictions must be probabilities in [0, 1]; apply predictions_from_outputs to logits")
    if metrics["positives"] in (0, count):
        metrics["auc"] = math.nan
        metrics["auc_undefined_reason"] = f"only one class in the sample space ({metrics['positives']} positives of {count})"
    else:
        metrics["auc"] = float(roc_auc_score(label, prediction))
    clipped = np.clip(prediction, 1e-7, 1 - 1e-7)
    metrics["logloss"] = float(log_loss(label, clipped, labels=[0, 1]))
    metrics["mean_prediction"] = float(prediction.mean())
    metrics["observed_rate"] = float(label.mean())
    metrics["calibration"] = metrics["mean_prediction"] / metrics["observed_rate"] if metrics["observed_rate"] > 0 else math.nan
    return metrics


def _regression_metrics(prediction: np.ndarray, label: np.ndarray, count: int) -> Dict[str, Any]:
    if count == 0:
        return {"count": 0, "mse": math.nan, "mae": math.nan, "mean_prediction": math.nan, "mean_label": math.nan}
    return {"count": count, "mse": float(mean_squared_error(label, prediction)),
            "mae": float(mean_absolute_error(label, prediction)),
            "mean_prediction": float(prediction.mean()), "mean_label": float(label.mean())}


def mtl_gain(mtl_metrics: Mapping[str, Mapping[str, float]], single_task_metrics: Mapping[str, Mapping[str, float]],
             spec: ModelSpec) -> Dict[str, float]:
    """Eq. 11 per task: AUC(mtl) - AUC(single) for binary, MSE(single) - MSE(mtl) for regression.

    Positive = the multi-task model is better on that task.
    """
    gains = {}
    for task in spec.tasks:
        if task.name not in mtl_metrics or task.name not in single_task_metrics:
            continue
        metric, higher_is_better = GAIN_METRIC[task.type]
        difference = mtl_metrics[task.name][metric] - single_task_metrics[task.name][metric]
        gains[task.name] = float(difference if higher_is_better else -difference)
    return gains


def gate_usage(gate_weights: Sequence[Any], gate_layout: Sequence[Any]) -> List[Dict[str, Dict[str, Any]]]:
    """Per level, per gate: mean weight per expert over the batch and the mean gate entropy.

    gate_weights: from model.forward_with_gates, (batch, gates, experts) per level.
    Returns [{gate_name: {"mean_weight": {expert_name: w}, "entropy": nats,
    "normalized_entropy": entropy / log(#experts the gate may mix)}}] per level.
    Experts a gate cannot see are left out of its mean_weight.
    """
    report = []
    for weights, layout in zip(gate_weights, gate_layout):
        weights = torch.as_tensor(weights).detach().float()
        mean = weights.mean(dim=0)
        entropy = -(weights * torch.log(weights.clamp_min(1e-12))).sum(dim=-1).mean(dim=0)
        level = {}
        for gate_index, gate_name in enumerate(layout.gate_names):
            allowed = layout.gate_experts[gate_index]
            level[gate_name] = {
                "mean_weight": {layout.expert_names[e]: float(mean[gate_index, e]) for e in allowed},
                "entropy": float(entropy[gate_index]),
                "normalized_entropy": float(entropy[gate_index] / math.log(len(allowed))) if len(allowed) > 1 else 0.0,
            }
        report.append(level)
    return report
