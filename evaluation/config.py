"""Settings shared by the jobs that score a model on table snapshots
(`ple evaluate`, `ple publish`, `ple backfill`): which model, which table, which
registry, how rows are read. Each job's config extends this one."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from ple_runtime.config import JobConfig, Location, absolute_location
from ple_runtime.lake import Lake, default_data_dir


def _model_location(reference: str) -> str:
    """Registry references (models:/..., @alias) stay as they are; a run folder or file becomes absolute."""
    return reference if reference.startswith(("models:/", "@")) else absolute_location(reference)


ModelReference = Annotated[str, AfterValidator(_model_location)]


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
    calibration_bins: int = Field(10, ge=2)
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @property
    def table_path(self) -> str:
        return self.table or Lake(self.data_dir).examples

    @property
    def resolved_device(self) -> str:
        import torch

        return ("cuda" if torch.cuda.is_available() else "cpu") if self.device == "auto" else self.device
