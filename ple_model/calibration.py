"""Post-hoc calibration per task, as a small torch module that serving and the exports apply.

    calibration = fit_calibration(spec, predictions, labels, masks, method="isotonic")
    calibrated = calibration(predictions)             # {task: tensor}: probabilities / values in, same out
    payload = calibration.to_payload()                # into model.pt ("calibration" entry), JSON-free
    calibration = Calibration.from_payload(payload)

Fitted on a validation day, inside each task's sample space, on the model's
PREDICTIONS (probabilities for binary tasks, values for regression tasks):

- `isotonic`: scikit-learn's isotonic_regression (pool adjacent violators)
  gives the blocks and their observed rates, fitted on points rather than
  rows (`_points`: every row gets the level a fit on the rows gives, at
  ~40 bytes a row instead of ~97); the map is then made STRICTLY
  increasing, so it keeps the model's order (AUC unchanged). PAV's own map
  is flat inside each block: scores the model ordered became ties (AUC
  .0002-.0004 lower on a public benchmark). Each block becomes a line
  through (its rows' mean score, its rate), steep enough to rank and at
  most `_SPREAD` (45%) of the way to the neighbouring blocks' rates at its
  ends: a block's rows keep their mean (the block's observed rate), so the
  map is exactly as calibrated as PAV's on the rows it was fitted on.
  (Interpolating between the blocks' centres instead, "centred isotonic
  regression", moves rates across a jump: +14% in the test's step case.)
  Linear between blocks, clipped outside the fitted range. A block that
  cannot tilt both ways breaks its ties by a tilt of `_TIE_BREAK`: inwards
  for an end block at rate 0 or 1 (its mean moves by under 1e-4), about
  its centre for a lone regression block. The module evaluates
  the piecewise-linear map with elementwise ops only (relu, min, sum), so
  TorchScript and ONNX export it without a searchsorted/gather. More than
  `max_knots` knots are thinned to knots at equal-count quantiles of the
  fitted predictions (still strictly increasing; serving cost is batch x
  knots).
- `platt`: binary tasks `sigmoid(a * logit(p) + b)`, fitted by scikit-learn's
  LogisticRegression (unregularised) on logit(p); regression tasks get the
  linear map `a * value + b` (least squares). Monotone, so AUC is unchanged.

Why scikit-learn: PAV and logistic fitting are well-tested there; only the
fitted function is carried over into torch for serving. A task with too few
in-space rows (or one class) keeps the identity mapping; `fit_report` says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping

import numpy as np
import torch
from torch import nn

from .spec import ModelSpec

CALIBRATION_FORMAT = "ple-calibration/1"
METHODS = ("isotonic", "platt")
_EPS = 1e-6
_SPREAD = 0.45     # how far towards a neighbouring block's rate a block's ramp may reach (isotonic)
_TIE_BREAK = 1e-4   # the tilt (of the gap to the next rate) of a block that cannot tilt both ways
APPLY_CHUNK_ROWS = 16384   # rows per call of the map in apply_numpy (16 MB at 258 knots)


class TaskCalibrator(nn.Module):
    """One task's monotone mapping: identity, piecewise-linear (isotonic), logistic (platt) or linear."""

    def __init__(self, kind: str, knots_x: torch.Tensor | None = None, knots_y: torch.Tensor | None = None,
                 coefficients: torch.Tensor | None = None):
        super().__init__()
        if kind not in ("identity", "isotonic", "platt", "linear"):
            raise ValueError(f"unknown calibrator kind {kind!r}")
        self.kind = kind
        x = knots_x if knots_x is not None else torch.zeros(1)
        y = knots_y if knots_y is not None else torch.zeros(1)
        self.register_buffer("knots_x", x.to(torch.float32).reshape(-1))
        self.register_buffer("knots_y", y.to(torch.float32).reshape(-1))
        coefficients = coefficients if coefficients is not None else torch.tensor([1.0, 0.0])
        self.register_buffer("coefficients", coefficients.to(torch.float32).reshape(2))
        self.constant = self.kind == "isotonic" and self.knots_x.numel() == 1   # a plain bool: traces cleanly
        if self.kind == "isotonic":
            if self.knots_x.numel() != self.knots_y.numel() or self.knots_x.numel() < 1:
                raise ValueError("isotonic knots need as many x as y values (at least one)")
            if self.knots_x.numel() > 1 and not bool(torch.all(self.knots_x[1:] > self.knots_x[:-1])):
                raise ValueError("isotonic knots must be strictly increasing in x")

    def forward(self, value: torch.Tensor) -> torch.Tensor:
        if self.kind == "isotonic":
            if self.constant:
                return torch.zeros_like(value) + self.knots_y[0]
            # f(v) = y0 + sum_j slope_j * clamp(v - x_j, 0, x_{j+1} - x_j): linear interpolation between
            # knots, constant outside them (sklearn's out_of_bounds="clip").
            width = self.knots_x[1:] - self.knots_x[:-1]
            slope = (self.knots_y[1:] - self.knots_y[:-1]) / width
            steps = torch.minimum(torch.relu(value.unsqueeze(-1) - self.knots_x[:-1]), width)
            # Clamped to [y_first, y_last]: the sum's rounding could leave a probability at 1 + 1e-7.
            mapped = self.knots_y[0] + (steps * slope).sum(dim=-1)
            return torch.minimum(torch.maximum(mapped, self.knots_y[0]), self.knots_y[-1])
        if self.kind == "platt":
            clipped = value.clamp(_EPS, 1.0 - _EPS)
            return torch.sigmoid(self.coefficients[0] * torch.log(clipped / (1.0 - clipped)) + self.coefficients[1])
        if self.kind == "linear":
            return self.coefficients[0] * value + self.coefficients[1]
        return value


class Calibration(nn.Module):
    """Per-task calibrators; `forward({task: predictions}) -> {task: calibrated}` (tasks it lacks pass through)."""

    def __init__(self, method: str, calibrators: Mapping[str, TaskCalibrator], fit_report: Dict[str, Any] | None = None):
        super().__init__()
        self.method = method
        self.calibrators = nn.ModuleDict(dict(calibrators))
        self.fit_report = dict(fit_report or {})

    @property
    def task_names(self) -> list[str]:
        return list(self.calibrators.keys())

    def calibrate(self, task: str, value: torch.Tensor) -> torch.Tensor:
        return self.calibrators[task](value) if task in self.calibrators else value

    def forward(self, predictions: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        return {task: self.calibrate(task, value) for task, value in predictions.items()}

    def apply_numpy(self, predictions: Mapping[str, np.ndarray], rows_per_chunk: int = APPLY_CHUNK_ROWS
                    ) -> Dict[str, np.ndarray]:
        """Float32 arrays in, float32 out, `rows_per_chunk` rows at a time: the isotonic map holds a
        (rows, knots) matrix while it runs (about 1 KB a row at 258 knots, several of them at once), so a
        whole day at once grew evaluation's peak by ~2 KB a row. Each row's value is computed by the same
        ops whatever the chunk (the same numbers as one call on the whole array)."""
        out = {}
        with torch.no_grad():
            for task, value in predictions.items():
                value = np.asarray(value, dtype=np.float32).reshape(-1)
                if task not in self.calibrators:
                    out[task] = value
                    continue
                mapped = np.empty_like(value)
                for start in range(0, value.size, rows_per_chunk):
                    part = torch.tensor(value[start:start + rows_per_chunk])  # a copy: memmaps are read-only
                    mapped[start:start + rows_per_chunk] = self.calibrate(task, part).numpy()
                out[task] = mapped
        return out

    def to_payload(self) -> Dict[str, Any]:
        """What model.pt stores under "calibration" (torch.save-able; tensors stay tensors)."""
        return {"format": CALIBRATION_FORMAT, "method": self.method,
                "tasks": {task: {"kind": c.kind, "knots_x": c.knots_x.clone(), "knots_y": c.knots_y.clone(),
                                 "coefficients": c.coefficients.clone()} for task, c in self.calibrators.items()},
                "fit_report": self.fit_report}

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> "Calibration":
        if payload.get("format") != CALIBRATION_FORMAT:
            raise ValueError(f"not a {CALIBRATION_FORMAT} payload (format {payload.get('format')!r})")
        calibrators = {task: TaskCalibrator(entry["kind"], torch.as_tensor(entry["knots_x"]),
                                            torch.as_tensor(entry["knots_y"]), torch.as_tensor(entry["coefficients"]))
                       for task, entry in payload["tasks"].items()}
        return cls(payload["method"], calibrators, payload.get("fit_report"))


@dataclass
class _Points:
    """What pool-adjacent-violators and the knots need of a task's rows, without the rows: the rows sorted
    by score and cut into points (rows of one score always share a point: PAV pools ties, as scikit-learn's
    IsotonicRegression does; and neighbouring scores whose rows all have one and the same label share one,
    since PAV always puts equal neighbours in one block), and the rows' score quantiles for thinning."""
    rows: np.ndarray         # rows in each point (float64: PAV's weights)
    mean_label: np.ndarray   # their mean label
    score_sum: np.ndarray    # the sum of their scores (a block's centre is its rows' mean score)
    first: np.ndarray        # the lowest and highest score in the point
    last: np.ndarray
    quantiles: np.ndarray    # the rows' scores at max_knots equal-count quantiles (thinning)


def _points(value: np.ndarray, label: np.ndarray, max_knots: int) -> _Points:
    """One sort of the rows (~30 bytes a row while it runs; fitting the rows themselves held ~120), then
    arrays per point: 3-10x fewer points than rows for the video spec's binary tasks."""
    value = np.asarray(value, dtype=np.float32)   # as the module stores and serves scores
    order = np.argsort(value, kind="stable")
    label, value = np.asarray(label)[order], value[order]
    del order
    quantiles = _sorted_quantiles(value, np.linspace(0, 1, max_knots))
    ties = np.flatnonzero(np.r_[True, value[1:] != value[:-1]])
    low, high = np.minimum.reduceat(label, ties), np.maximum.reduceat(label, ties)
    pure = low == high
    starts = ties[np.r_[True, ~(pure[1:] & pure[:-1] & (low[1:] == low[:-1]))]]
    del ties, low, high, pure
    ends = np.r_[starts[1:], value.size]
    rows = (ends - starts).astype(np.float64)
    return _Points(rows=rows, mean_label=np.add.reduceat(label, starts, dtype=np.float64) / rows,
                   score_sum=np.add.reduceat(value, starts, dtype=np.float64),
                   first=value[starts].astype(np.float64), last=value[ends - 1].astype(np.float64),
                   quantiles=quantiles)


def _sorted_quantiles(ordered: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """np.quantile(ordered.astype(float64), probabilities) of rows already sorted, without copying them:
    numpy's default (linear) method, its virtual index and interpolation written as numpy writes them
    (numpy/lib/_function_base_impl.py), so the thinned knots are where they were."""
    n = ordered.size
    virtual = (n - 1) * probabilities
    below = np.floor(virtual)
    gamma = virtual - below
    low = ordered[np.clip(below.astype(np.int64), 0, n - 1)].astype(np.float64)
    high = ordered[np.clip(below.astype(np.int64) + 1, 0, n - 1)].astype(np.float64)
    difference = high - low
    return np.where(gamma >= 0.5, high - difference * (1 - gamma), low + difference * gamma)


def _thin(x: np.ndarray, y: np.ndarray, quantiles: np.ndarray, max_knots: int) -> tuple[np.ndarray, np.ndarray]:
    """At most max_knots knots, at equal-count quantiles of the fitted predictions, plus both end segments
    (whole: they carry the end blocks' rates, which a chord from the ends would miss)."""
    if x.size <= max_knots:
        return x, y
    ends = [x[0], x[1], x[-2], x[-1]]
    points = np.unique(np.concatenate([ends, quantiles]))
    points = points[(points >= x[0]) & (points <= x[-1])]
    return points, np.interp(points, x, y)


def _ramped_blocks(points: _Points, fitted: np.ndarray, low: float, high: float) -> tuple[np.ndarray, np.ndarray]:
    """Strictly increasing knots from PAV's blocks (module doc): each block a line through (its rows' mean score,
    its rate), at most `_SPREAD` of the way to a neighbour's rate (or to 0 / 1) at its ends. PAV's levels
    are non-decreasing over the points, so a block is a run of equal levels."""
    starts = np.flatnonzero(np.r_[True, fitted[1:] != fitted[:-1]])
    levels = fitted[starts]
    centre = np.add.reduceat(points.score_sum, starts) / np.add.reduceat(points.rows, starts)
    first, last = points.first[starts], points.last[np.r_[starts[1:], fitted.size] - 1]
    below, above = np.diff(np.r_[low, levels]), np.diff(np.r_[levels, high])
    with np.errstate(divide="ignore", invalid="ignore"):
        down = np.where(centre > first, _SPREAD * below / (centre - first), np.inf)
        up = np.where(last > centre, _SPREAD * above / (last - centre), np.inf)
        slope = np.minimum(down, up)
        slope = np.where(np.isfinite(slope), slope, 0.0)
        y_first, y_last = levels - slope * (centre - first), levels + slope * (last - centre)
        # A block that cannot tilt both ways: one at rate 0 / 1 tilts inwards by `_TIE_BREAK` of its gap; a
        # lone regression block (no neighbours) turns about its centre (its mean stays its level).
        flat = (slope == 0) & (last > first)
        at_low, at_high = flat & (below == 0), flat & (above == 0)
        y_last = np.where(at_low, levels + _TIE_BREAK * np.minimum(above, 1.0), y_last)
        y_first = np.where(at_high, levels - _TIE_BREAK * np.minimum(below, 1.0), y_first)
        alone = flat & ~at_low & ~at_high
        turn = _TIE_BREAK * np.maximum(np.abs(levels), 1.0) / (last - first)
        y_first = np.where(alone, levels - turn * (centre - first), y_first)
        y_last = np.where(alone, levels + turn * (last - centre), y_last)
    x = np.column_stack([first, last]).reshape(-1)
    y = np.column_stack([y_first, y_last]).reshape(-1)
    distinct = np.r_[True, np.diff(x) > 0]                   # a one-score block is one knot
    return x[distinct], y[distinct]


def _strictly_increasing(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The float32 knots the module stores, dropping any that rounding left equal to the previous in x or y."""
    x, y = x.astype(np.float32), y.astype(np.float32)
    keep = [0]
    for i in range(1, x.size):
        if x[i] > x[keep[-1]] and y[i] > y[keep[-1]]:
            keep.append(i)
    return x[keep], y[keep]


def _fit_isotonic(value: np.ndarray, label: np.ndarray, binary: bool, max_knots: int) -> TaskCalibrator:
    from sklearn.isotonic import isotonic_regression

    low, high = (0.0, 1.0) if binary else (-np.inf, np.inf)
    # Fitted on float32 values, as the module stores and serves them: two float64 scores that round to one
    # float32 would otherwise become two knots at the same x.
    points = _points(value, label, max_knots)
    bounds = {"y_min": low, "y_max": high} if binary else {}
    fitted = isotonic_regression(points.mean_label, sample_weight=points.rows, increasing=True, **bounds)
    x, y = _ramped_blocks(points, fitted, low, high)
    x, y = _strictly_increasing(*_thin(x, y, points.quantiles, max_knots))
    return TaskCalibrator("isotonic", torch.from_numpy(x), torch.from_numpy(y))


def _fit_platt(value: np.ndarray, label: np.ndarray, binary: bool) -> TaskCalibrator:
    value, label = value.astype(np.float64), label.astype(np.float64)
    if not binary:
        slope, intercept = np.polyfit(value, label, 1)
        return TaskCalibrator("linear", coefficients=torch.tensor([slope, intercept]))
    from sklearn.linear_model import LogisticRegression

    clipped = np.clip(value, _EPS, 1 - _EPS)
    logit = np.log(clipped / (1 - clipped)).reshape(-1, 1)
    regression = LogisticRegression(C=1e6, max_iter=1000).fit(logit, label.astype(int))
    return TaskCalibrator("platt", coefficients=torch.tensor([float(regression.coef_[0, 0]),
                                                              float(regression.intercept_[0])]))


def fit_calibration(spec: ModelSpec, predictions: Mapping[str, Any], labels: Mapping[str, Any],
                    masks: Mapping[str, Any] | None = None, method: str = "isotonic", min_rows: int = 100,
                    max_knots: int = 256) -> Calibration:
    """Fit one monotone mapping per task on (prediction, label) inside the task's sample space.

    predictions: probabilities for binary tasks, values for regression tasks
    (numpy, per task). A task with fewer than `min_rows` in-space rows, or
    one class only, keeps the identity (reported in `fit_report`).
    """
    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}; valid: {list(METHODS)}")
    masks = masks or {}
    calibrators: dict[str, TaskCalibrator] = {}
    report: dict[str, Any] = {}
    for task in spec.tasks:
        if task.name not in predictions:
            continue
        # Indexed first, cast to float64 after (the same values): a float64 copy of every row of a 10M-row
        # day is 80 MB per array, of the sample space's rows only what is fitted.
        value = np.asarray(predictions[task.name]).reshape(-1)
        label = np.asarray(labels[task.name]).reshape(-1)
        in_space = (np.asarray(masks[task.name]).reshape(-1) > 0) if task.name in masks else np.ones(value.size, bool)
        in_space &= np.isfinite(label) & np.isfinite(value)
        value, label = value[in_space], label[in_space]   # cast where a fit needs it, not the whole day here
        binary = task.type == "binary"
        problem = None
        if value.size < min_rows:
            problem = f"{value.size} rows in the sample space (< {min_rows})"
        elif binary and label.min() == label.max():
            problem = f"one class only ({int(label.sum())} positives of {label.size})"
        if problem:
            calibrators[task.name] = TaskCalibrator("identity")
            report[task.name] = {"kind": "identity", "rows": int(value.size), "reason": problem}
            continue
        calibrator = (_fit_isotonic(value, label, binary, max_knots) if method == "isotonic"
                      else _fit_platt(value, label, binary))
        calibrators[task.name] = calibrator
        report[task.name] = {"kind": calibrator.kind, "rows": int(value.size),
                             "knots": int(calibrator.knots_x.numel()) if calibrator.kind == "isotonic" else None}
    return Calibration(method, calibrators, report)


# --- the model file's optional "calibration" entry ----------------------------------------
# Kept beside the model file's loader rather than inside it: a model.pt without the entry loads as
# before, and readers that do not know it ignore it.

def read_calibration(model_file: str, payload: Mapping[str, Any] | None = None) -> Calibration | None:
    """The calibration stored in a model.pt, or None."""
    if payload is None:
        payload = torch.load(model_file, map_location="cpu", weights_only=False)
    entry = payload.get("calibration")
    return Calibration.from_payload(entry) if entry else None


def attach_calibration(model_file: str, calibration: Calibration | None, destination: str | None = None) -> str:
    """Write model_file (or a copy at destination) with its "calibration" entry set (None removes it)."""
    import os

    payload = torch.load(model_file, map_location="cpu", weights_only=False)
    if calibration is None:
        payload.pop("calibration", None)
    else:
        payload["calibration"] = calibration.to_payload()
    target = destination or model_file
    tmp = f"{target}.tmp"
    torch.save(payload, tmp)
    os.replace(tmp, target)
    return str(target)

