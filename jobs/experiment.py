"""`ple experiment`: train models x seeds on one table and date split, evaluate all on the test day.

    ple experiment --train-start 2026-01-01 --train-end 2026-01-06 --validation-date 2026-01-07 \
        --test-date 2026-01-08 [--models single_task shared_bottom mmoe cgc ple] [--seeds 0 1 2] \
        [--data-dir ple_data] [--out <data>/reports/experiment/<test date>]

Every run is `ple train`'s code (one TrainConfig per model and seed; finished runs with the same
settings are reused). All runs are scored on the same test-day rows: per-task metrics with
intervals, GAUC, NDCG@k of the ranking score, MTL gain against the single-task run of the same
seed (paired interval), mean and spread over seeds. Writes <out>/experiment.json,
<out>/report.html and <out>/seesaw.md (evaluation/experiment.py; docs/EVALUATION.md).
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from evaluation.config import RankingSettings, UncertaintySettings
from ple_runtime.config import JobConfig, Location, parse_job_config
from ple_runtime.lake import Lake, default_data_dir

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODELS = ["single_task", "shared_bottom", "mmoe", "cgc", "ple"]


class ExperimentConfig(JobConfig):
    """Train a list of models x seeds, evaluate all on the test day, write one report."""

    data_dir: Location = Field(default_factory=default_data_dir, description="data root ($PLE_DATA_DIR)")
    table: Location | None = Field(None, description="examples Delta table (default <data>/lake/examples)")
    partition_column: str = Field("dt", description="date partition column")
    spec: Location = Field(str(REPO_ROOT / "conf" / "video_spec.yaml"), description="feature/task spec")
    train_start: dt.date = Field(..., description="first training day")
    train_end: dt.date = Field(..., description="last training day")
    validation_date: dt.date = Field(..., description="validation day (early stopping, --calibrate)")
    test_date: dt.date = Field(..., description="the day every model is evaluated on")
    models: list[str] = Field(default_factory=lambda: list(DEFAULT_MODELS),
                              description="models to train; single_task is the baseline of the MTL gain")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], description="one run per model per seed")
    model_params: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {"ple": {"specific_experts": 2, "shared_experts": 2},
                                 "cgc": {"specific_experts": 2, "shared_experts": 2}},
        description="hyperparameters per model (as `ple pipeline`'s; --set model_params.ple.num_levels=3)")
    weighting: str = Field("uncertainty", description="loss weighting of every model (as `ple pipeline`)")
    weighting_params: dict[str, Any] = Field(default_factory=dict)
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

        from evaluation.experiment import train_config

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


def main(argv: list[str] | None = None) -> int:
    config = parse_job_config(ExperimentConfig, argv, "ple experiment", __doc__.split("\n")[0])
    from evaluation.config import EvaluationFailed
    from evaluation.experiment import evaluate_all, train_all, write_outputs

    try:
        runs = train_all(config)
        if config.train_only:
            print(f"experiment: {len(runs)} runs ready under {config.out_path}/runs")
            return 0
        record = evaluate_all(config, runs)
    except (EvaluationFailed, RuntimeError) as error:
        print(f"experiment: {error}", file=sys.stderr)
        return 1
    from ple_runtime.config import config_as_dict
    from ple_runtime.lineage import run_context

    record["config"] = config_as_dict(config)
    record["context"] = run_context()
    paths = write_outputs(config, record)
    print(f"experiment: wrote {paths['html']}, {paths['json']} and {paths['markdown']}")
    print(paths["markdown"].read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
