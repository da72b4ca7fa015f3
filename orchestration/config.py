"""The settings of the two commands that chain stages: `ple pipeline` (PipelineConfig: the whole chain on
embedded defaults) and `ple experiment` (ExperimentConfig: models x seeds on one date split)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, model_validator

from evaluation.config import RankingSettings, UncertaintySettings
from ple_runtime.config import JobConfig, Location
from ple_runtime.lake import Lake, default_data_dir

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODELS = ["single_task", "shared_bottom", "mmoe", "cgc", "ple"]
# Chosen on the video world's validation day (docs/measurements/seesaw.md): a per-task user and item bias
# removed PLE's loss on play against single-task; every model gets them, so the comparison stays matched.
DEFAULT_TASK_BIAS_FEATURES = ("user_idx", "item_idx")


class ModelSettings(JobConfig):
    """What every model of `ple pipeline` and `ple experiment` is trained with (the spec, per-model
    hyperparameters, the loss weighting), checked against the spec up front."""

    spec: Location = Field(str(REPO_ROOT / "conf" / "video_spec.yaml"), description="feature/task spec")
    model_params: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {"ple": {"specific_experts": 2, "shared_experts": 2},
                                 "cgc": {"specific_experts": 2, "shared_experts": 2}},
        description="hyperparameters per model name (e.g. --set model_params.ple.num_levels=3)")
    # Static weights with the spec's (comment 3) and per-task id biases: chosen by `ple tune` at ~1M rows, where
    # uncertainty weighting gave play ~1/27 of the loss weight and lost on it (docs/measurements/seesaw.md).
    weighting: str = Field("static", description="loss weighting for every model")
    weighting_params: dict[str, Any] = Field(default_factory=dict, description="its parameters (e.g. dwa temperature)")
    task_weights: dict[str, float] = Field(default_factory=dict, description="loss weight per task over the "
                                                                          "spec's (as `ple train`)")
    task_bias_features: list[str] = Field(
        default_factory=lambda: list(DEFAULT_TASK_BIAS_FEATURES),
        description="id features that get a learned bias per task in every model (model_params.task_bias_features; "
                    "a model's own model_params win); [] for none")

    @model_validator(mode="after")
    def _check_model_settings(self) -> "ModelSettings":
        from ple_model import MODEL_NAMES, ModelSpec, model_hyperparameters

        for model, params in self.model_params.items():
            unknown = sorted(set(params) - set(model_hyperparameters(model))) if model in MODEL_NAMES else None
            if unknown is None:
                raise ValueError(f"model_params names unknown model {model!r}; valid: {list(MODEL_NAMES)}")
            if unknown:
                raise ValueError(f"model_params.{model} has unknown hyperparameters {unknown}; "
                                 f"valid: {sorted(model_hyperparameters(model))}")
        if not Path(self.spec).is_file():
            raise ValueError(f"spec file {self.spec} does not exist")
        features = {f.name for f in ModelSpec.from_yaml(self.spec).features if f.type != "numeric"}
        missing = sorted(set(self.task_bias_features) - features)
        if missing:
            raise ValueError(f"task_bias_features {missing} are not id features of the spec {self.spec}; set "
                             f"task_bias_features to some of {sorted(features)} or [] for none")
        return self

    def model_params_of(self, model: str) -> dict[str, Any]:
        """One model's hyperparameters: the shared task_bias_features under the model's own model_params."""
        shared = {"task_bias_features": list(self.task_bias_features)} if self.task_bias_features else {}
        return {**shared, **self.model_params.get(model, {})}


class PipelineConfig(ModelSettings):
    """Run generate -> extract -> train -> evaluate -> publish locally."""

    data_dir: Location = Field(default_factory=default_data_dir, description="data root for raw logs, lake, runs, registry")
    start_date: dt.date = Field(dt.date(2026, 1, 1), description="first day of generated logs")
    days: int = Field(8, ge=3, le=60, description="days of logs: N-2 to train, 1 to validate, the last to test")
    users: int = Field(2000, ge=10)
    items: int = Field(500, ge=10)
    impressions_per_day: int = Field(20_000, ge=100)
    fault_rate: float = Field(0.002, ge=0, le=0.05, description="share of raw lines corrupted on purpose")
    models: list[str] = Field(["ple", "mmoe", "single_task"],
                              description="models to train; single_task gives the MTL gain baseline")
    publish_model: str = Field("ple", description="which trained model is evaluated and published")
    epochs: int = Field(3, ge=1)
    batch_size: int = Field(1024, ge=32)
    lr: float = Field(2e-3, gt=0)
    workers: int = Field(2, ge=1, description="Horovod processes per training run")
    precision: Literal["fp32", "bf16", "auto"] = Field(
        "fp32", description="training's forward-pass arithmetic (TrainConfig.precision; auto = bf16 with AMX)")
    seed: int = 7
    force: bool = Field(False, description="redo every stage even when its output exists")
    training_mode: Literal["full", "incremental"] = Field(
        "full", description="publish_model's training: full retrain on the window, or incremental (warm start "
                            "from the production model on the days after its own; training/incremental.py)")
    full_retrain_every_days: int = Field(7, ge=1, description="incremental: full retrain when the production "
                                                              "model's last full retrain is this many days old")

    @model_validator(mode="after")
    def _check(self) -> "PipelineConfig":
        from ple_model import MODEL_NAMES

        unknown = [m for m in self.models if m not in MODEL_NAMES]
        if unknown:
            raise ValueError(f"unknown models {unknown}; valid: {list(MODEL_NAMES)}")
        if self.publish_model not in self.models:
            raise ValueError(f"publish_model {self.publish_model!r} must be one of models {self.models}")
        return self

    def day(self, index: int) -> str:
        return (self.start_date + dt.timedelta(days=index)).isoformat()

    @property
    def all_days(self) -> list[str]:
        return [self.day(i) for i in range(self.days)]

    @property
    def train_days(self) -> tuple[str, str]:
        return self.day(0), self.day(self.days - 3)

    @property
    def validation_day(self) -> str:
        return self.day(self.days - 2)

    @property
    def test_day(self) -> str:
        return self.day(self.days - 1)


class ExperimentConfig(ModelSettings):
    """Train a list of models x seeds, evaluate all on the test day, write one report."""

    data_dir: Location = Field(default_factory=default_data_dir, description="data root ($PLE_DATA_DIR)")
    table: Location | None = Field(None, description="examples Delta table (default <data>/lake/examples)")
    partition_column: str = Field("dt", description="date partition column")
    train_start: dt.date = Field(..., description="first training day")
    train_end: dt.date = Field(..., description="last training day")
    validation_date: dt.date = Field(..., description="validation day (early stopping, --calibrate)")
    test_date: dt.date = Field(..., description="the day every model is evaluated on")
    models: list[str] = Field(default_factory=lambda: list(DEFAULT_MODELS),
                              description="models to train; single_task is the baseline of the MTL gain")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], description="one run per model per seed")
    epochs: int = Field(3, ge=1)
    # One process with the pipeline's global batch (2 workers x 1024) and its effective rate (2 x 2e-3):
    # the training loop's global-batch loss makes this the same optimisation, without Gloo on 2 busy cores.
    batch_size: int = Field(2048, ge=1, description="rows per step per worker")
    lr: float = Field(4e-3, gt=0, description="learning rate per worker (ple train's lr_scaling applies)")
    workers: int = Field(1, ge=1, description="training processes per run")
    launcher: str = Field("auto", description="as `ple train --launcher` (checked by its config)")
    early_stop_metric: str | None = Field(None, description="as `ple train`: None = no early stopping on one "
                                                            "task's metric")
    train_settings: dict[str, Any] = Field(default_factory=dict,
                                           description="any other TrainConfig field (--set train_settings.shuffle_buffer=0)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    calibrate: bool = Field(False, description="fit post-hoc calibration per run on the validation day first")
    calibration_method: Literal["isotonic", "platt"] = "isotonic"
    uncertainty: UncertaintySettings = Field(default_factory=UncertaintySettings)
    ranking: RankingSettings = Field(default_factory=RankingSettings)
    reader: Literal["auto", "arrow", "spark"] = "auto"
    batch_size_eval: int = Field(8192, ge=1, description="rows per forward pass when scoring")
    calibration_bins: int = Field(10, ge=2)
    out: Location | None = Field(None, description="output folder (default <data>/reports/experiment/<test date>)")
    train_only: bool = Field(False, description="train (or reuse) the runs, do not evaluate")

    @model_validator(mode="after")
    def _check(self) -> "ExperimentConfig":
        from ple_model import MODEL_NAMES

        unknown = [m for m in self.models if m not in MODEL_NAMES]
        if unknown:
            raise ValueError(f"unknown models {unknown}; valid: {list(MODEL_NAMES)}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds repeat: {self.seeds}")
        if not self.train_start <= self.train_end < self.validation_date < self.test_date:
            raise ValueError("dates must be ordered: train_start <= train_end < validation_date < test_date")
        if "single_task" not in self.models:
            raise ValueError("models must include single_task: it is the baseline every gain is measured against")
        from pydantic import ValidationError

        from orchestration.experiment import train_config

        for model in self.models:  # every run's TrainConfig is valid before the first one trains
            try:
                train_config(self, model, self.seeds[0])
            except ValidationError as error:
                problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in error.errors())
                raise ValueError(f"the `ple train` settings of {model}: {problems}") from None
        return self

    @property
    def table_path(self) -> str:
        return self.table or Lake(self.data_dir).examples

    @property
    def out_path(self) -> str:
        return self.out or str(Path(Lake(self.data_dir).reports, "experiment", self.test_date.isoformat()))

    @property
    def resolved_device(self) -> str:
        import torch

        return ("cuda" if torch.cuda.is_available() else "cpu") if self.device == "auto" else self.device


def pipeline_settings(best: dict[str, Any]) -> dict[str, Any]:
    """The same settings as `ple pipeline --config` takes them (model_params per model; its own fields only)."""
    model = best.get("model", "ple")
    values = {k: v for k, v in best.items() if k in PipelineConfig.model_fields and k not in ("model", "model_params")}
    values["model_params"] = {model: best.get("model_params", {})}
    return values


def write_best_pipeline(out: str, summary: dict[str, Any]) -> Path:
    """`ple tune`'s best settings as `ple pipeline --config` reads them: <out>/best_pipeline.yaml."""
    best = summary["best"]
    header = (f"# `ple tune` study {summary['study']!r}: trial {best['number']}, objective {best['value']:+.5f} "
              f"(mean normalized validation change vs {summary['reference']}).\n")
    path = Path(out, "best_pipeline.yaml")
    path.write_text(header + "# ple pipeline --config THIS\n"
                    + yaml.safe_dump(pipeline_settings(best["settings"]), sort_keys=False))
    return path
