"""`ple publish`'s settings: the scoring settings of evaluation/config.py, plus the gate, the export and
the publish lease."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field, model_validator

from evaluation.config import ModelReference, TimeTravelConfig
from ple_runtime.config import Location

from .gate import Floors, Tolerances


class PublishConfig(TimeTravelConfig):
    """Gate, export and register a model in the MLflow registry."""

    model: ModelReference = Field(..., description="run folder / model.pt (or a registry reference) to publish")
    date: dt.date | None = Field(None, description="date partition the gate evaluates on, YYYY-MM-DD "
                                                   "(or taken from --metrics)")
    metrics: Location | None = Field(None, description="metrics.json of `ple evaluate` for this model: the gate runs on "
                                                  "the same table, date and version")
    check_only: bool = Field(False, description="run the gate only (no export, nothing registered); exit 3 if it fails")
    tolerance: Tolerances = Field(default_factory=Tolerances,
                                  description="allowed worsening vs production (--set tolerance.default.auc=0.01)")
    floors: Floors = Field(default_factory=Floors, description="what every candidate must clear, first model "
                                                               "included (--set floors.calibration_band=[0.8,1.25])")
    alias: str = Field("production", description="alias moved to the new version")
    lock_timeout_s: float = Field(600.0, gt=0, description="longest wait for the publish lease")
    lease_ttl_s: float = Field(60.0, gt=0, description="a publisher whose lease shows no heartbeat for this long is "
                                                       "taken for dead and skipped")
    vocabulary_table: Location | None = Field(None, description="vocabulary Delta table (default <data>/lake/vocabulary)")
    onnx_exporter: Literal["dynamo", "torchscript"] = Field(
        "dynamo", description="torch.onnx exporter (dynamo falls back to torchscript if it fails)")
    export_tolerance: float = Field(1e-5, gt=0, description="max |ONNX/TorchScript - PyTorch| on the check batch")
    out: Location | None = Field(None, description="folder for the publish record (default <data>/reports/publish)")
    debug_hold_lock_until: Location | None = Field(None, description="tests: hold the lease until this file exists")

    @model_validator(mode="after")
    def _date_or_metrics(self) -> "PublishConfig":
        if self.metrics is None and self.date is None:
            raise ValueError("give --date (or --metrics, the metrics.json of `ple evaluate`)")
        if self.metrics is not None and (self.version is not None or self.timestamp is not None):
            raise ValueError("--metrics pins the table version already; drop --version/--timestamp")
        return self
