"""The quality gate in front of the registry.

A candidate passes when
1. every gated metric of every task is finite (AUC and logloss for binary
   tasks, MSE for regression tasks; an AUC that is NaN because the sample
   space holds one class fails too: the data cannot vouch for the model),
2. it clears the floors, published model or not (`Floors`, with the evidence
   `ple publish` computes on the gate's rows, `GateEvidence`): no binary task
   whose AUC interval (DeLong) contains 0.5; no task whose logloss is worse
   than the constant base-rate predictor's beyond a tolerance; no task
   confidently worse than the single-task baseline (when the evaluation record
   has one); every task's calibration (mean prediction / observed) inside a
   band; and
3. when a model is published, no task is worse than it by more than the
   tolerance on any gated metric, direction-aware: worse = lower AUC, higher
   logloss, higher MSE. With the paired interval of the difference (same rows,
   evaluation/comparison.py) it is refused when the whole interval lies beyond
   the tolerance (confidently worse by more than allowed); without one, when
   the point difference does.

Tolerances are absolute differences on each metric, per metric with
per-task overrides (conf/publish.yaml):

    tolerance:
      default: {auc: 0.002, logloss: 0.005, mse: 0.0005}
      tasks: {share: {auc: 0.005}}
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from evaluation.scoring import COMPARED_METRICS


class Tolerances(BaseModel):
    model_config = ConfigDict(extra="forbid")

    default: dict[str, float] = Field(default_factory=lambda: {"auc": 0.002, "logloss": 0.005, "mse": 0.0005},
                                      description="allowed absolute worsening per metric, every task")
    tasks: dict[str, dict[str, float]] = Field(default_factory=dict,
                                               description="per-task overrides: {task: {metric: tolerance}}")

    def for_task(self, task: str, metric: str) -> float:
        value = self.tasks.get(task, {}).get(metric, self.default.get(metric, 0.0))
        if value < 0:
            raise ValueError(f"tolerance for {task}.{metric} must be >= 0, got {value}")
        return float(value)


class Floors(BaseModel):
    """What every candidate must clear, first model of a registry included (conf/publish.yaml `floors`)."""

    model_config = ConfigDict(extra="forbid")

    chance_auc: bool = Field(True, description="refuse a binary task whose AUC interval contains 0.5")
    prior_logloss_tolerance: float | None = Field(
        0.0, ge=0, description="refuse a binary task whose logloss exceeds the constant base-rate predictor's by more "
                               "than this (null: off)")
    single_task_tolerance: float | None = Field(
        0.01, ge=0, description="refuse a task confidently worse than the single-task baseline (the evaluation "
                                "record's paired interval) by more than this, in its gain metric (null: off)")
    calibration_band: tuple[float, float] | None = Field(
        (0.5, 2.0), description="refuse a task whose mean prediction / observed is outside [low, high] (null: off)")
    calibration_tasks: dict[str, tuple[float, float]] = Field(default_factory=dict,
                                                              description="per-task calibration bands")

    def band(self, task: str) -> tuple[float, float] | None:
        return self.calibration_tasks.get(task, self.calibration_band)


@dataclass
class GateEvidence:
    """Figures of the candidate on the gate's rows beyond its point metrics (publishing/publish.py)."""

    auc_intervals: dict[str, dict[str, Any]] = field(default_factory=dict)   # task -> {low, high, level}
    prior_logloss: dict[str, float] = field(default_factory=dict)            # task -> logloss of the base rate
    production: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # task -> metric -> improvement
    single_task: dict[str, dict[str, Any]] = field(default_factory=dict)     # task -> {metric, improvement, low, high}


@dataclass
class GateFailure:
    task: str
    metric: str
    reason: str   # not_finite | missing | worse_than_production | auc_contains_chance | worse_than_prior
    #               | worse_than_single_task | calibration_outside_band
    candidate: float | None = None
    production: float | None = None
    worse_by: float | None = None
    tolerance: float | None = None
    detail: str = ""

    def message(self) -> str:
        if self.reason == "not_finite":
            return f"{self.task}.{self.metric} is {self.candidate} (not a finite number)"
        if self.reason == "missing":
            return f"{self.task}.{self.metric} is missing from the candidate's metrics"
        if self.reason != "worse_than_production":
            return f"{self.task}.{self.metric}: {self.detail}"
        return (f"{self.task}.{self.metric} is worse than production by {self.worse_by:.6f} "
                f"(candidate {self.candidate:.6f}, production {self.production:.6f}, tolerance {self.tolerance:g}"
                f"{self.detail})")


@dataclass
class GateResult:
    passed: bool
    failures: list[GateFailure] = field(default_factory=list)
    checked: list[dict[str, Any]] = field(default_factory=list)
    production: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "failures": [{**asdict(f), "message": f.message()} for f in self.failures],
                "checked": self.checked, "production": self.production}


def base_rate_logloss(labels) -> float:
    """Logloss of the constant predictor of the labels' own rate (the best constant on these rows;
    NaN without rows or with one class only: no floor then)."""
    rate = float(np.mean(labels)) if len(labels) else math.nan
    if not 0 < rate < 1:
        return math.nan
    return -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_gate(spec, candidate: dict[str, dict[str, Any]], production: dict[str, dict[str, Any]] | None,
               tolerances: Tolerances, production_info: dict[str, Any] | None = None,
               evidence: GateEvidence | None = None, floors: Floors | None = None) -> GateResult:
    """candidate / production: {task: metrics} from evaluation.scoring (same rows). Without
    `evidence` the floors that need it (AUC interval, prior, single task) are not checked."""
    failures: list[GateFailure] = []
    checked: list[dict[str, Any]] = []
    evidence = evidence or GateEvidence()
    for task in spec.tasks:
        for metric, higher_is_better in COMPARED_METRICS[task.type].items():
            value = (candidate.get(task.name) or {}).get(metric)
            row: dict[str, Any] = {"task": task.name, "metric": metric, "candidate": value,
                                   "higher_is_better": higher_is_better}
            if value is None:
                failures.append(GateFailure(task.name, metric, "missing"))
                checked.append({**row, "ok": False})
                continue
            if not _finite(value):
                failures.append(GateFailure(task.name, metric, "not_finite", candidate=value))
                checked.append({**row, "ok": False})
                continue
            reference = (production or {}).get(task.name, {}).get(metric) if production else None
            if _finite(reference):
                failure = _production_check(row, task.name, metric, value, reference, tolerances,
                                            evidence.production.get(task.name, {}).get(metric))
                if failure is not None:
                    failures.append(failure)
                    checked.append({**row, "ok": False})
                    continue
            checked.append({**row, "ok": True})
    if floors is not None:
        floor_failures = floor_checks(spec, candidate, evidence, floors)
        failures += floor_failures
        checked += [{"task": f.task, "metric": f.metric, "floor": f.reason, "candidate": f.candidate, "ok": False}
                    for f in floor_failures]
    return GateResult(passed=not failures, failures=failures, checked=checked, production=production_info)


def _production_check(row: dict[str, Any], task: str, metric: str, value: float, reference: float,
                      tolerances: Tolerances, paired: dict[str, Any] | None) -> GateFailure | None:
    """Worse than production beyond the tolerance: by the paired interval of the improvement when
    there is one (its upper end below -tolerance), else by the point difference."""
    higher_is_better = row["higher_is_better"]
    worse_by = (reference - value) if higher_is_better else (value - reference)
    tolerance = tolerances.for_task(task, metric)
    row.update(production=reference, worse_by=worse_by, tolerance=tolerance)
    interval = paired if paired and paired.get("high") is not None else None
    if interval is not None:
        row.update(improvement_interval=[interval["low"], interval["high"]], interval_method=interval.get("method"))
        refused = interval["high"] < -tolerance
        detail = (f"; improvement interval [{interval['low']:.6f}, {interval['high']:.6f}] "
                  f"({interval.get('method')}) lies below -{tolerance:g}")
    else:
        refused, detail = worse_by > tolerance, ""
    return GateFailure(task, metric, "worse_than_production", value, reference, worse_by, tolerance,
                       detail) if refused else None


def floor_checks(spec, candidate: dict[str, dict[str, Any]], evidence: GateEvidence,
                 floors: Floors) -> list[GateFailure]:
    """The floors every candidate must clear, each failure with its reason."""
    failures = []
    for task in spec.tasks:
        metrics = candidate.get(task.name) or {}
        interval = evidence.auc_intervals.get(task.name)
        if task.type == "binary" and floors.chance_auc and interval and interval.get("low") is not None \
                and interval["low"] <= 0.5 <= interval["high"]:
            failures.append(GateFailure(task.name, "auc", "auc_contains_chance", metrics.get("auc"), detail=(
                f"AUC {metrics.get('auc', math.nan):.4f} with interval [{interval['low']:.4f}, {interval['high']:.4f}] "
                "contains 0.5: no better than chance on these rows")))
        prior = evidence.prior_logloss.get(task.name)
        logloss = metrics.get("logloss")
        if floors.prior_logloss_tolerance is not None and _finite(prior) and _finite(logloss) \
                and logloss > prior + floors.prior_logloss_tolerance:
            failures.append(GateFailure(task.name, "logloss", "worse_than_prior", logloss, worse_by=logloss - prior,
                                        tolerance=floors.prior_logloss_tolerance, detail=(
                f"logloss {logloss:.6f} is worse than the constant base-rate predictor's {prior:.6f} "
                f"by more than {floors.prior_logloss_tolerance:g}")))
        failures += _single_task_and_calibration(task.name, metrics, evidence, floors)
    return failures


def _single_task_and_calibration(task: str, metrics: dict[str, Any], evidence: GateEvidence,
                                 floors: Floors) -> list[GateFailure]:
    failures = []
    single = evidence.single_task.get(task)
    if floors.single_task_tolerance is not None and single and single.get("high") is not None \
            and single["high"] < -floors.single_task_tolerance:
        failures.append(GateFailure(task, single["metric"], "worse_than_single_task", metrics.get(single["metric"]),
                                    tolerance=floors.single_task_tolerance, detail=(
            f"worse than the single-task baseline: improvement interval [{single['low']:.6f}, {single['high']:.6f}] "
            f"lies below -{floors.single_task_tolerance:g}")))
    band, ratio = floors.band(task), metrics.get("calibration")
    if band is not None and _finite(ratio) and not band[0] <= ratio <= band[1]:
        failures.append(GateFailure(task, "calibration", "calibration_outside_band", ratio, detail=(
            f"calibration (mean prediction / observed) {ratio:.4f} is outside the band [{band[0]:g}, {band[1]:g}]")))
    return failures
