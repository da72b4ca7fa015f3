"""The quality gate in front of the registry.

A candidate passes when
1. every gated metric of every task is finite (AUC and logloss for binary
   tasks, MSE for regression tasks; an AUC that is NaN because the sample
   space holds one class fails too: the data cannot vouch for the model), and
2. when a model is published, no task is worse than it by more than the
   tolerance on any gated metric, direction-aware: worse = lower AUC, higher
   logloss, higher MSE.

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

from pydantic import BaseModel, ConfigDict, Field

from .scoring import COMPARED_METRICS

GATE_FAILED_EXIT_CODE = 3  # `ple publish`: distinct from errors (1) so a scheduler can tell "refused" from "broken"


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


@dataclass
class GateFailure:
    task: str
    metric: str
    reason: str                      # "not_finite" | "worse_than_production" | "missing"
    candidate: float | None = None
    production: float | None = None
    worse_by: float | None = None
    tolerance: float | None = None

    def message(self) -> str:
        if self.reason == "not_finite":
            return f"{self.task}.{self.metric} is {self.candidate} (not a finite number)"
        if self.reason == "missing":
            return f"{self.task}.{self.metric} is missing from the candidate's metrics"
        return (f"{self.task}.{self.metric} is worse than production by {self.worse_by:.6f} "
                f"(candidate {self.candidate:.6f}, production {self.production:.6f}, tolerance {self.tolerance:g})")


@dataclass
class GateResult:
    passed: bool
    failures: list[GateFailure] = field(default_factory=list)
    checked: list[dict[str, Any]] = field(default_factory=list)
    production: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "failures": [{**asdict(f), "message": f.message()} for f in self.failures],
                "checked": self.checked, "production": self.production}


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_gate(spec, candidate: dict[str, dict[str, Any]], production: dict[str, dict[str, Any]] | None,
               tolerances: Tolerances, production_info: dict[str, Any] | None = None) -> GateResult:
    """candidate / production: {task: metrics} from evaluation.scoring (same rows)."""
    failures: list[GateFailure] = []
    checked: list[dict[str, Any]] = []
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
                worse_by = (reference - value) if higher_is_better else (value - reference)
                tolerance = tolerances.for_task(task.name, metric)
                row.update(production=reference, worse_by=worse_by, tolerance=tolerance)
                if worse_by > tolerance:
                    failures.append(GateFailure(task.name, metric, "worse_than_production", value, reference,
                                                worse_by, tolerance))
                    checked.append({**row, "ok": False})
                    continue
            checked.append({**row, "ok": True})
    return GateResult(passed=not failures, failures=failures, checked=checked, production=production_info)
