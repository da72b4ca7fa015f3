"""Settings of the jobs that score a model on table snapshots: the shared part
(`ple evaluate`, `ple publish`, `ple backfill`, `ple experiment`: which model,
which table, which registry, how rows are read, and how figures are computed
(intervals, GAUC/ranking, calibration)), and `ple evaluate`'s and `ple backfill`'s
own configs (`EvaluateConfig`, `BackfillConfig`). `ple publish`'s config extends
these in publishing/config.py."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from ple_runtime.config import JobConfig, Location, absolute_location
from ple_runtime.errors import StageError
from ple_runtime.lake import Lake, default_data_dir


class EvaluationFailed(StageError):
    """An evaluation cannot run (missing date, missing model...); the message says what to fix."""


def _model_location(reference: str) -> str:
    """Registry references (models:/..., @alias) stay as they are; a run folder or file becomes absolute."""
    return reference if reference.startswith(("models:/", "@")) else absolute_location(reference)


ModelReference = Annotated[str, AfterValidator(_model_location)]


class UncertaintySettings(BaseModel):
    """Confidence intervals: DeLong for AUC, a paired bootstrap for every other compared figure."""

    model_config = ConfigDict(extra="forbid")

    level: float = Field(0.95, gt=0, lt=1, description="two-sided interval level")
    resamples: int = Field(1000, ge=0, description="bootstrap resamples (0 = no bootstrap intervals)")
    seed: int = Field(0, description="bootstrap seed (the same counts serve every model: paired)")


class RankingSettings(BaseModel):
    """GAUC and per-user ranking quality of the paper's ranking score prod_k p_k^{w_k}."""

    model_config = ConfigDict(extra="forbid")

    user_column: str = Field("user_idx", description="column that says whose impression a row is")
    weights: dict[str, float] = Field(default_factory=dict,
                                      description="w_k per task in the ranking score (default: 1 for every task)")
    utility: dict[str, float] = Field(default_factory=dict,
                                      description="utility label = sum of label column * weight (default: every "
                                                  "binary task's label, weight 1; nulls count 0)")
    k: int = Field(10, ge=1, description="NDCG@k")


class ScoringConfig(JobConfig):
    model: ModelReference = Field(..., description="run folder / model.pt, models:/<name>/<version>, models:/<name>@<alias> "
                                        "or @<alias>")
    table: Location | None = Field(None, description="Delta table (default: <data>/lake/examples)")
    partition_column: str = Field("dt", description="date partition column")
    data_dir: Location = Field(default_factory=default_data_dir, description="data root ($PLE_DATA_DIR)")
    registered_model: str = Field("ple_video", description="registered model name in the MLflow registry")
    tracking_uri: str | None = Field(None, description="MLflow tracking/registry URI (default $MLFLOW_TRACKING_URI, "
                                                       "else SQLite under <data>/registry)")
    reader: Literal["auto", "arrow", "spark"] = Field("auto", description="how rows are read (auto: pyarrow, Spark "
                                                                          "when the log reader cannot)")
    batch_size: int = Field(8192, ge=1, description="rows per forward pass")
    rows_per_batch: int = Field(65536, ge=1, description="rows read and scored at a time (rounded up to a multiple "
                                                         "of batch_size); memory grows with it, not with the day")
    memory_budget_mb: int | None = Field(2048, ge=0, description="MB of kept per-row arrays (labels, masks, "
                                                                 "predictions, users: ~10-20 B a row per task and "
                                                                 "model) held in memory; beyond it they go to files "
                                                                 "(memory-mapped); null = never spill")
    spill_dir: Location | None = Field(None, description="where those files go (default: the temp directory)")
    calibration_bins: int = Field(10, ge=2)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    uncertainty: UncertaintySettings = Field(default_factory=UncertaintySettings,
                                             description="--set uncertainty.resamples=2000")
    ranking: RankingSettings = Field(default_factory=RankingSettings, description="--set ranking.k=20")

    @property
    def table_path(self) -> str:
        return self.table or Lake(self.data_dir).examples

    @property
    def resolved_device(self) -> str:
        import torch

        return ("cuda" if torch.cuda.is_available() else "cpu") if self.device == "auto" else self.device


class TimeTravelConfig(ScoringConfig):
    """A job that scores one date at one table version (the recorded one, --version or --timestamp), after an
    optional post-hoc calibration fitted on another date."""

    version: int | None = Field(None, ge=0, description="Delta version to read (time travel)")
    timestamp: str | None = Field(None, description="read the table as of this time (ISO 8601; UTC if no zone)")
    calibrate_on: dt.date | None = Field(None, description="fit post-hoc calibration per task on this date "
                                                           "(a validation day) before scoring")
    calibration_method: Literal["isotonic", "platt"] = Field("isotonic", description="with --calibrate-on")

    @model_validator(mode="after")
    def _one_time_travel(self):
        if self.version is not None and self.timestamp is not None:
            raise ValueError("give --version or --timestamp, not both")
        if self.timestamp is not None:
            from ple_runtime.delta_log import parse_timestamp

            parse_timestamp(self.timestamp)  # a bad timestamp fails here, with the field named
        return self


class EvaluateConfig(TimeTravelConfig):
    """Evaluate a model on one date of a Delta table: per-task metrics, MTL gain, report."""

    date: dt.date = Field(..., description="the date partition to evaluate on, YYYY-MM-DD")
    out: Location | None = Field(None, description="output folder (default <data>/reports/evaluate/<model>/<date>-v<version>)")
    single_task_runs: list[Location] = Field(default_factory=list,
                                        description="single-task runs (folders, model.pt files, or folders of runs) "
                                                    "for the MTL gain")
    compare: list[ModelReference] = Field(default_factory=list, description="more models to put on the seesaw plot")
    with_production: bool = Field(True, description="also score the published model (registry alias)")
    production_alias: str = Field("production", description="registry alias of the published model")


class BackfillConfig(ScoringConfig):
    """Evaluate a model over past dates into a metrics Delta table."""

    start: dt.date = Field(..., description="first date (inclusive)")
    end: dt.date = Field(..., description="last date (inclusive)")
    metrics_table: Location | None = Field(None, description="Delta table of results (default <data>/lake/backfill_metrics)")
    out: Location | None = Field(None, description="plot folder (default <data>/reports/backfill/<model id>)")
    force: bool = Field(False, description="re-evaluate dates already in the metrics table")
    debug_tracebacks: bool = Field(False, description="print the traceback of failed dates")

    @model_validator(mode="after")
    def _ordered(self) -> "BackfillConfig":
        if self.start > self.end:
            raise ValueError(f"start {self.start} is after end {self.end}")
        return self

    @property
    def metrics_table_path(self) -> str:
        return self.metrics_table or Lake(self.data_dir).backfill_metrics

    def out_path(self, model) -> str:
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in model.model_id)
        return self.out or str(Path(Lake(self.data_dir).reports, "backfill", name))
