"""Driver side of `ple train`: everything that can fail is checked here, before any worker starts.

`prepare_plan(config)` resolves the snapshots (pinned Delta version + files),
fills vocab sizes, checks columns against the table schema, builds the model
once (bad hyperparameters fail here) and returns a `TrainingPlan`: the typed
object every worker trains from. The driver writes it to <out>/plan.json;
workers started in other processes load it with `TrainingPlan.load(path)`;
an in-process run passes the object itself. On --resume the plan already in
<out> is reused, so a resumed run reads the SAME files even if the table
moved on.
"""

from __future__ import annotations

import datetime as dt
import json
import posixpath
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator

from ple_model import ModelSpec
from ple_runtime import arrow_storage
from ple_runtime.config import ConfigError, config_as_dict
from ple_runtime.delta_log import DeltaLogError
from ple_runtime.lineage import write_json
from ple_runtime.snapshot import (Snapshot, SnapshotError, date_range_filter, days_between, is_delta_table,
                                  last_commit_writing, latest_delta_version, resolve_snapshot)

from .config import TrainConfig
from .incremental import TrainingDecision, decide
from .petastorm_storage import open_parquet
from .warm_start import WarmStartRecord, prepare_warm_start

PLAN_FILE = "plan.json"
PLAN_FORMAT = "ple-train-plan/1"
# Settings that may differ between the original run and a --resume of it.
RESUMABLE_CHANGES = {"resume", "epochs", "progress", "launcher", "hosts", "threads", "patience", "calibration",
                     "early_stop_metric",
                     "early_stop_mode", "log_every_steps"}
# Settings of plans written before test hooks left the config (callbacks now); ignored when loading.
_RETIRED_SETTINGS = ("debug_row_id_column", "stop_after_steps", "debug_step_delay_s")


class VocabRecord(BaseModel):
    """Where each id feature's vocab size came from (run records keep it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sizes: dict[str, int]
    sources: dict[str, str]
    vocabulary_table: dict[str, Any] | None = None


class TrainingPlan(BaseModel):
    """Everything a worker needs, resolved and checked on the driver."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["ple-train-plan/1"] = PLAN_FORMAT
    config: TrainConfig
    spec: ModelSpec                          # vocab sizes filled
    vocab: VocabRecord
    train_snapshot: Snapshot
    validation_snapshot: Snapshot
    model_parameters: int
    # mean_normalized selection against a baseline run: that run's selected validation metrics.
    selection_reference: dict[str, dict[str, Any]] | None = None
    warm_start: WarmStartRecord | None = None   # --init-from: what the first weights were taken from
    training: TrainingDecision | None = None     # --training-mode incremental: full retrain or warm start, and why
    missing_days: list[str] = []             # days of the training range without rows (--allow-gaps)

    @field_validator("config", mode="before")
    @classmethod
    def _drop_retired_settings(cls, value: Any) -> Any:
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in _RETIRED_SETTINGS}
        return value

    def write(self, path: str | Path) -> Path:
        write_json(Path(path), self.model_dump(mode="json"))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "TrainingPlan":
        data = json.loads(Path(path).read_text())
        if data.get("format") != PLAN_FORMAT:
            raise ValueError(f"{path} is not a training plan ({data.get('format')!r})")
        return cls.model_validate(data)

    def trained_days(self) -> dict[str, Any] | None:
        """The days this run trains and validates on, and its chain's last full retrain (model files
        carry it: incremental runs and backfills read it to choose what to warm-start from)."""
        config, decision = self.config, self.training
        if config.table is None:
            return None
        start = decision.train_start if decision else config.train_start
        if decision is not None:
            last_full = decision.last_full_retrain_end.isoformat()
        elif self.warm_start is not None:      # a manual --init-from continues the chain of the model it starts from
            previous = self.warm_start.trained_on or {}
            last_full = previous.get("last_full_retrain_end") or previous.get("train_end")
        else:
            last_full = config.train_end.isoformat()
        return {"train_start": start.isoformat(), "train_end": config.train_end.isoformat(),
                "validation_date": config.validation_date.isoformat(),
                "mode": "warm_start" if self.warm_start else "full", "last_full_retrain_end": last_full}

    def with_config(self, config: TrainConfig) -> "TrainingPlan":
        return self.model_copy(update={"config": config})


def missing_days(config: TrainConfig, train: Snapshot) -> list[str]:
    """Days of --train-start..--train-end with no file in the pinned training snapshot."""
    if config.table is None:
        return []
    present = {f.partition_values.get(config.partition_column) for f in train.files}
    days = (config.train_start + dt.timedelta(days=i) for i in range((config.train_end - config.train_start).days + 1))
    return [day.isoformat() for day in days if day.isoformat() not in present]


def check_no_gaps(config: TrainConfig, train: Snapshot) -> list[str]:
    """Refuse a training range with missing days (a late or failed extract would silently shift
    what the model learns) unless --allow-gaps; returns the missing days (recorded in the plan)."""
    gaps = missing_days(config, train)
    if gaps and not config.allow_gaps:
        shown = ", ".join(gaps[:10]) + (f" ... ({len(gaps)} in all)" if len(gaps) > 10 else "")
        raise ConfigError(f"{config.table} has no rows for {len(gaps)} day(s) of the training range "
                          f"{config.train_start}..{config.train_end} at Delta version {train.version}: {shown}. "
                          "Extract those days first, or pass --allow-gaps to train without them (recorded)")
    if gaps:
        print(f"warning: training without {len(gaps)} missing day(s) ({', '.join(gaps)}): --allow-gaps",
              file=sys.stderr)
    return gaps


def resolve_snapshots(config: TrainConfig) -> tuple[Snapshot, Snapshot]:
    try:
        if config.table is not None:
            column = config.partition_column
            days = date_range_filter(column, config.train_start, config.train_end)
            train = resolve_snapshot(config.table, days, version=config.delta_version)
            if config.delta_version is None and train.format == "delta":
                # The version that last wrote the plan's days, not the latest: later days' commits do not
                # move it, so a re-run of an old day reads (and records) the same snapshot as its first run.
                written = last_commit_writing(config.table, column, plan_days(config), train.version)
                if written is not None and written.version != train.version:
                    train = resolve_snapshot(config.table, days, version=written.version)
            # Same version for validation: both sides of one run see one state of the table.
            validation = resolve_snapshot(config.table, {column: config.validation_date.isoformat()},
                                          version=train.version)
            what = (f"{config.table} {column} {config.train_start}..{config.train_end}",
                    f"{config.table} {column}={config.validation_date}")
        else:
            train = resolve_snapshot(config.train_path, version=config.delta_version)
            validation = resolve_snapshot(config.validation_path)
            what = (config.train_path, config.validation_path)
    except SnapshotError as error:
        raise ConfigError(str(error)) from None
    for snapshot, name in ((train, what[0]), (validation, what[1])):
        if not snapshot.files:
            raise ConfigError(f"no Parquet files for {name}" + (f" at Delta version {snapshot.version}"
                                                                 if snapshot.version is not None else ""))
        check_files_exist(snapshot, name)
    return train, validation


def plan_days(config: TrainConfig) -> set[str] | None:
    """The partition values a --table plan reads (training range and validation day); None for --train-path."""
    if config.table is None:
        return None
    return days_between(config.train_start, config.train_end) | {config.validation_date.isoformat()}


def check_files_exist(snapshot: Snapshot, what: str) -> None:
    """A pinned Delta version whose files VACUUM deleted cannot be trained on (workers would fail
    mid-epoch): say so before any worker starts."""
    from ple_runtime.maintenance import missing_files

    if snapshot.version is None or not (gone := missing_files(snapshot.paths)):
        return
    raise ConfigError(f"{what} at Delta version {snapshot.version}: VACUUM deleted {len(gone)} of its "
                      f"{len(snapshot.files)} files (e.g. {gone[0]}); pin a version that still exists "
                      "(--delta-version, or none for the latest) or restore the files from a backup")


def table_columns(snapshot: Snapshot) -> dict[str, str]:
    """Column name -> Arrow type (as text) of the snapshot's first file (partition columns excluded)."""
    schema = open_parquet(snapshot.files[0].url).schema_arrow
    return {name: str(schema.field(name).type) for name in schema.names}


def check_columns(spec, snapshot: Snapshot, extra_columns, what: str) -> None:
    from .data import source_columns

    columns = table_columns(snapshot)
    missing = [c for c in source_columns(spec, extra_columns) if c not in columns]
    if missing:
        raise ConfigError(f"{what} table {snapshot.table} lacks columns {missing} that the spec "
                          f"(or a training callback) needs; it has {sorted(columns)}")
    for feature in spec.features:
        kind = columns[feature.name]
        if feature.type == "multi_categorical" and not kind.startswith(("list", "large_list", "fixed_size_list")):
            raise ConfigError(f"feature {feature.name!r} is multi_categorical but column type is {kind}")
        if feature.type != "multi_categorical" and kind.startswith(("list", "large_list", "string")):
            raise ConfigError(f"feature {feature.name!r} is {feature.type} but column type is {kind}")


# --- vocabulary sizes -----------------------------------------------------------------

def default_vocabulary_table(config: TrainConfig) -> str | None:
    """--vocabulary-table, else <table's parent>/vocabulary (the lake's layout); None for --train-path data."""
    if config.vocabulary_table:
        return config.vocabulary_table
    if config.table:
        # Named even when absent: the error then says where it was looked for.
        return arrow_storage.join(posixpath.dirname(config.table.rstrip("/")), "vocabulary")
    return None


def vocabulary_sizes(table: str, version: int | None = None) -> tuple[dict[str, int], dict[str, Any]]:
    """{vocabulary name: max id + 1} from the vocabulary table at `version`, and where it came from."""
    from .vocabulary import read_rows

    version = latest_delta_version(table) if version is None else version
    rows, snapshot = read_rows(table, version, ("name", "id"))
    grouped = rows.group_by("vocabulary").aggregate([("id", "max")])
    sizes = {str(name): int(top) + 1 for name, top in zip(grouped.column("vocabulary").to_pylist(),
                                                          grouped.column("id_max").to_pylist())}
    return sizes, {"table": snapshot.table, "version": snapshot.version, "file_list_hash": snapshot.file_list_hash}


def max_id_in_data(snapshot: Snapshot, column: str) -> int:
    """Largest id of a column over the snapshot: Parquet footer statistics, else a column scan."""
    import pyarrow.compute as pc

    top = 0
    for file in snapshot.files:
        parquet = open_parquet(file.url)
        metadata = parquet.metadata
        index = next((i for i in range(metadata.num_columns)
                      if metadata.schema.column(i).path.split(".")[0] == column), None)
        stats = [metadata.row_group(g).column(index).statistics for g in range(metadata.num_row_groups)] \
            if index is not None else []
        if stats and all(s is not None and s.has_min_max for s in stats):
            top = max([top, *(int(s.max) for s in stats)])
            continue
        values = parquet.read(columns=[column]).column(column)
        if str(values.type).startswith("list"):
            values = pc.list_flatten(values)
        value = pc.max(values).as_py()
        top = max(top, int(value or 0))
    return top


def fill_vocab_sizes(config: TrainConfig, spec, train: Snapshot):
    """Fill `vocab_size: null` features: --vocab-sizes, else the vocabulary table at the version the plan pins
    (training/vocabulary.py), else (--vocab-sizes-from-data only) the data's largest id + 1. A vocabulary
    table that is missing or unreadable is an error that names it, never a silent fallback."""
    unknown = sorted(set(config.vocab_sizes) - set(spec.feature_names))
    if unknown:
        raise ConfigError(f"--vocab-sizes names unknown features {unknown}; features are {spec.feature_names}")
    missing = [f for f in spec.features if f.type != "numeric" and f.vocab_size is None]  # hashed: sized already
    needs_table = [f.name for f in missing if f.name not in config.vocab_sizes]
    table_sizes, vocab_record = ({}, None) if not needs_table or config.vocab_sizes_from_data else \
        _pinned_vocabulary_sizes(config, train, needs_table)
    sources: dict[str, str] = {}
    sizes: dict[str, int] = {}
    for feature in spec.features:
        if feature.name in config.vocab_sizes:
            sizes[feature.name] = int(config.vocab_sizes[feature.name])
            sources[feature.name] = "--vocab-sizes"
        elif feature in missing and config.vocab_sizes_from_data:
            sizes[feature.name] = max_id_in_data(train, feature.name) + 1
            sources[feature.name] = "max id in training data + 1 (--vocab-sizes-from-data)"
        elif feature in missing:
            vocabulary = feature.vocabulary or feature.name
            if vocabulary not in table_sizes:
                raise ConfigError(f"vocabulary table {vocab_record['table']} at version {vocab_record['version']} "
                                  f"has no vocabulary {vocabulary!r} (feature {feature.name!r}); it has "
                                  f"{sorted(table_sizes)}. Fix the spec's `vocabulary:` or run `ple extract`")
            sizes[feature.name] = table_sizes[vocabulary]
            sources[feature.name] = f"vocabulary table ({vocabulary})"
    for feature in spec.features:
        if feature.hash_buckets is not None:
            sources[feature.name] = f"hash_buckets ({feature.hash_buckets})"
    filled = spec.with_vocab_sizes(sizes) if sizes else spec
    return filled, VocabRecord(sizes={f.name: f.vocab_size for f in filled.features if f.type != "numeric"},
                               sources=sources, vocabulary_table=vocab_record)


def _pinned_vocabulary_sizes(config: TrainConfig, train: Snapshot,
                             features: list[str]) -> tuple[dict[str, int], dict[str, Any]]:
    from .vocabulary import missing_table_error, pin_version

    table = default_vocabulary_table(config)
    if table is None:
        raise missing_table_error(None, features, "it is needed")
    if not is_delta_table(table):
        raise missing_table_error(table, features, "it is not a readable Delta table")
    try:
        pin = pin_version(table, train, plan_days(config), config.partition_column, config.vocabulary_version)
        sizes, record = vocabulary_sizes(table, pin["version"])
    except (SnapshotError, DeltaLogError) as error:
        raise missing_table_error(table, features, f"cannot be read ({error})") from None
    return sizes, {**record, **pin}


# --- the plan ---------------------------------------------------------------------------

def prepare_plan(config: TrainConfig, extra_columns=()) -> TrainingPlan:
    """Validate everything, resolve snapshots and write <out>/plan.json (the driver; no worker yet).

    `extra_columns`: table columns training callbacks will read (checked to exist too).
    """
    problems = config.check_paths()
    if problems:
        raise ConfigError("; ".join(problems))
    out = Path(config.out)
    plan_path = out / PLAN_FILE
    if config.resume and plan_path.is_file():
        plan = TrainingPlan.load(plan_path)
        _check_resume_compatible(plan.config, config)
        for snapshot, what in ((plan.train_snapshot, "the resumed run's training data"),
                               (plan.validation_snapshot, "the resumed run's validation data")):
            check_files_exist(snapshot, f"{what} ({snapshot.table})")
        plan = plan.with_config(config)
        plan.write(plan_path)
        return plan
    if not config.resume and (out / "checkpoints").is_dir() and any((out / "checkpoints").iterdir()):
        raise ConfigError(f"{out} already holds checkpoints; pass --resume to continue that run or pick a new --out")

    spec = _load_spec(config)
    effective, decision = decide(config)  # incremental: its days and --init-from; the plan keeps the config as asked
    train, validation = resolve_snapshots(effective)
    check_columns(spec, train, extra_columns, "training")
    check_columns(spec, validation, extra_columns, "validation")
    gaps = check_no_gaps(effective, train)
    spec, vocab = fill_vocab_sizes(effective, spec, train)
    parameters = _check_model(config, spec)
    reference = _selection_reference(config, spec)

    from .data import shard_layout

    layout = shard_layout(train.urls, config.workers)
    if layout.num_row_groups < config.workers:
        raise ConfigError(f"training data has {layout.num_row_groups} row groups but {config.workers} workers: "
                          "every worker needs at least one (write the table with more files or use fewer workers)")
    warm_start = effective.init_from and prepare_warm_start(effective, spec, vocab.vocabulary_table, vocab.sources)
    plan = TrainingPlan(config=config, spec=spec, vocab=vocab, train_snapshot=train, validation_snapshot=validation,
                        model_parameters=parameters, selection_reference=reference, warm_start=warm_start or None,
                        training=decision, missing_days=gaps)
    plan.write(plan_path)
    return plan


def _load_spec(config: TrainConfig) -> ModelSpec:
    from ple_model import SpecError

    try:
        return ModelSpec.from_yaml(config.spec).with_task_weights(config.task_weights)
    except (SpecError, ValueError, OSError) as error:
        raise ConfigError(f"spec {config.spec}: {error}") from None


def _check_model(config: TrainConfig, spec: ModelSpec) -> int:
    """Build the model and weighting once (bad hyperparameters fail here); check selection names."""
    from ple_model import SpecError, build_model
    from ple_model.weighting import build_weighting

    from .selection import task_metrics

    try:
        model = build_model(config.model, spec, **config.model_params)
        build_weighting(config.weighting, spec, **config.weighting_params)
    except (SpecError, ValueError, TypeError) as error:
        raise ConfigError(f"model {config.model!r}: {error}") from None
    if config.early_stop_metric:
        task = config.early_stop_metric.split(".", 1)[0]
        if task not in spec.task_names:
            raise ConfigError(f"early_stop_metric {config.early_stop_metric!r}: no task {task!r}; "
                              f"tasks are {spec.task_names}")
    try:
        task_metrics(spec, config.selection_metrics)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    return sum(p.numel() for p in model.parameters())


def _selection_reference(config: TrainConfig, spec: ModelSpec) -> dict[str, dict[str, Any]] | None:
    """The baseline run's selected validation metrics (mean_normalized against a baseline)."""
    if config.selection_reference is None:
        return None
    if config.resolved_selection != "mean_normalized":
        raise ConfigError(f"selection_reference is only used by selection 'mean_normalized', not "
                          f"{config.resolved_selection!r}")
    path = Path(config.selection_reference)
    path = path / "run_record.json" if path.is_dir() else path
    try:
        record = json.loads(path.read_text())
        selected = record["selection"]["selected_metrics"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"selection_reference {path}: not a run record with selected metrics ({error!r}); "
                          "give the run folder (or run_record.json) of a finished `ple train`") from None
    missing = [t for t in spec.task_names if not (selected or {}).get(t)]
    if missing:
        raise ConfigError(f"selection_reference {path} has no validation metrics for tasks {missing}")
    return selected


def _check_resume_compatible(before: TrainConfig, config: TrainConfig) -> None:
    before_values, now = config_as_dict(before), config_as_dict(config)
    changed = sorted(k for k in set(before_values) | set(now)
                     if before_values.get(k) != now.get(k) and k not in RESUMABLE_CHANGES)
    if changed:
        details = ", ".join(f"{k}: {before_values.get(k)!r} -> {now.get(k)!r}" for k in changed)
        raise ConfigError(f"--resume with settings that differ from the original run ({details}); "
                          "a resumed run must train the same thing. Use a new --out to start over")


__all__ = ["TrainingPlan", "VocabRecord", "prepare_plan", "resolve_snapshots", "fill_vocab_sizes",
           "vocabulary_sizes", "is_delta_table", "PLAN_FILE"]
