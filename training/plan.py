"""Driver side of `ple train`: everything that can fail is checked here, before any worker starts.

`prepare_plan(config)` resolves the snapshots (pinned Delta version + files),
fills vocab sizes, checks columns against the table schema, builds the model
once (bad hyperparameters fail here) and returns the plan: a JSON-safe dict
that workers read (<out>/plan.json). On --resume the plan already in <out>
is reused, so a resumed run reads the SAME files even if the table moved on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ple_runtime.config import ConfigError, config_as_dict
from ple_runtime.lineage import write_json

from .config import TrainConfig
from .snapshot import Snapshot, SnapshotError, date_range_filter, is_delta_table, resolve_snapshot

PLAN_FILE = "plan.json"
PLAN_FORMAT = "ple-train-plan/1"
# Settings that may differ between the original run and a --resume of it.
RESUMABLE_CHANGES = {"resume", "epochs", "progress", "stop_after_steps", "debug_step_delay_s", "launcher",
                     "hosts", "patience", "early_stop_metric", "early_stop_mode", "log_every_steps"}


def resolve_snapshots(config: TrainConfig) -> tuple[Snapshot, Snapshot]:
    try:
        if config.table is not None:
            column = config.partition_column
            train = resolve_snapshot(config.table, date_range_filter(column, config.train_start, config.train_end),
                                     version=config.delta_version)
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
    return train, validation


def table_columns(snapshot: Snapshot) -> dict[str, str]:
    """Column name -> Arrow type (as text) of the snapshot's first file (partition columns excluded)."""
    import pyarrow.parquet as pq

    schema = pq.read_schema(snapshot.files[0].path)
    return {name: str(schema.field(name).type) for name in schema.names}


def check_columns(spec, snapshot: Snapshot, row_id_column: str | None, what: str) -> None:
    from .data import source_columns

    columns = table_columns(snapshot)
    missing = [c for c in source_columns(spec, row_id_column) if c not in columns]
    if missing:
        raise ConfigError(f"{what} table {snapshot.table} lacks columns {missing} that the spec "
                          f"(or debug_row_id_column) needs; it has {sorted(columns)}")
    for feature in spec.features:
        kind = columns[feature.name]
        if feature.type == "multi_categorical" and not kind.startswith(("list", "large_list", "fixed_size_list")):
            raise ConfigError(f"feature {feature.name!r} is multi_categorical but column type is {kind}")
        if feature.type != "multi_categorical" and kind.startswith(("list", "large_list", "string")):
            raise ConfigError(f"feature {feature.name!r} is {feature.type} but column type is {kind}")


# --- vocabulary sizes -----------------------------------------------------------------

_VOCAB_NAME_COLUMNS = ("vocabulary", "vocab", "feature", "name")
_VOCAB_ID_COLUMNS = ("id", "idx", "index")


def default_vocabulary_table(config: TrainConfig) -> str | None:
    if config.vocabulary_table:
        return config.vocabulary_table
    if config.table:
        candidate = Path(config.table.removeprefix("file://")).resolve().parent / "vocabulary"
        return str(candidate) if candidate.exists() else None
    return None


def vocabulary_sizes(table: str, version: int | None = None) -> tuple[dict[str, int], dict[str, Any]]:
    """{vocabulary name: max id + 1} from the vocabulary table, and where it came from."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    import pyarrow as pa

    snapshot = resolve_snapshot(table, version=version)
    if not snapshot.files:
        return {}, {"table": table, "version": snapshot.version, "files": 0}
    names = pq.read_schema(snapshot.files[0].path).names
    partition_names = list(snapshot.partition_columns)
    all_names = names + partition_names
    name_column = next((c for c in _VOCAB_NAME_COLUMNS if c in all_names), None)
    id_column = next((c for c in _VOCAB_ID_COLUMNS if c in all_names), None)
    if name_column is None or id_column is None:
        raise ConfigError(f"vocabulary table {table} has columns {all_names}; expected one of "
                          f"{list(_VOCAB_NAME_COLUMNS)} and one of {list(_VOCAB_ID_COLUMNS)}")
    sizes: dict[str, int] = {}
    for file in snapshot.files:
        if name_column in partition_names:
            frame = pq.read_table(file.path, columns=[id_column])
            vocab = file.partition_values[name_column]
            if frame.num_rows:
                sizes[vocab] = max(sizes.get(vocab, 0), int(pc.max(frame.column(id_column)).as_py()) + 1)
            continue
        frame = pq.read_table(file.path, columns=[name_column, id_column])
        if frame.num_rows == 0:
            continue
        grouped = frame.group_by(name_column).aggregate([(id_column, "max")])
        for vocab, top in zip(grouped.column(name_column).to_pylist(), grouped.column(f"{id_column}_max").to_pylist()):
            sizes[vocab] = max(sizes.get(vocab, 0), int(top) + 1)
    del pa
    return sizes, {"table": snapshot.table, "version": snapshot.version, "file_list_hash": snapshot.file_list_hash,
                   "columns": [name_column, id_column]}


def max_id_in_data(snapshot: Snapshot, column: str) -> int:
    """Largest id of a column over the snapshot: Parquet footer statistics, else a column scan."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    top = 0
    for file in snapshot.files:
        metadata = pq.ParquetFile(file.path).metadata
        index = next((i for i in range(metadata.num_columns)
                      if metadata.schema.column(i).path.split(".")[0] == column), None)
        stats = [metadata.row_group(g).column(index).statistics for g in range(metadata.num_row_groups)] \
            if index is not None else []
        if stats and all(s is not None and s.has_min_max for s in stats):
            top = max([top, *(int(s.max) for s in stats)])
            continue
        values = pq.read_table(file.path, columns=[column]).column(column)
        if str(values.type).startswith("list"):
            values = pc.list_flatten(values)
        value = pc.max(values).as_py()
        top = max(top, int(value or 0))
    return top


def fill_vocab_sizes(config: TrainConfig, spec, train: Snapshot):
    """Fill `vocab_size: null` features. Order: --vocab-sizes, the vocabulary table, max id in training data + 1."""
    sources: dict[str, str] = {}
    sizes: dict[str, int] = {}
    unknown = sorted(set(config.vocab_sizes) - set(spec.feature_names))
    if unknown:
        raise ConfigError(f"--vocab-sizes names unknown features {unknown}; features are {spec.feature_names}")
    missing = [f for f in spec.features if f.type != "numeric" and f.vocab_size is None]
    vocab_record: dict[str, Any] | None = None
    table_sizes: dict[str, int] = {}
    needs_table = [f for f in missing if f.name not in config.vocab_sizes]
    vocab_table = default_vocabulary_table(config) if needs_table else None
    if vocab_table:
        try:
            version = None
            table_sizes, vocab_record = vocabulary_sizes(vocab_table, version)
        except Exception as error:  # noqa: BLE001 - fall back to data, but say why
            vocab_record = {"table": vocab_table, "error": str(error)}
    for feature in spec.features:
        if feature.name in config.vocab_sizes:
            sizes[feature.name] = int(config.vocab_sizes[feature.name])
            sources[feature.name] = "--vocab-sizes"
        elif feature in missing:
            vocabulary = feature.vocabulary or feature.name
            if vocabulary in table_sizes:
                sizes[feature.name] = table_sizes[vocabulary]
                sources[feature.name] = f"vocabulary table ({vocabulary})"
            else:
                sizes[feature.name] = max_id_in_data(train, feature.name) + 1
                sources[feature.name] = "max id in training data + 1"
    filled = spec.with_vocab_sizes(sizes) if sizes else spec
    return filled, {"sizes": {f.name: f.vocab_size for f in filled.features if f.type != "numeric"},
                    "sources": sources, "vocabulary_table": vocab_record}


# --- the plan ---------------------------------------------------------------------------

def prepare_plan(config: TrainConfig) -> dict[str, Any]:
    """Validate everything, resolve snapshots and write <out>/plan.json (rank 0 of nothing: the driver)."""
    from ple_model import ModelSpec, SpecError, build_model
    from ple_model.weighting import build_weighting

    problems = config.check_paths()
    if problems:
        raise ConfigError("; ".join(problems))
    out = Path(config.out)
    plan_path = out / PLAN_FILE
    if config.resume and plan_path.is_file():
        plan = json.loads(plan_path.read_text())
        _check_resume_compatible(plan, config)
        plan["config"] = config_as_dict(config)
        write_json(plan_path, plan)
        return plan
    if not config.resume and (out / "checkpoints").is_dir() and any((out / "checkpoints").iterdir()):
        raise ConfigError(f"{out} already holds checkpoints; pass --resume to continue that run or pick a new --out")

    try:
        spec = ModelSpec.from_yaml(config.spec)
    except (SpecError, ValueError, OSError) as error:
        raise ConfigError(f"spec {config.spec}: {error}") from None
    train, validation = resolve_snapshots(config)
    check_columns(spec, train, config.debug_row_id_column, "training")
    check_columns(spec, validation, config.debug_row_id_column, "validation")
    spec, vocab = fill_vocab_sizes(config, spec, train)
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

    from .data import shard_layout

    layout = shard_layout(train.urls, config.workers)
    if layout.num_row_groups < config.workers:
        raise ConfigError(f"training data has {layout.num_row_groups} row groups but {config.workers} workers: "
                          "every worker needs at least one (write the table with more files or use fewer workers)")
    plan = {
        "format": PLAN_FORMAT,
        "config": config_as_dict(config),
        "spec": spec.model_dump(mode="json"),
        "vocab": vocab,
        "train_snapshot": train.to_dict(),
        "validation_snapshot": validation.to_dict(),
        "model_parameters": sum(p.numel() for p in model.parameters()),
    }
    write_json(plan_path, plan)
    return plan


def _check_resume_compatible(plan: dict[str, Any], config: TrainConfig) -> None:
    before = plan["config"]
    now = config_as_dict(config)
    changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k) and k not in RESUMABLE_CHANGES)
    if changed:
        details = ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in changed)
        raise ConfigError(f"--resume with settings that differ from the original run ({details}); "
                          "a resumed run must train the same thing. Use a new --out to start over")


def load_plan(path: str | Path) -> dict[str, Any]:
    plan = json.loads(Path(path).read_text())
    if plan.get("format") != PLAN_FORMAT:
        raise ValueError(f"{path} is not a training plan ({plan.get('format')!r})")
    return plan


__all__ = ["prepare_plan", "load_plan", "resolve_snapshots", "fill_vocab_sizes", "vocabulary_sizes",
           "is_delta_table", "PLAN_FILE"]
