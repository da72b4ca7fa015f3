"""`ple tune`: an Optuna search over model and training settings, every trial a `ple train` run.

    ple tune --train-config conf/train.yaml --set train.train_start=2026-01-01 \
        --set train.train_end=2026-01-07 --set train.validation_date=2026-01-08 \
        --out ple_data/tune/ple --trials 40 --minutes 240

- Trials: TPE (optuna.samplers.TPESampler) proposes the settings of `search`
  (dotted TrainConfig keys); each trial is trained by training.launch.run_training,
  the path `ple train` takes, so workers/launcher (horovodrun, spark,
  torch-distributor) work as in `ple train`. The trial is trained one epoch per
  launch, resuming from its own checkpoint (exact, training/checkpoint.py), so
  the pruner sees every epoch's validation metrics whatever the launcher.
- Objective: the multi-task selection criterion (training/selection.py,
  mean_normalized) on the VALIDATION day only, against a reference: the base
  settings trained once first (<out>/reference, the defaults being tuned), or
  `reference_run`. 0 = as good as the reference; +0.01 = 1% better on the
  average task. Trials also select their model.pt by it (selection_reference).
  The test day is never named in any trial's config: nothing of it is read.
- Pruning: the criterion after each epoch goes to the pruner (median by default).
- Storage: an Optuna RDB (SQLite <out>/study.db by default). Running `ple tune`
  again with the same --out continues the study: finished trials count toward
  `trials`; a trial interrupted (Ctrl-C, or its process killed) is marked FAIL,
  does not count, and its settings are tried again.
- MLflow: one run per trial (its settings as parameters, per-task validation
  metrics per epoch, the objective, the run folder as a tag).
- Output: <out>/best_train.yaml (`ple train --config`), <out>/study.json (every trial, parameter importances).
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ple_runtime.config import ConfigError, JobConfig, Location, load_config_file, mapping_from_text, validate_config
from ple_runtime.errors import StageError

from .config import TrainConfig

DEFAULT_SEARCH: dict[str, dict[str, Any]] = {
    "lr": {"type": "float", "low": 3e-4, "high": 1e-2, "log": True},
    "batch_size": {"type": "categorical", "choices": [256, 512, 1024, 2048]},
    "model_params.num_levels": {"type": "int", "low": 1, "high": 3},
    "model_params.specific_experts": {"type": "int", "low": 1, "high": 4},
    "model_params.shared_experts": {"type": "int", "low": 1, "high": 4},
    "model_params.num_experts": {"type": "int", "low": 2, "high": 8},
    "model_params.expert_hidden": {"type": "categorical", "choices": [[64], [128], [256], [256, 128]]},
    "model_params.bottom_hidden": {"type": "categorical", "choices": [[128], [256], [256, 128]]},
    "model_params.tower_hidden": {"type": "categorical", "choices": [[64, 32], [128, 64], [256, 128, 64]]},
    "weighting": {"type": "categorical", "choices": ["static", "decay", "uncertainty", "dwa", "gradnorm", "pcgrad"]},
    "weighting_params.dwa.temperature": {"type": "float", "low": 0.5, "high": 5.0, "log": True},
    "weighting_params.gradnorm.alpha": {"type": "float", "low": 0.0, "high": 3.0},
}


class Distribution(BaseModel):
    """One searched setting: float/int in [low, high] (log scale optional) or one of `choices`."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[Any] | None = None

    @property
    def choices_primitive(self) -> bool:
        return all(c is None or isinstance(c, (bool, int, float, str)) for c in self.choices)

    def stored(self, value: Any) -> Any:
        """A value as the study stores it: Optuna keeps primitive choices only, so when a choice is not
        primitive (layer sizes) every choice travels as its JSON text; numbers as they are."""
        return value if self.type != "categorical" or self.choices_primitive else json.dumps(value)

    @model_validator(mode="after")
    def _check(self) -> "Distribution":
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical setting needs a non-empty `choices` list")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"a {self.type} setting needs low < high, got low={self.low}, high={self.high}")
        elif self.log and self.low <= 0:
            raise ValueError(f"log scale needs low > 0, got {self.low}")
        return self


class TuneConfig(JobConfig):
    """Search model and training settings with Optuna; every trial is a `ple train` run."""

    train_config: Location | None = Field(None, description="`ple train` config file: the base settings of every "
                                                             "trial (data, dates, spec, model, epochs, workers)")
    train: dict[str, Any] = Field(default_factory=dict, description="base `ple train` settings (win over "
                                                                   "train_config), e.g. --set train.epochs=3")
    out: Location = Field(..., description="study folder: study.db, reference/, trials/NNNN/, best_*.yaml")
    study_name: str = "ple-tune"
    storage: str | None = Field(None, description="Optuna storage URL (default sqlite:///<out>/study.db)")
    trials: int | None = Field(20, ge=1, description="budget: trials in the study (finished ones count on resume)")
    minutes: float | None = Field(None, gt=0, description="budget: wall minutes of this invocation")
    search: dict[str, Distribution] = Field(
        default_factory=dict, description="dotted TrainConfig key -> distribution (default: DEFAULT_SEARCH, "
                                          "model_params keys the model has); weighting_params.<weighting>.<param> "
                                          "is searched only in trials of that weighting")
    pruner: Literal["median", "hyperband", "none"] = "median"
    warmup_epochs: int = Field(1, ge=0, description="median pruner: epochs before a trial may be pruned")
    startup_trials: int = Field(5, ge=0, description="random trials before TPE; trials before pruning starts")
    seed: int = 0
    reference_run: Location | None = Field(None, description="run folder whose selected validation metrics "
                                                             "normalise the objective (default: <out>/reference, "
                                                             "the base settings trained first)")
    tracking_uri: str | None = Field(None, description="MLflow URI (default $MLFLOW_TRACKING_URI, else "
                                                       "sqlite:///<out>/mlflow.db)")
    mlflow_experiment: str = "ple-tune"
    enqueue: list[dict[str, Any]] = Field(
        default_factory=list, description="settings to try first (after the base trial), e.g. one found by hand: "
                                          "[{task_weights.comment: 3, lr: 0.002}]; searched keys left out are sampled")
    max_task_loss: float | None = Field(
        None, ge=0, description="no-seesaw constraint: a trial whose selected validation metric is worse than the "
                                "reference's on any task by more than this (absolute: AUC points, MSE) is "
                                "infeasible: TPE learns to avoid it and it cannot be the best (e.g. 0.0005)")
    base_trial: bool = Field(True, description="queue the base settings' values of the searched keys as the study's "
                                               "first trial, so the best is weighed against what you would train "
                                               "without tuning (keys whose base value lies outside the search "
                                               "are sampled)")

    @field_validator("train", "search", mode="before")
    @classmethod
    def _mapping_from_text(cls, value: Any) -> Any:
        return mapping_from_text(value)

    @model_validator(mode="after")
    def _check(self) -> "TuneConfig":
        if self.trials is None and self.minutes is None:
            raise ValueError("give a budget: --trials N and/or --minutes M")
        base = self.base_train_settings()
        model = base.get("model", TrainConfig.model_fields["model"].default)
        from ple_model import model_hyperparameters

        valid = model_hyperparameters(model)
        if not self.search:
            self.search = {k: Distribution(**v) for k, v in DEFAULT_SEARCH.items()
                           if not k.startswith("model_params.") or k.split(".", 1)[1] in valid}
        for key in self.search:
            _check_search_key(key, valid, model)
        for settings in self.enqueue:
            unknown = sorted(set(settings) - set(self.search))
            if unknown:
                raise ValueError(f"enqueue names keys that are not searched: {unknown}; "
                                 f"searched: {sorted(self.search)}")
        return self

    def base_train_settings(self) -> dict[str, Any]:
        values = load_config_file(self.train_config) if self.train_config else {}
        return _merged(values, self.train)

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{Path(self.out) / 'study.db'}"


def _merged(base: dict, overrides: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _check_search_key(key: str, model_keys: dict, model: str) -> None:
    parts = key.split(".")
    if parts[0] == "model_params" and (len(parts) != 2 or parts[1] not in model_keys):
        raise ValueError(f"search key {key!r}: model {model!r} has hyperparameters {sorted(model_keys)}")
    if parts[0] == "weighting_params":
        from ple_model.weighting import WEIGHTINGS

        if len(parts) != 3 or parts[1] not in WEIGHTINGS:
            raise ValueError(f"search key {key!r}: use weighting_params.<weighting>.<param>, weighting one of "
                             f"{sorted(WEIGHTINGS)}")
    elif parts[0] == "task_weights":
        if len(parts) != 2:
            raise ValueError(f"search key {key!r}: use task_weights.<task>")
    elif parts[0] not in TrainConfig.model_fields or (parts[0] != "model_params" and len(parts) != 1):
        raise ValueError(f"search key {key!r} is not a `ple train` setting")
    if parts[0] in ("out", "table", "train_start", "train_end", "validation_date", "train_path",
                    "validation_path", "resume", "epochs"):
        raise ValueError(f"search key {key!r}: data, dates, output and epochs are fixed by the study")


# --- sampling ------------------------------------------------------------------------------

def suggest(trial, key: str, distribution: Distribution) -> Any:
    if distribution.type == "float":
        return trial.suggest_float(key, distribution.low, distribution.high, log=distribution.log)
    if distribution.type == "int":
        return trial.suggest_int(key, int(distribution.low), int(distribution.high), log=distribution.log)
    choice = trial.suggest_categorical(key, [distribution.stored(c) for c in distribution.choices])
    return choice if distribution.choices_primitive else json.loads(choice)


def _set_dotted(target: dict, key: str, value: Any) -> None:
    *path, last = key.split(".")
    for part in path:
        target = target.setdefault(part, {})
    target[last] = value


def sample_settings(trial, search: dict[str, Distribution], base_weighting: str) -> dict[str, Any]:
    """The trial's TrainConfig settings (nested, only the searched ones)."""
    settings: dict[str, Any] = {}
    for key, distribution in search.items():
        if not key.startswith("weighting_params."):
            _set_dotted(settings, key, suggest(trial, key, distribution))
    if "weighting" in settings:
        settings["weighting_params"] = {}  # the base's parameters belong to the base's weighting
    weighting = settings.get("weighting", base_weighting)
    for key, distribution in search.items():
        if key.startswith("weighting_params."):
            _, name, param = key.split(".")
            if name == weighting:
                settings.setdefault("weighting_params", {})[param] = suggest(trial, key, distribution)
    return settings


# --- one trial: epochs through `ple train`'s path -------------------------------------------

class TrialFailed(StageError):
    """A trial's training failed (bad sampled settings, a crashed worker): the study goes on."""


def train_config(base: dict[str, Any], settings: dict[str, Any], out: Path, epochs: int, last: bool,
                 reference_run: str | None) -> TrainConfig:
    values = _merged(base, settings)
    values.update({"out": str(out), "resume": True, "epochs": epochs, "progress": False})
    if not last:
        values["calibration"] = "none"  # calibrate once, after the last epoch
    if reference_run is not None:
        values["selection_reference"] = reference_run
    return validate_config(TrainConfig, values, {k: "ple tune" for k in values})


def run_epochs(base: dict[str, Any], settings: dict[str, Any], out: Path, reference_run: str | None,
               after_epoch=None) -> dict[str, Any]:
    """Train epoch by epoch (one launch each, resuming); after_epoch(record) may raise to stop. The run record."""
    from .launch import run_training

    epochs = int(base.get("epochs", TrainConfig.model_fields["epochs"].default))
    record: dict[str, Any] = {}
    for epoch in range(1, epochs + 1):
        try:
            config = train_config(base, settings, out, epoch, epoch == epochs, reference_run)
            status = run_training(config)
        except SystemExit as error:  # ConfigError: settings the model or data refuse
            raise TrialFailed(f"settings refused: {getattr(error, 'message', error)}") from None
        except Exception as error:  # noqa: BLE001 - any training error fails this trial, not the study
            raise TrialFailed(f"training failed: {error!r}") from error
        if status != 0:
            raise TrialFailed(f"training exited with status {status}")
        record = json.loads((out / "run_record.json").read_text())
        if after_epoch is not None:
            after_epoch(record)
        if record["status"] == "early_stopped":
            break
    return record


# --- the objective: mean normalized change against the reference, validation day only ----------

class Objective:
    """Selection criterion of training/selection.py (mean_normalized) against the reference run's metrics."""

    def __init__(self, spec, selection_metrics: dict[str, str], reference: dict[str, dict[str, Any]]):
        from .selection import task_metrics

        self.metrics_by_task = task_metrics(spec, selection_metrics)
        self.reference = reference

    def value(self, validation: dict[str, dict[str, Any]] | None) -> float:
        from .selection import MeanNormalized

        return MeanNormalized(self.metrics_by_task, reference=self.reference).value(validation or {})

    def selected(self, record: dict[str, Any]) -> float:
        return self.value(record["selection"]["selected_metrics"])

    def worst_task_loss(self, metrics: dict[str, dict[str, Any]]) -> float:
        """How much worse than the reference the worst task is (absolute, in its metric; < 0: all better)."""
        from .selection import metric_direction

        losses = []
        for task, metric in self.metrics_by_task.items():
            change = metrics[task][metric] - self.reference[task][metric]
            losses.append(-change if metric_direction(metric) == "max" else change)
        return max(losses)


def selected_metrics(run_folder: Path) -> dict[str, dict[str, Any]]:
    record = json.loads((Path(run_folder) / "run_record.json").read_text())
    return record["selection"]["selected_metrics"]


# --- MLflow: one run per trial ------------------------------------------------------------------

class TrialLog:
    def __init__(self, config: TuneConfig):
        import os

        from mlflow import MlflowClient

        uri = config.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or \
            f"sqlite:///{Path(config.out) / 'mlflow.db'}"
        self.client = MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(config.mlflow_experiment)
        self.experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(
            config.mlflow_experiment, artifact_location=str(Path(config.out) / "mlartifacts"))
        self.tracking_uri = uri

    def start(self, study_name: str, number: int, params: dict[str, Any], run_folder: Path) -> str:
        from mlflow.entities import Param

        run = self.client.create_run(self.experiment_id, run_name=f"{study_name}-trial-{number:04d}",
                                     tags={"study": study_name, "trial": str(number), "run_folder": str(run_folder)})
        flat = {k: json.dumps(v) if isinstance(v, (list, dict)) else str(v) for k, v in params.items()}
        self.client.log_batch(run.info.run_id, params=[Param(k, v[:6000]) for k, v in flat.items()])
        return run.info.run_id

    def epoch(self, run_id: str, record: dict[str, Any], objective: float) -> None:
        from mlflow.entities import Metric

        last = record["epochs"][-1]
        epoch, stamp = int(last["epoch"]), int(time.time() * 1000)
        metrics = [Metric(f"{task}.{name}", float(value), stamp, epoch)
                   for task, values in (last["validation"] or {}).items() for name, value in values.items()
                   if isinstance(value, (int, float)) and value == value]
        metrics.append(Metric("objective_epoch", float(objective), stamp, epoch))
        self.client.log_batch(run_id, metrics=metrics)

    def end(self, run_id: str, state: str, objective: float | None) -> None:
        if objective is not None and objective == objective:
            self.client.log_metric(run_id, "objective", float(objective))
        self.client.set_tag(run_id, "state", state)
        self.client.set_terminated(run_id, "FINISHED" if state in ("COMPLETE", "PRUNED") else "FAILED")


# --- the study ------------------------------------------------------------------------------------

def _flat_params(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, dict) and value:
            flat.update(_flat_params(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def ensure_reference(config: TuneConfig, base: dict[str, Any]) -> Path:
    """The run that normalises the objective: reference_run, or the base settings trained once (resumable)."""
    if config.reference_run is not None:
        return Path(config.reference_run)
    folder = Path(config.out) / "reference"
    record = folder / "run_record.json"
    if not (record.is_file() and json.loads(record.read_text())["status"] in ("completed", "early_stopped")):
        print(f"ple tune: training the reference (base settings) in {folder}", flush=True)
        try:
            run_epochs(base, {}, folder, None)
        except TrialFailed as error:
            raise ConfigError(f"the base settings do not train ({error}); fix --train-config / --set train.*") \
                from None
    return folder


def _queue_again(study, trial) -> None:
    """An interrupted trial: marked (it does not count toward `trials`) and its settings queued again."""
    study._storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
    study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number}, skip_if_exists=False)
    print(f"ple tune: trial {trial.number} was interrupted; its settings are queued again", flush=True)


def _retry_interrupted(study) -> None:
    """Trials left RUNNING by a killed process: FAIL them and queue their settings again."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        _queue_again(study, trial)   # first: a finished trial's attributes can no longer be set
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)


def _base_value(base: dict[str, Any], key: str, spec) -> Any:
    """The value the base settings give a searched key (the model's or the spec's default when unset)."""
    from ple_model import model_hyperparameters

    parts = key.split(".")
    if parts[0] == "model_params":
        model = base.get("model", TrainConfig.model_fields["model"].default)
        return base.get("model_params", {}).get(parts[1], model_hyperparameters(model).get(parts[1]))
    if parts[0] == "task_weights":
        return base.get("task_weights", {}).get(parts[1], spec.task(parts[1]).weight)
    if parts[0] == "weighting_params":
        return base.get("weighting_params", {}).get(parts[2]) if base.get("weighting") == parts[1] else None
    field = TrainConfig.model_fields[parts[0]]
    return base.get(parts[0], None if field.is_required() else field.get_default(call_default_factory=True))


def base_trial_params(base: dict[str, Any], search: dict[str, Distribution], spec) -> dict[str, Any]:
    """Optuna parameters of the base settings, for the keys whose base value the search can propose."""
    params = {}
    for key, distribution in search.items():
        value = _base_value(base, key, spec)
        if distribution.type == "categorical":
            stored = distribution.stored(value)   # as text too, so a tuple default matches its list choice
            if stored in [distribution.stored(c) for c in distribution.choices]:
                params[key] = stored
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and \
                distribution.low <= value <= distribution.high:
            params[key] = value
    return params


def make_study(config: TuneConfig):
    import optuna

    limit = config.max_task_loss
    constraints = None if limit is None else (lambda t: [t.user_attrs.get("worst_task_loss", 0.0) - limit])
    sampler = optuna.samplers.TPESampler(seed=config.seed, n_startup_trials=config.startup_trials,
                                         constraints_func=constraints)
    if config.pruner == "median":
        pruner = optuna.pruners.MedianPruner(n_startup_trials=config.startup_trials,
                                             n_warmup_steps=config.warmup_epochs)
    elif config.pruner == "hyperband":
        pruner = optuna.pruners.HyperbandPruner(min_resource=1)
    else:
        pruner = optuna.pruners.NopPruner()
    Path(config.out).mkdir(parents=True, exist_ok=True)
    return optuna.create_study(study_name=config.study_name, storage=config.storage_url, sampler=sampler,
                               pruner=pruner, direction="maximize", load_if_exists=True)


def trial_function(config: TuneConfig, base: dict[str, Any], objective: Objective, reference: Path,
                   log: TrialLog):
    import optuna

    epochs = int(base.get("epochs", TrainConfig.model_fields["epochs"].default))

    def run_trial(trial) -> float:
        settings = sample_settings(trial, config.search,
                                   base.get("weighting", TrainConfig.model_fields["weighting"].default))
        trial.set_user_attr("settings", settings)
        folder = Path(config.out) / "trials" / f"{trial.number:04d}"
        trial.set_user_attr("run_folder", str(folder))
        run_id = log.start(config.study_name, trial.number, _flat_params(settings), folder)

        def after_epoch(record: dict[str, Any]) -> None:
            last = record["epochs"][-1]
            value = objective.value(last["validation"])
            trial.set_user_attr("worst_task_loss", objective.worst_task_loss(last["validation"]))
            log.epoch(run_id, record, value)
            trial.report(value, int(last["epoch"]))
            # After the last epoch the trial is done: its selected value counts (pruning saves nothing then).
            if int(last["epoch"]) + 1 < epochs and trial.should_prune():
                raise optuna.TrialPruned(f"epoch {last['epoch']}: objective {value:.5f}")

        try:
            record = run_epochs(base, settings, folder, str(reference), after_epoch)
        except optuna.TrialPruned:
            log.end(run_id, "PRUNED", None)
            raise
        except TrialFailed as error:
            trial.set_user_attr("error", str(error)[-2000:])
            log.end(run_id, "FAIL", None)
            raise
        except KeyboardInterrupt:   # Ctrl-C: Optuna marks the trial FAIL; it is tried again on resume
            _queue_again(trial.study, trial)
            log.end(run_id, "FAIL", None)
            raise
        value = objective.selected(record)
        trial.set_user_attr("selected_metrics", record["selection"]["selected_metrics"])
        trial.set_user_attr("worst_task_loss", objective.worst_task_loss(record["selection"]["selected_metrics"]))
        log.end(run_id, "COMPLETE", value)
        return value

    return run_trial


def run_study(config: TuneConfig) -> dict[str, Any]:
    """Train the reference (once), run trials until the budget is spent, write the results; the summary."""
    from ple_model import ModelSpec, SpecError

    base = config.base_train_settings()
    epochs = int(base.get("epochs", TrainConfig.model_fields["epochs"].default))
    checked = train_config(base, {}, Path(config.out) / "reference", epochs, True, None)  # fails fast, names keys
    spec = ModelSpec.from_yaml(checked.spec)
    try:   # searched task weights name tasks of the spec (else every trial would fail on it)
        spec.with_task_weights({k.split(".")[1]: 1.0 for k in config.search if k.startswith("task_weights.")})
    except SpecError as error:
        raise ConfigError(f"search keys task_weights.*: {error} (spec {checked.spec})") from None
    reference = ensure_reference(config, base)
    objective = Objective(spec, checked.selection_metrics, selected_metrics(reference))
    study = make_study(config)
    if not study.get_trials(deepcopy=False):   # a new study: the base settings, then the given ones, come first
        if config.base_trial:
            study.enqueue_trial(base_trial_params(base, config.search, spec), user_attrs={"base": True})
        for settings in config.enqueue:
            study.enqueue_trial({k: config.search[k].stored(v) for k, v in settings.items()},
                                user_attrs={"enqueued": True})
    _retry_interrupted(study)
    done = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished() and not t.user_attrs.get("interrupted")]
    remaining = None if config.trials is None else config.trials - len(done)
    print(f"ple tune: study {config.study_name!r} at {config.storage_url}: {len(done)} trials done, "
          f"{'no trial budget' if remaining is None else f'{max(remaining, 0)} to go'}", flush=True)
    if remaining is None or remaining > 0:
        log = TrialLog(config)
        study.optimize(trial_function(config, base, objective, reference, log), n_trials=remaining,
                       timeout=None if config.minutes is None else config.minutes * 60, catch=(TrialFailed,),
                       gc_after_trial=True)
    return write_results(config, study, base, reference, objective)


def _importances(study) -> dict[str, float] | None:
    import optuna
    from optuna.trial import TrialState

    if len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) < 2:
        return None
    try:
        return {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    except (RuntimeError, ValueError):  # e.g. every complete trial with the same value
        return None


def best_settings(base: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """What a `ple train --config` file needs from the best trial: the model, its epochs, the searched keys."""
    merged = _merged(base, settings)
    keys = ["model", "epochs", *settings]
    return {k: merged[k] for k in dict.fromkeys(keys) if k in merged}


def best_trial(study, objective: Objective, max_task_loss: float | None):
    """The complete trial with the highest objective, among those within max_task_loss on every task."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if max_task_loss is not None:
        complete = [t for t in complete if objective.worst_task_loss(t.user_attrs["selected_metrics"]) <= max_task_loss]
    return max(complete, key=lambda t: t.value, default=None)


def write_results(config: TuneConfig, study, base: dict[str, Any], reference: Path,
                  objective: Objective) -> dict[str, Any]:
    import yaml

    out = Path(config.out)
    trials = [{"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
               "intermediate": {str(k): v for k, v in t.intermediate_values.items()},
               "run_folder": t.user_attrs.get("run_folder"), "error": t.user_attrs.get("error"),
               "base": bool(t.user_attrs.get("base")), "enqueued": bool(t.user_attrs.get("enqueued")),
               "worst_task_loss": (objective.worst_task_loss(t.user_attrs["selected_metrics"])
                                   if "selected_metrics" in t.user_attrs else None),
               "seconds": t.duration.total_seconds() if t.duration else None} for t in study.get_trials()]
    summary: dict[str, Any] = {"study": config.study_name, "storage": config.storage_url, "reference": str(reference),
                               "objective": "mean_normalized change of the validation metrics vs the reference",
                               "max_task_loss": config.max_task_loss, "trials": trials,
                               "importances": _importances(study), "best": None}
    best = best_trial(study, objective, config.max_task_loss)
    if best is not None:
        settings = best_settings(base, best.user_attrs["settings"])
        within = "" if config.max_task_loss is None else f"; every task within {config.max_task_loss} of it"
        header = (f"# `ple tune` study {config.study_name!r}: trial {best.number}, objective {best.value:+.5f} "
                  f"(mean normalized validation change vs {reference}{within}).\n")
        (out / "best_train.yaml").write_text(header + "# ple train --config THIS --table ... --out ...\n"
                                             + yaml.safe_dump(settings, sort_keys=False))
        summary["best"] = {"number": best.number, "value": best.value, "settings": settings,
                           "run_folder": best.user_attrs.get("run_folder")}
    (out / "study.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary
