"""`ple publish`: quality gate, export (TorchScript, ONNX) and register a model.

    ple publish --model runs/ple_2026-01-07 --date 2026-01-08 [--config conf/publish.yaml]

Scores the candidate on one date snapshot (same choice of version as `ple
evaluate`), exports it (TorchScript + ONNX, both checked against PyTorch),
then under a lease held in the registry (publishers on several hosts against
one tracking server serialise) compares it with the published model (alias
`production`) on the same rows and, if no task is worse by more than the
tolerance, registers a new version in the MLflow registry and moves the alias.
--calibrate-on DATE fits a post-hoc calibration per task on that (validation)
date first: the bundle's model.pt carries it and the exports apply it.
With --metrics (the metrics.json of `ple evaluate`), the gate runs on the table,
date and version that evaluation read. --check-only runs the gate and stops.
Exit status: 0 published / gate passed (or already published), 3 the gate
refused the model, 1 any other failure (export mismatch, missing data, ...),
2 bad settings.
"""

from __future__ import annotations

import datetime as dt
import sys
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from evaluation.config import ModelReference, TimeTravelConfig
from evaluation.gate import GATE_FAILED_EXIT_CODE, Floors, Tolerances
from ple_runtime.config import Location, parse_job_config


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


def main(argv: list[str] | None = None) -> int:
    config = parse_job_config(PublishConfig, argv, "ple publish", __doc__.split("\n")[0])
    from evaluation.config import EvaluationFailed
    from evaluation.export import ExportMismatch
    from evaluation.publish import PublishFailed, run_publish
    from evaluation.registry import LeaseLost

    try:
        with tempfile.TemporaryDirectory(prefix="ple-publish-") as workdir:
            outcome = run_publish(config, Path(workdir))
    except (EvaluationFailed, ExportMismatch, TimeoutError, LeaseLost) as error:
        registered = isinstance(error, PublishFailed)  # its message says what was registered
        print(f"publish: {error}" + ("" if registered else "; nothing published"), file=sys.stderr)
        return 1
    if outcome.status == "gate_failed":
        print("publish: quality gate FAILED; nothing published:", file=sys.stderr)
        for message in outcome.messages:
            print(f"  {message}", file=sys.stderr)
        print(f"  record: {outcome.record_path}", file=sys.stderr)
        return GATE_FAILED_EXIT_CODE
    for message in outcome.messages:
        print(f"publish: {message}")
    print(f"publish: record {outcome.record_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
