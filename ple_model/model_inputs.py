"""Table rows -> what a model reads: the ONE place the sample-space rule lives.

    inputs = model_inputs(columns, spec)          # columns: {column name: array-like}, e.g. a pandas frame
    features, labels, masks = inputs              # numpy; or inputs.to_tensors(device)

Training's Petastorm transform (training/data.py) and evaluation's scoring call
this function, so a model is trained and scored on exactly the same inputs:

- features (keyed by feature name): categorical -> int64 (rows,), a null id is 0
  (the OOV id); multi_categorical -> int64 (rows, max_len), each row's ids padded
  with 0 or truncated to max_len, a null row is all 0 (padding); numeric ->
  float32 (rows,), null -> 0.0 (feature_eng already centred/scaled them).
- masks (keyed by TASK name, float32 1/0): the task's sample space (paper
  Eq. 9) = its spec `mask` column is > 0 (when it has one) AND its label is
  present (not null/NaN). Every task gets a mask.
- labels (keyed by TASK name, float32): the label inside the sample space, 0.0
  outside it, so a null label is never learned from nor scored.

Column values may be pandas Series (nullable Int/Float/boolean included), numpy
arrays, lists or torch tensors. Missing columns raise KeyError naming them.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Mapping, NamedTuple, Tuple

import numpy as np
import torch

from .spec import ModelSpec

__all__ = ["ModelInputs", "model_inputs", "source_columns"]


class ModelInputs(NamedTuple):
    features: Dict[str, np.ndarray]
    labels: Dict[str, np.ndarray]
    masks: Dict[str, np.ndarray]

    def to_tensors(self, device: torch.device | str = "cpu") -> Tuple[dict, dict, dict]:
        """(features, labels, masks) as torch tensors on `device` (zero-copy on CPU)."""
        def convert(values: Dict[str, np.ndarray]) -> Dict[str, torch.Tensor]:
            return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in values.items()}

        return convert(self.features), convert(self.labels), convert(self.masks)


def source_columns(spec: ModelSpec) -> list[str]:
    """The table columns a spec reads: features, labels, masks (each once, in that order)."""
    names = [*spec.feature_names, *(t.label for t in spec.tasks), *(t.mask for t in spec.tasks if t.mask)]
    return list(dict.fromkeys(names))


def model_inputs(columns: Mapping[str, Any], spec: ModelSpec) -> ModelInputs:
    """Table columns -> (features, labels, masks) by the rules in the module doc."""
    missing = [c for c in source_columns(spec) if c not in columns]
    if missing:
        raise KeyError(f"table batch lacks columns {missing} that the spec reads")
    features: Dict[str, np.ndarray] = {}
    for feature in spec.features:
        values = columns[feature.name]
        if feature.type == "numeric":
            features[feature.name] = np.nan_to_num(_as_float(values), nan=0.0).astype(np.float32)
        elif feature.type == "categorical":
            features[feature.name] = np.nan_to_num(_as_float(values), nan=0.0).astype(np.int64)
        else:
            features[feature.name] = _id_rows(values, int(feature.max_len))
    labels: Dict[str, np.ndarray] = {}
    masks: Dict[str, np.ndarray] = {}
    for task in spec.tasks:
        label = _as_float(columns[task.label])
        in_space = ~np.isnan(label)
        if task.mask is not None:
            in_space &= np.nan_to_num(_as_float(columns[task.mask]), nan=0.0) > 0
        labels[task.name] = np.where(in_space, label, 0.0).astype(np.float32)
        masks[task.name] = in_space.astype(np.float32)
    return ModelInputs(features, labels, masks)


def _as_float(values: Any) -> np.ndarray:
    """Any 1-d column -> float64 with NaN for nulls (nullable pandas dtypes and booleans included)."""
    import pandas as pd

    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy().astype(np.float64).reshape(-1)
    if isinstance(values, np.ndarray) and values.dtype.kind in "biuf":
        return values.astype(np.float64, copy=False).reshape(-1)
    series = values if isinstance(values, pd.Series) else pd.Series(values)
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _id_rows(values: Any, max_len: int) -> np.ndarray:
    """A column of id arrays -> (rows, max_len) int64; 0-padded or truncated; null rows/ids -> 0."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values) if not hasattr(values, "to_numpy") else values.to_numpy()
    if array.ndim == 2 and array.dtype.kind in "biuf":
        return _fit_width(np.nan_to_num(array.astype(np.float64, copy=False), nan=0.0).astype(np.int64), max_len)
    out = np.zeros((len(array), max_len), dtype=np.int64)
    for row, ids in enumerate(array):
        if ids is None or (isinstance(ids, float) and math.isnan(ids)):
            continue
        ids = np.nan_to_num(np.asarray(ids, dtype=np.float64), nan=0.0).astype(np.int64)[:max_len]
        out[row, :len(ids)] = ids
    return out


def _fit_width(ids: np.ndarray, max_len: int) -> np.ndarray:
    if ids.shape[1] == max_len:
        return ids
    if ids.shape[1] > max_len:
        return np.ascontiguousarray(ids[:, :max_len])
    return np.pad(ids, ((0, 0), (0, max_len - ids.shape[1])))
