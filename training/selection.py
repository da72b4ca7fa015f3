"""Model selection and early stopping: which epoch's weights model.pt keeps, and when to stop.

Every strategy sees each epoch's validation metrics ({task: {metric: value}},
computed on rank 0 over every validation row) and answers: which tasks'
weights to save now (all of them, some of them, or none) and whether to stop.
Early stopping always uses the same criterion as selection.

- `BestEpoch(criterion)`: one number per epoch, the best epoch's whole model
  is kept; stop after `patience` epochs without improvement. Criteria:
  - `MeanNormalized` (default for multi-task models): mean over tasks of the
    direction-aware relative change of each task's metric against a
    reference, (m - r) / |r| for higher-is-better metrics (AUC) and
    (r - m) / |r| for lower-is-better ones (MSE, logloss). The reference is
    the run's first epoch, or a baseline run's selected metrics. No task is
    silently favoured: each counts once, on the same scale.
  - `SingleMetric`: one task's metric (`early_stop_metric`), when asked for.
  - `LastEpoch`: the last epoch (no early stopping).
- `PerTask` (single_task): each task's network is kept at ITS OWN best epoch
  (an independent network per task shares nothing, so mixing epochs is exact);
  stop when no task improved for `patience` epochs.

A metric that is NaN (e.g. AUC with one class) never counts as an
improvement; a task whose reference is NaN is left out of the mean, and the
record says so.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from ple_model import ModelSpec
from ple_model.metrics import GAIN_METRIC

Metrics = Mapping[str, Mapping[str, Any]]

# Direction of every metric a task reports (ple_model.metrics.evaluate_tasks).
METRIC_DIRECTIONS = {"auc": "max", "logloss": "min", "mse": "min", "mae": "min"}
METRICS_BY_TASK_TYPE = {"binary": ("auc", "logloss"), "regression": ("mse", "mae")}


def metric_direction(metric: str) -> str:
    """"max" for higher-is-better metrics (AUC), "min" otherwise."""
    return METRIC_DIRECTIONS.get(metric, "min")


def task_metrics(spec: ModelSpec, overrides: Mapping[str, str]) -> dict[str, str]:
    """{task: metric} for every task: the override, else the MTL-gain metric of its type (AUC / MSE)."""
    unknown = sorted(set(overrides) - set(spec.task_names))
    if unknown:
        raise ValueError(f"selection_metrics names unknown tasks {unknown}; tasks are {spec.task_names}")
    chosen = {}
    for task in spec.tasks:
        metric = overrides.get(task.name, GAIN_METRIC[task.type][0])
        if metric not in METRICS_BY_TASK_TYPE[task.type]:
            raise ValueError(f"selection metric {metric!r} for {task.type} task {task.name!r}; valid: "
                             f"{list(METRICS_BY_TASK_TYPE[task.type])}")
        chosen[task.name] = metric
    return chosen


def _value(metrics: Metrics, task: str, metric: str) -> float:
    value = (metrics.get(task) or {}).get(metric)
    return math.nan if value is None else float(value)


def _better(value: float, best: float | None, direction: str) -> bool:
    if math.isnan(value):
        return False
    if best is None or math.isnan(best):
        return True
    return value > best if direction == "max" else value < best


def _finite_or_none(value: float) -> float | None:
    return None if value is None or math.isnan(value) else value


# --- criteria: metrics -> one number ---------------------------------------------------

class SingleMetric:
    name = "metric"

    def __init__(self, dotted: str, direction: str):
        self.task, self.metric = dotted.split(".", 1)
        self.direction = direction

    def value(self, metrics: Metrics) -> float:
        return _value(metrics, self.task, self.metric)

    def describe(self) -> dict[str, Any]:
        return {"task": self.task, "metric": self.metric, "direction": self.direction}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        return None


class LastEpoch(SingleMetric):
    name = "last_epoch"

    def __init__(self):
        self.direction = "max"
        self._epochs = 0

    def value(self, metrics: Metrics) -> float:
        self._epochs += 1
        return float(self._epochs)

    def describe(self) -> dict[str, Any]:
        return {"rule": "the last epoch trained"}

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": self._epochs}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._epochs = int(state.get("epochs", 0))


class MeanNormalized:
    name = "mean_normalized"
    direction = "max"

    def __init__(self, metrics_by_task: Mapping[str, str], reference: Metrics | None = None,
                 reference_source: str = "first_epoch"):
        self.metrics_by_task = dict(metrics_by_task)
        self.reference: dict[str, float] | None = None
        self.reference_source = reference_source
        if reference is not None:
            self._set_reference(reference)

    def _set_reference(self, metrics: Metrics) -> None:
        self.reference = {t: _value(metrics, t, m) for t, m in self.metrics_by_task.items()}

    @property
    def included_tasks(self) -> list[str]:
        return [t for t, r in (self.reference or {}).items() if not math.isnan(r)]

    def value(self, metrics: Metrics) -> float:
        if self.reference is None:
            self._set_reference(metrics)
        gains = []
        for task in self.included_tasks:
            metric = self.metrics_by_task[task]
            value, reference = _value(metrics, task, metric), self.reference[task]
            change = (value - reference) / max(abs(reference), 1e-12)
            gains.append(change if metric_direction(metric) == "max" else -change)
        return math.fsum(gains) / len(gains) if gains else math.nan

    def describe(self) -> dict[str, Any]:
        return {"rule": "mean over tasks of the direction-aware relative change of each task's metric "
                        "against the reference: (m - r)/|r| for max metrics, (r - m)/|r| for min metrics",
                "tasks": {t: {"metric": m, "direction": metric_direction(m)} for t, m in self.metrics_by_task.items()},
                "reference": {"source": self.reference_source,
                              "metrics": {t: _finite_or_none(v) for t, v in (self.reference or {}).items()}},
                "excluded_tasks": sorted(set(self.metrics_by_task) - set(self.included_tasks))
                if self.reference is not None else []}

    def state_dict(self) -> dict[str, Any]:
        return {"reference": self.reference}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("reference") is not None:
            self.reference = {t: (math.nan if v is None else float(v)) for t, v in state["reference"].items()}


# --- strategies ---------------------------------------------------------------------

class Decision:
    """What to do after an epoch: save these tasks' weights (None = the whole model), stop or not."""

    def __init__(self, save: bool, tasks: Sequence[str] | None, stop: bool):
        self.save, self.tasks, self.stop = save, (list(tasks) if tasks is not None else None), stop


class BestEpoch:
    def __init__(self, criterion, patience: int):
        self.criterion = criterion
        self.patience = patience
        self.values: list[float | None] = []
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.bad_epochs = 0

    @property
    def name(self) -> str:
        return self.criterion.name

    def observe(self, epoch: int, metrics: Metrics) -> Decision:
        value = self.criterion.value(metrics)
        self.values.append(_finite_or_none(value))
        if _better(value, self.best_value, self.criterion.direction):
            self.best_value, self.best_epoch, self.bad_epochs = value, epoch, 0
            return Decision(save=True, tasks=None, stop=False)
        self.bad_epochs += 1
        return Decision(save=False, tasks=None, stop=self.bad_epochs >= self.patience)

    def best(self) -> dict[str, Any]:
        """The run record's `best` entry (kept for readers of the old format)."""
        metric = (f"{self.criterion.task}.{self.criterion.metric}" if self.name == "metric" else self.name)
        return {"value": _finite_or_none(self.best_value), "epoch": self.best_epoch, "metric": metric}

    def record(self, history: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        chosen = self.best_epoch
        validation = next((h.get("validation") for h in history if h.get("epoch") == chosen), None)
        return {"criterion": self.name, "definition": self.criterion.describe(), "patience": self.patience,
                "values": list(self.values), "chosen_epoch": chosen, "chosen_value": _finite_or_none(self.best_value),
                "selected_metrics": validation}

    def state_dict(self) -> dict[str, Any]:
        return {"values": self.values, "best_value": self.best_value, "best_epoch": self.best_epoch,
                "bad_epochs": self.bad_epochs, "criterion": self.criterion.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.values = list(state["values"])
        self.best_value, self.best_epoch = state["best_value"], state["best_epoch"]
        self.bad_epochs = int(state["bad_epochs"])
        self.criterion.load_state_dict(state.get("criterion") or {})


class PerTask:
    name = "per_task"

    def __init__(self, metrics_by_task: Mapping[str, str], patience: int):
        self.metrics_by_task = dict(metrics_by_task)
        self.patience = patience
        self.values: dict[str, list[float | None]] = {t: [] for t in self.metrics_by_task}
        self.best_value: dict[str, float | None] = {t: None for t in self.metrics_by_task}
        self.best_epoch: dict[str, int | None] = {t: None for t in self.metrics_by_task}
        self.bad_epochs: dict[str, int] = {t: 0 for t in self.metrics_by_task}
        self.saved = False

    def observe(self, epoch: int, metrics: Metrics) -> Decision:
        improved = []
        for task, metric in self.metrics_by_task.items():
            value = _value(metrics, task, metric)
            self.values[task].append(_finite_or_none(value))
            if _better(value, self.best_value[task], metric_direction(metric)):
                self.best_value[task], self.best_epoch[task], self.bad_epochs[task] = value, epoch, 0
                improved.append(task)
            else:
                self.bad_epochs[task] += 1
        # The first save writes every task (one whose metric is undefined keeps the weights it has).
        tasks = improved if self.saved else list(self.metrics_by_task)
        self.saved = self.saved or bool(tasks)
        stop = all(b >= self.patience for b in self.bad_epochs.values())
        return Decision(save=bool(tasks), tasks=tasks, stop=stop)

    def best(self) -> dict[str, Any]:
        return {"value": None, "epoch": dict(self.best_epoch), "metric": self.name}

    def record(self, history: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        by_epoch = {h.get("epoch"): h.get("validation") or {} for h in history}
        selected = {t: by_epoch.get(e, {}).get(t) for t, e in self.best_epoch.items()}
        return {"criterion": self.name,
                "definition": {"rule": "each task's own network at the epoch where its metric was best",
                               "tasks": {t: {"metric": m, "direction": metric_direction(m)}
                                         for t, m in self.metrics_by_task.items()}},
                "patience": self.patience, "values": {t: list(v) for t, v in self.values.items()},
                "chosen_epoch": dict(self.best_epoch),
                "chosen_value": {t: _finite_or_none(v) for t, v in self.best_value.items()},
                "selected_metrics": selected}

    def state_dict(self) -> dict[str, Any]:
        return {"values": self.values, "best_value": self.best_value, "best_epoch": self.best_epoch,
                "bad_epochs": self.bad_epochs, "saved": self.saved}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.values = {t: list(v) for t, v in state["values"].items()}
        self.best_value, self.best_epoch = dict(state["best_value"]), dict(state["best_epoch"])
        self.bad_epochs, self.saved = dict(state["bad_epochs"]), bool(state["saved"])


def build_selection(kind: str, spec: ModelSpec, *, patience: int, metrics_by_task: Mapping[str, str],
                    early_stop_metric: str | None = None, direction: str | None = None,
                    reference: Metrics | None = None, reference_source: str = "first_epoch"):
    """The strategy for a resolved `selection` setting (see TrainConfig.resolved_selection)."""
    if kind == "per_task":
        return PerTask(metrics_by_task, patience)
    if kind == "metric":
        return BestEpoch(SingleMetric(early_stop_metric, direction or "max"), patience)
    if kind == "last_epoch":
        return BestEpoch(LastEpoch(), patience=10**9)
    if kind == "mean_normalized":
        return BestEpoch(MeanNormalized(metrics_by_task, reference, reference_source), patience)
    raise ValueError(f"unknown selection {kind!r}")
