"""Several models scored on the same rows: every figure with its interval, and paired differences.

`PairedScores(spec, labels, masks, users=..., utility=...)` takes the labels
and sample spaces of ONE spec (the candidate's), so every model is judged on
the same rows of every task; `add(key, predictions)` per model, then
`compute()` once. Methods, and why:

- AUC, and differences of AUCs: DeLong (`ple_model.metrics.delong_auc`). The
  variance is exact for the empirical AUC (a U-statistic) and costs one sort
  per model: no resampling noise and no resampling cost, at any row count.
- logloss, MSE and the calibration ratio (mean prediction / observed): a paired
  bootstrap over ROWS (n out of n, `uncertainty.resamples` times); every model
  sees the same resampled rows.
- GAUC and NDCG@k: a paired bootstrap over USERS (the unit these figures
  average over), with the same counts for every model.
Intervals are two-sided at `uncertainty.level`: normal for DeLong, percentile
for the bootstrap. A difference is "significant" when its interval excludes 0.
Rows of one user are not independent; the row-level intervals (DeLong and the
row bootstrap) treat them as if they were, the user-level ones do not.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ple_model import ModelSpec
from ple_model.metrics import (bootstrap_ratio_samples, bootstrap_ratio_samples_by_block, delong_auc, normal_interval,
                               percentile_interval)

from .config import RankingSettings, UncertaintySettings
from .user_blocks import blocked_group_auc, blocked_ndcg, user_blocks

LOGLOSS_CLIP = 1e-7  # as ple_model.metrics' logloss
# Figures compared between models, per task type, with their direction (True = higher is better).
REPORTED_METRICS: dict[str, dict[str, bool]] = {
    "binary": {"auc": True, "gauc": True, "logloss": False},
    "regression": {"mse": False},
}
RANKING_KEY = "ranking"


def _interval(low: float, high: float, method: str, level: float) -> dict[str, Any]:
    finite = math.isfinite(low) and math.isfinite(high)
    return {"low": low if finite else None, "high": high if finite else None, "method": method, "level": level}


def ranking_utility(frame, spec: ModelSpec, settings: RankingSettings) -> np.ndarray:
    """The utility label per row: sum of label columns times their weights (nulls count 0)."""
    weights = settings.utility or {task.label: 1.0 for task in spec.tasks if task.type == "binary"}
    missing = [column for column in weights if column not in frame.columns]
    if missing:
        raise KeyError(f"ranking utility names columns {missing} that the table lacks")
    total = np.zeros(len(frame))
    for column, weight in weights.items():
        values = np.asarray(frame[column].to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)
        total += weight * np.nan_to_num(values, nan=0.0)
    return total


@dataclass
class _Column:
    key: str
    task: str
    metric: str


@dataclass
class PairedScores:
    spec: ModelSpec
    labels: Mapping[str, np.ndarray]
    masks: Mapping[str, np.ndarray]
    users: np.ndarray | None = None
    utility: np.ndarray | None = None
    uncertainty: UncertaintySettings = field(default_factory=UncertaintySettings)
    ranking: RankingSettings = field(default_factory=RankingSettings)
    ranking_note: str | None = None
    predictions: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, key: str, predictions: Mapping[str, np.ndarray]) -> None:
        # As given (float32 from the models): every figure casts to float64 where it computes, so a
        # float64 copy of every model's predictions is not held for the whole computation.
        self.predictions[key] = {t: np.asarray(v) for t, v in predictions.items() if t in self.spec.task_names}

    # --- computing --------------------------------------------------------------------

    def compute(self) -> "PairedScores":
        started = time.perf_counter()
        self._delong = {}
        for task in self.spec.tasks:
            if task.type == "binary":
                self._delong[task.name] = self._delong_task(task.name)
        self.seconds["delong"] = time.perf_counter() - started
        started = time.perf_counter()
        self._row_columns, self._row_samples, self._row_points = self._row_bootstrap()
        self.seconds["row_bootstrap"] = time.perf_counter() - started
        started = time.perf_counter()
        self._user_figures: dict[tuple[str, str], dict[str, Any]] = {}
        self._user_columns, self._user_samples = self._user_bootstrap()
        self.seconds["user_figures_and_bootstrap"] = time.perf_counter() - started
        return self

    def _in_space(self, task: str) -> np.ndarray:
        return np.asarray(self.masks[task]).reshape(-1) > 0

    def _delong_task(self, task: str) -> dict[str, Any] | None:
        keys = [k for k, p in self.predictions.items() if task in p]
        in_space = self._in_space(task)
        rows = slice(None) if in_space.all() else in_space    # a task on every row: no copies of the day
        label = np.asarray(self.labels[task])[rows]
        if not keys or label.size == 0 or label.min() == label.max():
            return None
        aucs, covariance = delong_auc(label, [self.predictions[k][task][rows] for k in keys])  # no stacked copy
        return {"keys": keys, "aucs": aucs, "covariance": covariance}

    def _row_bootstrap(self):
        """Columns (model, task, metric) of per-row statistics; one bootstrap over rows for all of them.
        The per-row statistics are computed a block of rows at a time, never for the whole day at once
        (two (rows, 16) float64 matrices were 128+ B a row, 1.3 GB at 10M rows):
        ple_model.metrics.bootstrap_ratio_samples_by_block."""
        columns: list[_Column] = []
        denominator_of: dict[tuple[str, str], int] = {}
        den_index: list[int] = []
        for task in self.spec.tasks:
            for key, predictions in self.predictions.items():
                if task.name not in predictions:
                    continue
                first = "logloss" if task.type == "binary" else "mse"
                for metric, denominator in ((first, ("mask", task.name)), ("calibration", ("label", task.name))):
                    denominator_of.setdefault(denominator, len(denominator_of))
                    columns.append(_Column(key, task.name, metric))
                    den_index.append(denominator_of[denominator])
        rows = len(np.asarray(self.masks[self.spec.tasks[0].name]).reshape(-1)) if self.spec.tasks else 0
        if not columns or rows == 0:
            return columns, None, {(c.key, c.task, c.metric): math.nan for c in columns}
        samples, numerator_totals, denominator_totals = bootstrap_ratio_samples_by_block(
            lambda start, stop: self._row_block(columns, list(denominator_of), slice(start, stop)), rows,
            self.uncertainty.resamples, self.uncertainty.seed, den_index)
        points = {}
        for index, column in enumerate(columns):
            total = denominator_totals[den_index[index]]
            points[(column.key, column.task, column.metric)] = (float(numerator_totals[index] / total) if total > 0
                                                                else math.nan)
        return columns, samples if self.uncertainty.resamples else None, points

    def _row_block(self, columns: list[_Column], denominators: list[tuple[str, str]],
                   rows: slice) -> tuple[np.ndarray, np.ndarray]:
        """One block of rows: (rows, columns) numerators and (rows, denominators) denominators, float64."""
        numerator_block = np.empty((rows.stop - rows.start, len(columns)))
        denominator_block = np.empty((rows.stop - rows.start, len(denominators)))
        # each task's sample space and label cast once per block, whatever the number of models and metrics
        spaces = {task: self._block_space_and_label(task, rows) for task in {c.task for c in columns}}
        for index, (kind, task) in enumerate(denominators):
            in_space, label = spaces[task]
            denominator_block[:, index] = in_space if kind == "mask" else in_space * label
        for index, column in enumerate(columns):
            numerator_block[:, index] = self._row_numerator(column, rows, *spaces[column.task])
        return numerator_block, denominator_block

    def _block_space_and_label(self, task: str, rows: slice) -> tuple[np.ndarray, np.ndarray]:
        in_space = (np.asarray(self.masks[task]).reshape(-1)[rows] > 0).astype(np.float64)
        label = np.nan_to_num(np.asarray(self.labels[task]).reshape(-1)[rows].astype(np.float64))
        return in_space, label

    def _row_numerator(self, column: _Column, rows: slice, in_space: np.ndarray, label: np.ndarray) -> np.ndarray:
        """Per row of `rows`: the loss (logloss / squared error) or the prediction (calibration), 0 outside the
        sample space (`in_space`, `label`: the block's, from _block_space_and_label)."""
        prediction = np.asarray(self.predictions[column.key][column.task]).reshape(-1)[rows].astype(np.float64)
        if column.metric == "logloss":
            clipped = np.clip(prediction, LOGLOSS_CLIP, 1 - LOGLOSS_CLIP)
            return in_space * -(label * np.log(clipped) + (1 - label) * np.log(1 - clipped))
        if column.metric == "mse":
            return in_space * (prediction - label) ** 2
        return in_space * prediction

    def _user_bootstrap(self):
        """GAUC per binary task and NDCG@k per model, then one bootstrap over users for all of them. Both are
        computed a block of users at a time (evaluation/user_blocks.py: same figures, bounded work)."""
        if self.users is None:
            return [], None
        blocks = user_blocks(self.users)
        columns: list[_Column] = []
        numerators, denominators = [], []
        for task in self.spec.tasks:
            if task.type != "binary":
                continue
            in_space = self._in_space(task.name)
            label = np.asarray(self.labels[task.name]).reshape(-1)
            for key, predictions in self.predictions.items():
                if task.name not in predictions:
                    continue
                result = blocked_group_auc(blocks, label, np.asarray(predictions[task.name]).reshape(-1), in_space)
                self._user_figures[(key, task.name)] = {"gauc": result.value, "gauc_users": result.users,
                                                        "gauc_users_skipped": result.users_skipped}
                columns.append(_Column(key, task.name, "gauc"))
                numerators.append(np.nan_to_num(result.auc) * result.weight)
                denominators.append(result.weight)
        if self.utility is not None:
            utility = np.asarray(self.utility).reshape(-1)
            for key, predictions in self.predictions.items():
                weights = self.ranking.weights or {t.name: 1.0 for t in self.spec.tasks}
                lacking = [t for t, w in weights.items() if w and t not in predictions]
                if lacking:
                    self._user_figures[(key, RANKING_KEY)] = {"error": f"does not predict {lacking}"}
                    continue
                result = blocked_ndcg(blocks, self.spec, predictions, weights, utility, self.ranking.k)
                self._user_figures[(key, RANKING_KEY)] = {"ndcg": result.value, "k": result.k, "users": result.users,
                                                          "users_skipped": result.users_skipped}
                columns.append(_Column(key, RANKING_KEY, "ndcg"))
                numerators.append(np.nan_to_num(result.ndcg))
                denominators.append(result.valid)
        if not columns or self.uncertainty.resamples == 0:
            return columns, None
        samples = bootstrap_ratio_samples(np.stack(numerators, axis=1), np.stack(denominators, axis=1),
                                          self.uncertainty.resamples, self.uncertainty.seed + 1)
        return columns, samples

    # --- reading ----------------------------------------------------------------------

    def _column(self, columns: list[_Column], key: str, task: str, metric: str) -> int | None:
        return next((i for i, c in enumerate(columns) if (c.key, c.task, c.metric) == (key, task, metric)), None)

    def _bootstrap_interval(self, key: str, task: str, metric: str) -> dict[str, Any] | None:
        level = self.uncertainty.level
        for columns, samples, unit in ((self._row_columns, self._row_samples, "rows"),
                                       (self._user_columns, self._user_samples, "users")):
            index = self._column(columns, key, task, metric)
            if index is not None and samples is not None:
                return _interval(*percentile_interval(samples[:, index], level), f"bootstrap over {unit}", level)
        return None

    def _auc_interval(self, key: str, task: str) -> dict[str, Any] | None:
        result = self._delong.get(task)
        if result is None or key not in result["keys"]:
            return None
        i = result["keys"].index(key)
        return _interval(*normal_interval(float(result["aucs"][i]), float(result["covariance"][i, i]),
                                          self.uncertainty.level), "delong", self.uncertainty.level)

    def task_figures(self, key: str) -> dict[str, dict[str, Any]]:
        """Per task: GAUC (+ users averaged / skipped) and the intervals of auc, gauc, logloss/mse, calibration."""
        out: dict[str, dict[str, Any]] = {}
        for task in self.spec.tasks:
            if task.name not in self.predictions.get(key, {}):
                continue
            figures: dict[str, Any] = dict(self._user_figures.get((key, task.name), {}))
            intervals = {}
            if task.type == "binary":
                intervals["auc"] = self._auc_interval(key, task.name)
            for metric in ("gauc", "logloss", "mse", "calibration"):
                found = self._bootstrap_interval(key, task.name, metric)
                if found:
                    intervals[metric] = found
            figures["intervals"] = {m: v for m, v in intervals.items() if v is not None}
            out[task.name] = figures
        return out

    def ranking_figures(self, key: str) -> dict[str, Any] | None:
        """NDCG@k of the model's ranking score (with its interval), or why there is none."""
        if self.utility is None:
            return {"error": self.ranking_note} if self.ranking_note else None
        figures = dict(self._user_figures.get((key, RANKING_KEY), {}))
        if "ndcg" in figures:
            figures["interval"] = self._bootstrap_interval(key, RANKING_KEY, "ndcg")
        return figures

    def improvement(self, key: str, reference: str, task: str, metric: str, higher_is_better: bool) -> dict[str, Any]:
        """How much better `key` is than `reference` (direction-aware), its interval, and whether it excludes 0."""
        level = self.uncertainty.level
        sign = 1.0 if higher_is_better else -1.0
        result: dict[str, Any] = {"difference": None, "improvement": None, "low": None, "high": None,
                                  "significant": False, "method": None, "level": level}
        if metric == "auc":
            delong = self._delong.get(task)
            if delong is None or key not in delong["keys"] or reference not in delong["keys"]:
                return result
            i, j = delong["keys"].index(key), delong["keys"].index(reference)
            difference = float(delong["aucs"][i] - delong["aucs"][j])
            cov = delong["covariance"]
            low, high = normal_interval(difference, float(cov[i, i] + cov[j, j] - 2 * cov[i, j]), level)
            method = "delong"
        else:
            located = self._paired_samples(key, reference, task, metric)
            if located is None:
                return result
            difference, samples, method = located
            low, high = percentile_interval(samples, level) if samples is not None else (math.nan, math.nan)
        improvement = sign * difference
        bounds = sorted((sign * low, sign * high))
        finite = all(math.isfinite(b) for b in bounds)
        result.update(difference=difference, improvement=improvement, method=method,
                      low=bounds[0] if finite else None, high=bounds[1] if finite else None,
                      significant=bool(finite and (bounds[0] > 0 or bounds[1] < 0)))
        return result

    def _paired_samples(self, key: str, reference: str, task: str, metric: str):
        if metric == "gauc" or task == RANKING_KEY:
            columns, samples, unit = self._user_columns, self._user_samples, "users"
            name = "ndcg" if task == RANKING_KEY else "gauc"
            mine = self._user_figures.get((key, task), {}).get(name)
            theirs = self._user_figures.get((reference, task), {}).get(name)
        else:
            columns, samples, unit = self._row_columns, self._row_samples, "rows"
            name = metric
            mine = self._row_points.get((key, task, metric))
            theirs = self._row_points.get((reference, task, metric))
        if mine is None or theirs is None or not (math.isfinite(mine) and math.isfinite(theirs)):
            return None
        a, b = self._column(columns, key, task, name), self._column(columns, reference, task, name)
        paired = samples[:, a] - samples[:, b] if samples is not None and a is not None and b is not None else None
        return float(mine - theirs), paired, f"paired bootstrap over {unit}"

    def settings_record(self) -> dict[str, Any]:
        return {"level": self.uncertainty.level, "bootstrap_resamples": self.uncertainty.resamples,
                "bootstrap_seed": self.uncertainty.seed,
                "methods": {"auc": "delong", "logloss/mse/calibration": "paired bootstrap over rows",
                            "gauc/ndcg": "paired bootstrap over users"},
                "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
                "ranking": {"user_column": self.ranking.user_column, "k": self.ranking.k,
                            "weights": self.ranking.weights or {t.name: 1.0 for t in self.spec.tasks},
                            "utility": self.ranking.utility or {t.label: 1.0 for t in self.spec.tasks
                                                                if t.type == "binary"},
                            "note": self.ranking_note}}
