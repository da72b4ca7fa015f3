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

Uncertainty and the metrics recommender teams report (all numpy, vectorised):
- `delong_auc(label, scores)`: AUCs of several score vectors on the same rows
  and their covariance (DeLong et al. 1988, the O(n log n) algorithm of Sun &
  Xu 2014): exact, deterministic and fast, so AUC intervals and paired AUC
  differences need no resampling.
- `bootstrap_ratio_samples(numerators, denominators, ...)`: a paired
  (multinomial, n-out-of-n) bootstrap of every statistic that is a ratio of
  sums over units (rows or users): means of per-row losses, GAUC, mean NDCG,
  mean prediction / observed rate. One set of resampling counts serves every
  column, so differences between columns (models) are paired.
  `bootstrap_ratio_samples_by_block`: the same law over row blocks (the
  (units, k) matrices never whole: memory of a block at any row count).
- `structural_components`: one score vector's AUC (and, into given arrays, its
  rows' DeLong components per class) from one sort (what `delong_auc` and the
  binary AUC use).
- `group_auc`: AUC within each group (user), weighted by the group's rows,
  groups with one class skipped and counted (GAUC).
- `ranking_score`, `ndcg_at_k`: the paper's `prod_k p_k^{w_k}` ranking score
  and per-user NDCG@k against a utility label.
- `expected_calibration_error`: over equal-count bins of the prediction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Mapping, Sequence

import numpy as np
import torch

from .spec import ModelSpec

# Which metric Eq. 11 compares per task type, and whether higher is better.
GAIN_METRIC = {"binary": ("auc", True), "regression": ("mse", False)}


def _numpy(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().float().cpu().numpy().reshape(-1)
    return np.asarray(values, dtype=np.float64).reshape(-1)


def _as_array(values: Any) -> np.ndarray:
    """1-d numpy array of its own dtype (tensors as float32, as _numpy)."""
    if isinstance(values, torch.Tensor):
        return _numpy(values)
    return np.asarray(values).reshape(-1)


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
        # Indexed first; binary tasks keep their dtypes (AUC needs only the order, the log loss and the means
        # sum in float64): float64 copies of every row of a 10M-row day were 160 MB for one task.
        prediction = _as_array(predictions[task.name])
        label = _as_array(labels[task.name])
        if prediction.shape != label.shape:
            raise ValueError(f"task {task.name!r}: {prediction.shape[0]} predictions but {label.shape[0]} labels")
        if task.name in masks:
            in_space = _as_array(masks[task.name]) > 0
        elif task.mask is not None:
            raise KeyError(f"task {task.name!r} has a sample-space mask (column {task.mask!r}) but masks has no entry")
        else:
            in_space = np.ones_like(label, dtype=bool)
        prediction, label = prediction[in_space], label[in_space]
        count = int(label.shape[0])
        if task.type == "binary":
            results[task.name] = _binary_metrics(prediction, label, count)
        else:
            results[task.name] = _regression_metrics(prediction.astype(np.float64), label.astype(np.float64), count)
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
        # roc_auc_score's value (within 1e-16) from one sort: it held ~73 B a row, this ~25.
        metrics["auc"] = structural_components(label > 0.5, prediction)
    metrics["logloss"] = _log_loss(label, prediction)
    metrics["mean_prediction"] = float(prediction.mean(dtype=np.float64))
    metrics["observed_rate"] = float(label.mean(dtype=np.float64))
    metrics["calibration"] = metrics["mean_prediction"] / metrics["observed_rate"] if metrics["observed_rate"] > 0 else math.nan
    return metrics


def _log_loss(label: np.ndarray, prediction: np.ndarray, rows: int = 1 << 18) -> float:
    """Mean binary cross-entropy with predictions clipped to [1e-7, 1 - 1e-7] (sklearn's `log_loss`
    value, tests/model/test_metrics.py), summed over chunks of rows: on a whole day it held ~65 B a row.
    numpy, not sklearn: importing sklearn (and scipy.stats with it) took ~1.7 s of every training
    worker's ~4 s start, for three one-line formulas."""
    total = 0.0
    for start in range(0, label.size, rows):
        clipped = np.clip(prediction[start:start + rows].astype(np.float64), 1e-7, 1 - 1e-7)
        positive = label[start:start + rows] > 0.5
        total -= float(np.log(clipped[positive]).sum() + np.log1p(-clipped[~positive]).sum())
    return total / label.size


def _regression_metrics(prediction: np.ndarray, label: np.ndarray, count: int) -> Dict[str, Any]:
    if count == 0:
        return {"count": 0, "mse": math.nan, "mae": math.nan, "mean_prediction": math.nan, "mean_label": math.nan}
    error = label.astype(np.float64) - prediction
    return {"count": count, "mse": float(np.mean(error * error)), "mae": float(np.mean(np.abs(error))),
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


# --- uncertainty ------------------------------------------------------------------------

def normal_interval(estimate: float, variance: float, level: float = 0.95) -> tuple[float, float]:
    """Two-sided normal interval estimate +- z * sqrt(variance) (NaN when the variance is not finite)."""
    from scipy.stats import norm

    if not (math.isfinite(estimate) and math.isfinite(variance)) or variance < 0:
        return math.nan, math.nan
    half = float(norm.ppf(0.5 + level / 2)) * math.sqrt(variance)
    return estimate - half, estimate + half


def class_places(positive: np.ndarray) -> np.ndarray:
    """Each row's place within its class, in row order: a positive's among the positives, a negative's among
    the negatives (where `structural_components` writes each row's component). int32 below 2**31 rows."""
    index = np.int32 if positive.size < 2 ** 31 else np.int64
    positives_through = np.cumsum(positive, dtype=index)
    places = np.arange(positive.size, dtype=index)
    places -= positives_through                  # a negative: the negatives before it
    positives_through -= 1                       # a positive: the positives before it
    np.copyto(places, positives_through, where=positive)
    return places


def structural_components(positive: np.ndarray, score: np.ndarray,
                          out: tuple[np.ndarray, np.ndarray] | None = None, places: np.ndarray | None = None,
                          chunk_rows: int = 1 << 18) -> float:
    """The AUC of one score vector from one sort; with `out` = (for_positives, for_negatives), also each row's
    DeLong structural component, written into them in row order within each class (`places`, from
    `class_places`, when the caller has it).

    A positive's component is the share of negatives scored below it, a negative's the share of
    positives scored above it; ties count one half (as roc_auc_score). The AUC is computed from integer
    counts (one rounding). The sorted rows are walked `chunk_rows` at a time (cut between tie blocks), so
    beyond the sort's order (4 B a row) what it holds does not grow with the day: 12 B a row at the sort
    (numpy's argsort gives int64), ~0.1 KB a chunk row after it."""
    n = score.size
    index = np.int32 if n < 2 ** 31 else np.int64
    order = np.argsort(score, kind="stable").astype(index)
    positives = int(np.count_nonzero(positive))
    negatives = n - positives
    if out is not None and places is None:
        places = class_places(positive)
    twice_numerator, positives_before, negatives_before = 0, 0, 0
    for start, stop in _tie_aligned_chunks(score, order, chunk_rows):
        rows = order[start:stop]
        ordered, is_positive = score[rows], positive[rows]
        last = np.empty(stop - start, dtype=bool)
        last[-1] = True                              # a chunk ends where a tie block does
        np.not_equal(ordered[1:], ordered[:-1], out=last[:-1])
        ends = np.flatnonzero(last) + 1              # one past each tie block's last row
        in_block_positives = np.diff(np.cumsum(is_positive, dtype=np.int64)[ends - 1], prepend=0)
        in_block_negatives = np.diff(ends, prepend=0) - in_block_positives
        twice_below = 2 * (negatives_before + np.cumsum(in_block_negatives)) - in_block_negatives
        twice_numerator += int(np.dot(in_block_positives, twice_below))
        if out is not None:
            out[0][places[rows[is_positive]]] = np.repeat(twice_below / (2.0 * negatives), in_block_positives)
            twice_above = 2 * (positives - positives_before - np.cumsum(in_block_positives)) + in_block_positives
            out[1][places[rows[~is_positive]]] = np.repeat(twice_above / (2.0 * positives), in_block_negatives)
        positives_before += int(in_block_positives.sum())
        negatives_before += int(in_block_negatives.sum())
    return twice_numerator / (2.0 * positives * negatives)


def _tie_aligned_chunks(score: np.ndarray, order: np.ndarray, chunk_rows: int) -> Iterator[tuple[int, int]]:
    """(start, stop) spans of the sorted positions, about `chunk_rows` long, never cutting a tie block."""
    n, start = score.size, 0
    while start < n:
        stop = min(n, start + chunk_rows)
        window = chunk_rows
        while stop < n:                              # extend over the rest of the tie block at `stop - 1`
            ahead = score[order[stop:stop + window]]
            different = np.flatnonzero(ahead != score[order[stop - 1]])
            if different.size:
                stop += int(different[0])
                break
            stop, window = stop + ahead.size, window * 2
        yield start, stop
        start = stop


def delong_auc(label: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs of k score vectors on the same rows and their k x k covariance (DeLong, fast version).

    label: (n,) 0/1; scores: (k, n) or (n,) (or a list of k (n,) arrays). Ties count one half, as in
    roc_auc_score. Sun & Xu (2014): every row's structural component in
    O(n log n) (`structural_components`: one sort per model); the covariance
    of two models' components gives the variance of their AUC difference on
    the same rows (paired). Needs both classes.
    """
    label = np.asarray(label).reshape(-1) > 0.5
    scores = [np.asarray(score).reshape(-1) for score in scores] if isinstance(scores, (list, tuple)) \
        else np.atleast_2d(np.asarray(scores))
    positives, negatives = int(label.sum()), int((~label).sum())
    if positives == 0 or negatives == 0:
        raise ValueError(f"DeLong needs both classes ({positives} positives, {negatives} negatives)")
    aucs, places = np.empty(len(scores)), class_places(label)
    v_positive, v_negative = np.empty((len(scores), positives)), np.empty((len(scores), negatives))
    for model, score in enumerate(scores):
        aucs[model] = structural_components(label, score, out=(v_positive[model], v_negative[model]), places=places)
    covariance = (np.atleast_2d(np.cov(v_positive)) / positives + np.atleast_2d(np.cov(v_negative)) / negatives
                  if positives > 1 and negatives > 1 else np.full((len(scores), len(scores)), math.nan))
    return aucs, covariance


def bootstrap_counts(units: int, resamples: int, seed: int = 0,
                     max_chunk_elements: int = 1 << 18) -> Iterator[np.ndarray]:
    """Resampling counts, (chunk, units) int64 per chunk: how often each unit is drawn (n out of n, with
    replacement). Deterministic for a seed, whatever is computed from them: two calls with the same
    seed and units give the same counts, so statistics computed apart are still paired. Chunks stay
    small (2 MiB of counts by default): measured 4x faster than 128 MiB chunks on a busy box, where
    fresh large allocations cost page faults each time."""
    rng = np.random.default_rng(seed)
    chunk = max(1, min(resamples, max_chunk_elements // max(units, 1)))
    for start in range(0, resamples, chunk):
        rows = min(chunk, resamples - start)
        draws = rng.integers(0, units, size=(rows, units))
        draws += (np.arange(rows) * units)[:, None]
        yield np.bincount(draws.ravel(), minlength=rows * units).reshape(rows, units)


def bootstrap_ratio_samples(numerators: np.ndarray, denominators: np.ndarray, resamples: int = 1000,
                            seed: int = 0, denominator_index: Sequence[int] | None = None) -> np.ndarray:
    """(resamples, k) bootstrap replicates of sum(numerators[:, j]) / sum(denominators[:, d(j)]) over units.

    numerators: (units, k); denominators: (units, k), or (units, m) with
    `denominator_index` giving column j's denominator (shared denominators,
    such as one task's mask for several models, are summed once). A mean of
    per-row losses is (mask * loss, mask); a weighted mean of per-user values
    is (w * value, w). Every column sees the same resampled units (paired).
    Resamples whose denominator is 0 give NaN.
    """
    numerators = np.asarray(numerators, dtype=np.float64)
    denominators = np.asarray(denominators, dtype=np.float64)
    if numerators.ndim == 1:
        numerators, denominators = numerators[:, None], denominators.reshape(-1, 1)
    index = np.arange(numerators.shape[1]) if denominator_index is None else np.asarray(denominator_index)
    parts = []
    with np.errstate(invalid="ignore", divide="ignore"):
        for counts in bootstrap_counts(numerators.shape[0], resamples, seed):
            weights = counts.astype(np.float64)
            parts.append((weights @ numerators) / (weights @ denominators)[:, index])
    return np.concatenate(parts) if parts else np.zeros((0, numerators.shape[1]))


def bootstrap_block_counts(units: int, resamples: int, seed: int = 0,
                           block_units: int = 4096) -> Iterator[tuple[int, int, np.ndarray]]:
    """Resampling counts (n out of n, with replacement) generated a block of units at a time:
    (start, stop, counts (resamples, stop - start) int64), blocks in order. How many of a resample's n
    draws land in each block is drawn first (multinomial over the blocks, by their sizes), then where in
    the block each lands (uniform): per resample the counts are multinomial(n, 1/n each), the law of
    `bootstrap_counts`, from another random stream (so other replicates for the same seed). Memory is
    O(resamples x block_units), whatever `units`; deterministic for (units, resamples, seed, block_units)."""
    rng = np.random.default_rng(seed)
    starts = np.arange(0, units, max(1, block_units))
    sizes = np.minimum(max(1, block_units), units - starts)
    landing = rng.multinomial(units, sizes / units, size=resamples) if units else np.zeros((resamples, 0), int)
    for block, (start, size) in enumerate(zip(starts.tolist(), sizes.tolist())):
        drawn = landing[:, block]
        position = rng.integers(0, size, size=int(drawn.sum()))
        position += np.repeat(np.arange(resamples) * size, drawn)
        yield start, start + size, np.bincount(position, minlength=resamples * size).reshape(resamples, size)


def bootstrap_ratio_samples_by_block(block_values, units: int, resamples: int = 1000, seed: int = 0,
                                     denominator_index: Sequence[int] | None = None,
                                     max_block_elements: int = 1 << 20):
    """`bootstrap_ratio_samples` without the (units, k) matrices: `block_values(start, stop)` gives the
    numerators (rows, k) and denominators (rows, m) of units [start, stop), float64; each block's
    resampling counts (`bootstrap_block_counts`) are applied and summed, so memory is a block's, not
    the day's. Returns (samples (resamples, k), numerator totals (k,), denominator totals (m,)): the
    totals give the point estimates. Blocks hold at most `max_block_elements` counts."""
    block = max(1, max_block_elements // max(resamples, 1))
    sums = totals = None
    for start, stop, counts in bootstrap_block_counts(units, resamples, seed, block):
        numerators, denominators = block_values(start, stop)
        weights = counts.astype(np.float64)
        if sums is None:
            sums = [np.zeros((resamples, numerators.shape[1])), np.zeros((resamples, denominators.shape[1]))]
            totals = [np.zeros(numerators.shape[1]), np.zeros(denominators.shape[1])]
        sums[0] += weights @ numerators
        sums[1] += weights @ denominators
        totals[0] += numerators.sum(axis=0)
        totals[1] += denominators.sum(axis=0)
    if sums is None:
        raise ValueError("bootstrap over 0 units")
    index = np.arange(sums[0].shape[1]) if denominator_index is None else np.asarray(denominator_index)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums[0] / sums[1][:, index], totals[0], totals[1]


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of one statistic's replicates (NaN replicates ignored)."""
    samples = np.asarray(samples, dtype=np.float64)
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return math.nan, math.nan
    low, high = np.quantile(samples, [0.5 - level / 2, 0.5 + level / 2])
    return float(low), float(high)


# --- per-user metrics -------------------------------------------------------------------

def _group_codes(groups: np.ndarray) -> tuple[np.ndarray, int]:
    _, codes = np.unique(np.asarray(groups), return_inverse=True)
    return codes.reshape(-1), int(codes.max()) + 1 if codes.size else 0


def _position_in_group(sorted_codes: np.ndarray) -> np.ndarray:
    """0-based position of each row within its group, for rows sorted by group."""
    n = sorted_codes.size
    starts = np.ones(n, dtype=bool)
    starts[1:] = sorted_codes[1:] != sorted_codes[:-1]
    first = np.flatnonzero(starts)
    return np.arange(n) - first[np.cumsum(starts) - 1]


@dataclass
class GroupAUC:
    """GAUC = sum_u w_u AUC_u / sum_u w_u over users with both classes (w_u = the user's rows)."""

    value: float
    users: int                 # users with both classes (the ones averaged)
    users_skipped: int         # users with one class only
    rows: int                  # rows of the averaged users
    auc: np.ndarray            # per user (NaN when skipped), indexed by group code
    weight: np.ndarray         # per user: rows, 0 when skipped


def group_auc(label: np.ndarray, score: np.ndarray, groups: np.ndarray) -> GroupAUC:
    """AUC within each group (ties count one half), impression-weighted mean over groups with both classes."""
    label = np.asarray(label, dtype=np.float64).reshape(-1)
    score = np.asarray(score, dtype=np.float64).reshape(-1)
    codes, count = _group_codes(groups)
    if label.size == 0:
        return GroupAUC(math.nan, 0, 0, 0, np.zeros(0), np.zeros(0))
    order = np.lexsort((score, codes))
    sorted_codes, sorted_score, sorted_label = codes[order], score[order], label[order]
    n = order.size
    # Midranks within each group: a tie block is a run of equal (group, score).
    new_block = np.ones(n, dtype=bool)
    new_block[1:] = (sorted_codes[1:] != sorted_codes[:-1]) | (sorted_score[1:] != sorted_score[:-1])
    block_start = np.flatnonzero(new_block)
    block_size = np.diff(np.append(block_start, n))
    block_rank = _position_in_group(sorted_codes)[block_start] + (block_size + 1) / 2.0
    rank = np.repeat(block_rank, block_size)
    rows = np.bincount(sorted_codes, minlength=count).astype(np.float64)
    positives = np.bincount(sorted_codes, weights=sorted_label, minlength=count)
    negatives = rows - positives
    positive_rank_sum = np.bincount(sorted_codes, weights=rank * sorted_label, minlength=count)
    valid = (positives > 0) & (negatives > 0)
    auc = np.full(count, math.nan)
    auc[valid] = ((positive_rank_sum[valid] - positives[valid] * (positives[valid] + 1) / 2)
                  / (positives[valid] * negatives[valid]))
    weight = np.where(valid, rows, 0.0)
    value = float((weight[valid] * auc[valid]).sum() / weight.sum()) if valid.any() else math.nan
    return GroupAUC(value, int(valid.sum()), int((~valid).sum()), int(weight.sum()), auc, weight)


def ranking_score(spec: ModelSpec, predictions: Mapping[str, Any], weights: Mapping[str, float] | None = None,
                  floor: float = 1e-6) -> np.ndarray:
    """log of the paper's ranking score prod_k p_k^{w_k}: sum_k w_k log(max(p_k, floor)).

    Binary tasks enter as probabilities, regression tasks as their predicted
    value (floored: a watch ratio predicted <= 0 ranks as a tiny one). The log
    ranks the same as the product and does not underflow. `weights` default to
    1 for every task; tasks with weight 0 are left out.
    """
    weights = dict(weights or {task.name: 1.0 for task in spec.tasks})
    unknown = sorted(set(weights) - set(spec.task_names))
    if unknown:
        raise ValueError(f"ranking weights name unknown tasks {unknown}; tasks: {spec.task_names}")
    total = None
    for task, weight in weights.items():
        if weight == 0:
            continue
        term = weight * np.log(np.maximum(_numpy(predictions[task]), floor))
        total = term if total is None else total + term
    if total is None:
        raise ValueError("every ranking weight is 0: nothing to rank by")
    return total


@dataclass
class GroupNDCG:
    """Mean over users of NDCG@k (users whose utility is 0 on every row are skipped and counted)."""

    value: float
    k: int
    users: int
    users_skipped: int
    ndcg: np.ndarray           # per user (NaN when skipped), indexed by group code
    valid: np.ndarray          # per user: 1.0 when averaged


def _dcg_at_k(codes: np.ndarray, count: int, order: np.ndarray, utility: np.ndarray, k: int) -> np.ndarray:
    sorted_codes = codes[order]
    position = _position_in_group(sorted_codes)
    discount = np.where(position < k, 1.0 / np.log2(position + 2.0), 0.0)
    return np.bincount(sorted_codes, weights=utility[order] * discount, minlength=count)


def ndcg_at_k(groups: np.ndarray, score: np.ndarray, utility: np.ndarray, k: int = 10) -> GroupNDCG:
    """Per-user NDCG@k of the rows ranked by score (descending), gain = utility (linear).

    Ties in score are broken pessimistically (lower utility first), so a model
    that scores every row alike cannot look good by the table's row order.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    score = np.asarray(score, dtype=np.float64).reshape(-1)
    utility = np.nan_to_num(np.asarray(utility, dtype=np.float64).reshape(-1), nan=0.0)
    if np.any(utility < 0):
        raise ValueError("utility must be >= 0 (NDCG gains)")
    codes, count = _group_codes(groups)
    if score.size == 0:
        return GroupNDCG(math.nan, k, 0, 0, np.zeros(0), np.zeros(0))
    ranked = np.lexsort((utility, -score, codes))
    ideal = np.lexsort((-utility, codes))
    dcg = _dcg_at_k(codes, count, ranked, utility, k)
    idcg = _dcg_at_k(codes, count, ideal, utility, k)
    valid = idcg > 0
    ndcg = np.full(count, math.nan)
    ndcg[valid] = dcg[valid] / idcg[valid]
    value = float(ndcg[valid].mean()) if valid.any() else math.nan
    return GroupNDCG(value, k, int(valid.sum()), int((~valid).sum()), ndcg, valid.astype(np.float64))


def calibration_curve(prediction: np.ndarray, label: np.ndarray, bins: int = 10) -> Dict[str, Any]:
    """Equal-count bins of the prediction: mean prediction vs mean label per bin.

    Equal-count (quantile) bins, not equal-width: predicted rates of rare
    events sit in the first few percent, where equal-width bins would put
    nearly every row in one bin. Also defined for regression values.
    """
    prediction, label = np.asarray(prediction).reshape(-1), np.asarray(label).reshape(-1)   # means in float64
    if prediction.size == 0:
        return {"mean_prediction": [], "observed": [], "count": [], "strategy": "quantile"}
    order = np.argsort(prediction, kind="stable")
    groups = [g for g in np.array_split(order, min(bins, prediction.size)) if g.size]
    return {"mean_prediction": [float(prediction[g].mean(dtype=np.float64)) for g in groups],
            "observed": [float(label[g].mean(dtype=np.float64)) for g in groups],
            "count": [int(g.size) for g in groups], "strategy": "quantile"}


def expected_calibration_error(curve: Mapping[str, Sequence[float]]) -> float:
    """ECE = sum_b (n_b / n) |mean prediction_b - mean label_b| over the bins of `calibration_curve`."""
    counts = np.asarray(curve["count"], dtype=np.float64)
    if counts.sum() == 0:
        return math.nan
    gaps = np.abs(np.asarray(curve["mean_prediction"]) - np.asarray(curve["observed"]))
    return float((counts * gaps).sum() / counts.sum())
