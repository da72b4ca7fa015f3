"""Predict every row of a table batch in chunks: probabilities for binary tasks, values for
regression tasks, and the gates' expert usage averaged over the rows.

    inputs = ple_model.model_inputs(frame, spec)
    predictions, gates = predict(model, spec, inputs.features, batch_size=8192, with_gates=True)

Evaluation scores models with it; training fits post-hoc calibration with it.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .metrics import gate_usage, predictions_from_outputs
from .spec import ModelSpec


def aligned_batch_rows(rows_per_batch: int, forward_batch_size: int) -> int:
    """`rows_per_batch` rounded up to a multiple of the forward pass's batch size (same passes as one read)."""
    return max(1, math.ceil(rows_per_batch / forward_batch_size)) * forward_batch_size


def predict(model: torch.nn.Module, spec: ModelSpec, features: dict[str, np.ndarray], batch_size: int = 8192,
            device: str = "cpu", with_gates: bool = False,
            gate_parts: list | None = None) -> tuple[dict[str, np.ndarray], list | None]:
    """Predictions (probabilities / values) for every row, and gate usage averaged over rows.
    `features`: ple_model.model_inputs(...).features (numpy, converted batch by batch).
    `gate_parts`: a list that collects each batch's (rows, gate usage), for callers that predict a
    table chunk by chunk and average over all of it at the end (`average_gate_usage`)."""
    rows = len(next(iter(features.values()))) if features else 0
    chunks: dict[str, list[np.ndarray]] = {t: [] for t in spec.task_names}
    gate_parts = [] if gate_parts is None else gate_parts
    first_part = len(gate_parts)
    layout = getattr(model, "gate_layout", None) if with_gates else None
    model.eval()
    with torch.no_grad():
        for start in range(0, rows, batch_size):
            batch = {name: torch.from_numpy(np.ascontiguousarray(values[start:start + batch_size])).to(device)
                     for name, values in features.items()}
            if layout:
                outputs, gates = model.forward_with_gates(batch)
                gate_parts.append((len(next(iter(batch.values()))), gate_usage(gates, layout)))
            else:
                outputs = model(batch)
            for task, values in predictions_from_outputs(spec, outputs).items():
                chunks[task].append(values)
    predictions = {t: (np.concatenate(c) if c else np.zeros(0, dtype=np.float32)) for t, c in chunks.items()}
    return predictions, (average_gate_usage(gate_parts[first_part:]) if layout else None)


def average_gate_usage(parts: list[tuple[int, list]]) -> list | None:
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
