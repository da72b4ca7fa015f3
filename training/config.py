"""`ple train` settings: one pydantic config, validated before any worker starts.

Two ways to name the data:
- `table` + `train_start`/`train_end` (+ `validation_date`): a table partitioned
  by `partition_column` (default `dt`, 'YYYY-MM-DD'), Delta or Parquet;
- `train_path` + `validation_path`: two tables (or folders) without dates.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ple_runtime.config import JobConfig, Location, is_remote, mapping_from_text


class TrainConfig(JobConfig):
    """Train a multi-task model on a Delta/Parquet snapshot (single process or Horovod)."""

    # --- data -------------------------------------------------------------------
    table: Location | None = Field(None, description="Delta or Parquet table partitioned by partition_column")
    train_start: dt.date | None = Field(None, description="first training day (inclusive), YYYY-MM-DD")
    train_end: dt.date | None = Field(None, description="last training day (inclusive), YYYY-MM-DD")
    validation_date: dt.date | None = Field(None, description="validation day, after the training range")
    train_path: Location | None = Field(None, description="training table/folder (tables without dates)")
    validation_path: Location | None = Field(None, description="validation table/folder (tables without dates)")
    partition_column: str = Field("dt", description="date partition column of --table")
    delta_version: int | None = Field(None, description="pin this Delta version (default: latest at start)")
    allow_gaps: bool = Field(False, description="train on a --train-start..--train-end range with days missing "
                                                "(refused by default; the plan and run record list them)")

    # --- model ------------------------------------------------------------------
    spec: Location = Field(..., description="feature/task spec YAML (see docs/ARCHITECTURE.md)")
    model: str = Field("ple", description="any name ple_model.build_model knows")
    model_params: dict[str, Any] = Field(default_factory=dict,
                                         description="model hyperparameters, e.g. --set model_params.num_levels=2")
    weighting: str = Field("decay", description="loss weighting: static, decay, uncertainty, ...")
    weighting_params: dict[str, Any] = Field(default_factory=dict)
    task_weights: dict[str, float] = Field(
        default_factory=dict, description="loss weight per task, replacing the spec's `weight` for this run "
                                          "(static and decay weightings: w_k of Eq. 10), e.g. "
                                          "--set task_weights.comment=3")
    vocab_sizes: dict[str, int] = Field(default_factory=dict,
                                        description="vocab_size per feature; wins over the vocabulary table")
    vocabulary_table: Location | None = Field(
        None, description="vocabulary Delta table (default: <table's parent>/vocabulary when it exists)")

    # --- vocabulary pinning and warm start (training/vocabulary.py, training/warm_start.py) --------
    vocabulary_version: int | None = Field(
        None, ge=0, description="pin this version of the vocabulary table (default: the version the examples of "
                                "the plan's days were written against; plan.json records it)")
    vocab_sizes_from_data: bool = Field(False, description="size `vocab_size: null` features by the training "
                                                           "data's largest id + 1 (tables without a vocabulary)")
    init_from: str | None = Field(None, description="warm start from a model: a run folder, a model.pt or a "
                                                    "registry reference (models:/ple_video@production)")
    init_partial: bool = Field(False, description="warm start: load the parts that match and list the rest, "
                                                  "instead of refusing a model of another architecture/spec")
    init_tracking_uri: str | None = Field(None, description="MLflow tracking URI for a registry --init-from "
                                                            "(default: the lake's <data>/registry)")
    training_mode: Literal["full", "incremental"] = Field(
        "full", description="full: train the window from scratch; incremental: warm start from --init-from "
                            "(default the production model) on the days after the ones it trained on, with a full "
                            "retrain when none fits or one is due (training/incremental.py)")
    full_retrain_every_days: int = Field(7, ge=1, description="incremental: retrain the whole window when the "
                                                              "chain's last full retrain ended this many days ago")

    # --- optimisation -----------------------------------------------------------
    epochs: int = Field(2, ge=1)
    batch_size: int = Field(1024, ge=1, description="rows per step PER WORKER")
    lr: float = Field(1e-3, gt=0, description="learning rate for ONE worker (scaled by lr_scaling)")
    lr_scaling: Literal["linear", "none"] = Field("linear", description="linear: lr * number of workers")
    optimizer: Literal["adam", "adamw", "sgd", "adagrad"] = "adam"
    embedding_optimizer: Literal["dense", "sparse_adam", "rowwise_adagrad"] = Field(
        "dense", description="embedding tables: dense (in `optimizer`, every row every step, allreduced densely), "
                             "sparse_adam (lazy Adam on the rows a batch touches) or rowwise_adagrad (one "
                             "accumulator per row); the sparse ones exchange only touched rows between workers")
    embedding_lr: float | None = Field(None, gt=0, description="learning rate of the sparse embedding optimizer "
                                                               "for ONE worker (default: lr); scaled like lr")
    weight_decay: float = Field(0.0, ge=0)
    grad_clip_norm: float | None = Field(None, gt=0)
    seed: int = 42
    steps_per_epoch_policy: Literal["min", "mean"] = Field(
        "min", description="min: every rank reads only what the smallest shard allows (no repeats); "
                           "mean: loop small shards to total_rows / (world * batch) steps")
    max_steps_per_epoch: int | None = Field(None, ge=1, description="cap on steps per epoch (quick runs)")

    # --- data loading -----------------------------------------------------------
    shuffle_buffer: int | None = Field(
        None, ge=0, description="rows in the shuffling buffer (0 = off); default: enough for 4 of the shard's "
                                "largest row groups (at least 20000), so batches mix rows of several files/days, "
                                "at most shuffle_buffer_max_rows")
    shuffle_buffer_max_rows: int = Field(
        500_000, ge=1, description="cap on the default shuffling buffer: its memory must not grow with the table's "
                                   "row groups (extract bounds them: ExtractConfig.row_group_mb)")
    reader_queue_rows: int = Field(
        250_000, ge=1, description="rows the Petastorm reader may hold decoded ahead of the loader (its results "
                                   "queue counts row groups: this many rows of the largest, at least 1, at most "
                                   "4 or 2 per reader worker)")
    reader_workers: int = Field(1, ge=1, description="Petastorm reader threads; 1 keeps the order deterministic")
    validation_batch_size: int = Field(8192, ge=1)

    # --- run --------------------------------------------------------------------
    out: Location = Field(..., description="output folder: model.pt, checkpoints/, tensorboard/, run_record.json")
    workers: int = Field(1, ge=1, description="number of training processes")
    launcher: Literal["auto", "horovodrun", "spark", "torch-distributor", "single"] = Field(
        "auto", description="auto: single when workers == 1, else horovodrun; spark: horovod.spark.run on Spark "
                            "executors; torch-distributor: pyspark's TorchDistributor (torch.distributed, gloo on "
                            "CPU, nccl on GPU) on Spark executors")
    hosts: str | None = Field(None, description="horovodrun -H value (default localhost:<workers>)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16", "auto"] = Field(
        "fp32", description="forward-pass arithmetic: bf16 = autocast with fp32 weights, losses and optimizer; "
                            "auto = bf16 where the CPU has AMX (amx_bf16) or the GPU supports bf16, else fp32 "
                            "(training/precision.py; the run record says which ran and why)")
    threads: int | None = Field(None, ge=1, description="torch intra-op threads per worker (default: the "
                                                        "host's cores / its workers; a Spark task's cores)")
    resume: bool = Field(False, description="continue from the last checkpoint in <out>/checkpoints")
    checkpoint_every_steps: int = Field(0, ge=0, description="also checkpoint every K steps (0 = epoch ends only)")
    keep_checkpoints: int = Field(3, ge=1, description="mid-epoch checkpoints kept (epoch ends are all kept)")
    # --- model selection and early stopping (training/selection.py) -------------------
    selection: Literal["auto", "mean_normalized", "per_task", "metric", "last_epoch"] = Field(
        "auto", description="which epoch's weights model.pt keeps (early stopping uses the same criterion): "
                            "mean_normalized = mean over tasks of the direction-aware relative change of each "
                            "task's metric against selection_reference; per_task = each task's own best epoch "
                            "(single_task only); metric = early_stop_metric alone; last_epoch; auto = per_task "
                            "for single_task, metric when early_stop_metric is set, else mean_normalized")
    selection_metrics: dict[str, str] = Field(
        default_factory=dict, description="metric per task for mean_normalized/per_task (default: auc for binary, "
                                          "mse for regression), e.g. --set selection_metrics.share=logloss")
    selection_reference: Location | None = Field(
        None, description="mean_normalized: normalise against this baseline run's selected validation metrics "
                          "(its run folder or run_record.json) instead of this run's first epoch")
    calibration: Literal["isotonic", "platt", "none"] = Field(
        "isotonic", description="post-hoc calibration of the selected model, fitted on the validation rows after "
                                "training and stored in model.pt (training/calibration.py)")
    early_stop_metric: str | None = Field(None, description="e.g. play.auc (higher is better) or watch_ratio.mse")
    early_stop_mode: Literal["auto", "max", "min"] = "auto"
    patience: int = Field(2, ge=1)
    log_every_steps: int = Field(20, ge=1)
    progress: bool = Field(True, description="tqdm progress bar on rank 0")

    @field_validator("model_params", "weighting_params", "task_weights", "vocab_sizes", "selection_metrics",
                     mode="before")
    @classmethod
    def _mapping_from_text(cls, value: Any) -> Any:
        return mapping_from_text(value)

    @field_validator("model")
    @classmethod
    def _known_model(cls, name: str) -> str:
        from ple_model import MODEL_NAMES

        if name not in MODEL_NAMES:
            raise ValueError(f"unknown model {name!r}; valid: {list(MODEL_NAMES)}")
        return name

    @field_validator("weighting")
    @classmethod
    def _known_weighting(cls, name: str) -> str:
        from ple_model.weighting import WEIGHTINGS

        if name not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {name!r}; valid: {sorted(WEIGHTINGS)}")
        return name

    @field_validator("early_stop_metric")
    @classmethod
    def _metric_format(cls, value: str | None) -> str | None:
        if value is not None and value.count(".") != 1:
            raise ValueError(f"early_stop_metric must be <task>.<metric> (e.g. play.auc), got {value!r}")
        return value

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        from ple_model import model_hyperparameters

        valid = model_hyperparameters(self.model)
        unknown = sorted(set(self.model_params) - set(valid))
        if unknown:
            raise ValueError(f"model {self.model!r} has no hyperparameters {unknown}; valid: {sorted(valid)}")
        by_date = self.table is not None
        by_path = self.train_path is not None or self.validation_path is not None
        if by_date == by_path:
            raise ValueError("give either --table with --train-start/--train-end/--validation-date, "
                             "or --train-path with --validation-path (not both, not neither)")
        if by_date:
            missing = [n for n in ("train_start", "train_end", "validation_date") if getattr(self, n) is None]
            if missing:
                raise ValueError(f"--table needs {', '.join('--' + m.replace('_', '-') for m in missing)}")
            if self.train_start > self.train_end:
                raise ValueError(f"train_start {self.train_start} is after train_end {self.train_end}")
            if self.train_start <= self.validation_date <= self.train_end:
                raise ValueError(f"validation_date {self.validation_date} lies inside the training range "
                                 f"{self.train_start}..{self.train_end} (validation rows would be trained on)")
        elif self.train_path is None or self.validation_path is None:
            raise ValueError("--train-path and --validation-path go together")
        if self.launcher == "single" and self.workers != 1:
            raise ValueError(f"launcher 'single' runs one process; got workers={self.workers}")
        if self.selection == "per_task" and self.model != "single_task":
            raise ValueError(f"selection 'per_task' keeps each task's own network at its best epoch, which only "
                             f"single_task has; model {self.model!r} shares parameters between tasks "
                             "(use mean_normalized)")
        if self.selection == "metric" and self.early_stop_metric is None:
            raise ValueError("selection 'metric' needs --early-stop-metric <task>.<metric>")
        return self

    # --- derived ----------------------------------------------------------------

    @property
    def resolved_launcher(self) -> str:
        if self.launcher == "auto":
            return "single" if self.workers == 1 else "horovodrun"
        return self.launcher

    @property
    def resolved_selection(self) -> str:
        if self.selection != "auto":
            return self.selection
        if self.model == "single_task":
            return "per_task"
        return "metric" if self.early_stop_metric else "mean_normalized"

    @property
    def early_stop_direction(self) -> str | None:
        if self.early_stop_metric is None:
            return None
        if self.early_stop_mode != "auto":
            return self.early_stop_mode
        from .selection import metric_direction

        return metric_direction(self.early_stop_metric.split(".", 1)[1])

    def check_paths(self) -> list[str]:
        """Problems with files named by the config (checked on the driver, before launching)."""
        problems = []
        if not Path(self.spec).is_file():
            problems.append(f"spec file {self.spec} does not exist")
        for name in ("table", "train_path", "validation_path", "selection_reference"):
            value = getattr(self, name)
            # Remote tables (s3a://...) are checked when their snapshot is resolved.
            if value is not None and not is_remote(value) and not Path(value).exists():
                problems.append(f"{name} {value} does not exist")
        return problems
