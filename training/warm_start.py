"""Warm start (`ple train --init-from REF`): the first weights of a run taken from an earlier model.

On the driver, before any worker starts (`prepare_warm_start`, called by the plan):
- REF is resolved as evaluation resolves models (model_registry/model_refs.py): a run folder, a
  model.pt, or a registry reference (models:/ple_video@production, downloaded);
- the old model and the new plan are compared: model name, hyperparameters, tasks (name, type,
  label, sample space) and features (name, type, embedding size, hashing, length). Any
  difference is refused with the list, unless `init_partial`: then every tensor whose name and
  shape match is loaded and the rest is listed;
- dense weights are copied; embedding rows of vocabulary-backed features are carried BY RAW
  VALUE through the two pinned vocabulary versions (the old model's, recorded in its model file
  / run record / bundle, and the new plan's): a value in both keeps its row (wherever its id
  is), a new value keeps the fresh row the seeded initialisation gave it, a value gone from
  the vocabulary is dropped. Hashed features and fixed-size ids carry over row for row;
- the result is written to <out>/warm_start.pt (a state dict of the new model) and described
  by a `WarmStartRecord` in the plan and the run record.
In the workers, rank 0 loads that state dict and the usual start-of-run broadcast makes every
rank's weights rank 0's (training/trainer.py). Optimizer state starts fresh (docs/TRAINING.md).
"""

from __future__ import annotations

import functools
import json
import posixpath
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict

from ple_model import ModelSpec
from ple_runtime.config import ConfigError
from ple_runtime.lineage import file_sha256

from .config import TrainConfig

WARM_START_FILE = "warm_start.pt"


class WarmStartRecord(BaseModel):
    """What a warm start loaded, from where, and how many embedding rows it carried."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ref: str
    model_file: str
    model_sha256: str
    bundle_manifest_sha256: str | None = None
    registry: dict[str, Any] | None = None
    trained_on: dict[str, Any] | None = None          # the old model's training days (run record / plan)
    source_vocabulary: dict[str, Any] | None = None   # the old model's pinned vocabulary (table, version)
    partial: bool = False
    differences: list[str] = []
    loaded: list[str] = []                            # tensors copied (whole, or row by row for embeddings)
    not_loaded: list[str] = []                        # tensors left at their fresh initialisation (partial)
    rows: dict[str, dict[str, Any]] = {}              # feature -> carried / new / dropped rows, and how matched
    init_state: str                                   # <out>/warm_start.pt
    init_state_sha256: str


def prepare_warm_start(config: TrainConfig, spec: ModelSpec, vocab_record: dict[str, Any] | None,
                       vocab_sources: dict[str, str]) -> WarmStartRecord:
    """Resolve --init-from, check it against the new plan, map its weights, write <out>/warm_start.pt."""
    source = resolve_init_model(config)
    payload = source["payload"]
    old_spec = ModelSpec.model_validate(payload["spec"])
    model = fresh_model(config, spec)
    differences = compare(payload, old_spec, config, spec, getattr(model, "hyperparameters", config.model_params))
    if differences and not config.init_partial:
        raise ConfigError(f"--init-from {config.init_from}: the model differs from this run's "
                          + "; ".join(differences) + ". Train from scratch (no --init-from), or pass "
                          "--init-partial to load the parts that match and list the rest")
    old_vocabulary = _old_vocabulary(source, vocab_record)
    state, loaded, not_loaded, rows = map_state(model, payload["state_dict"], old_spec, spec, vocab_sources,
                                                old_vocabulary, vocab_record)
    if not_loaded and not config.init_partial:
        raise ConfigError(f"--init-from {config.init_from}: tensors {not_loaded} cannot be loaded (name or shape "
                          "differs); pass --init-partial to start them fresh")
    path = Path(config.out) / WARM_START_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return WarmStartRecord(
        ref=config.init_from, model_file=str(source["model_file"]), model_sha256=file_sha256(source["model_file"]),
        bundle_manifest_sha256=source.get("bundle_manifest_sha256"), registry=source.get("registry"),
        trained_on=trained_on(source), source_vocabulary=old_vocabulary.get("pinned"),
        partial=bool(differences or not_loaded), differences=differences, loaded=loaded, not_loaded=not_loaded,
        rows=rows, init_state=str(path), init_state_sha256=file_sha256(path))


def fresh_model(config: TrainConfig, spec: ModelSpec) -> torch.nn.Module:
    """The model exactly as the trainer initialises it (same seed): new rows get these values."""
    from ple_model import build_model

    torch.manual_seed(config.seed)
    return build_model(config.model, spec, **config.model_params)


# --- resolving the reference ------------------------------------------------------------------

def resolve_init_model(config: TrainConfig) -> dict[str, Any]:
    """{"model_file", "payload", "run_record", "bundle_dir", "registry", ...} of --init-from."""
    from ple_model.model_file import read_model_file

    from model_registry.model_refs import _model_file, _run_record, parse_model_ref

    ref = parse_model_ref(config.init_from, "ple_video")
    source: dict[str, Any] = {"bundle_dir": None, "registry": None}
    try:
        if ref.is_registry:
            source.update(_download_registry_model(config, ref))
        else:
            source["model_file"] = _model_file(Path(ref.path))
        source["payload"] = read_model_file(source["model_file"])
    except (LookupError, FileNotFoundError, ValueError, OSError) as error:
        raise ConfigError(f"--init-from {config.init_from}: {error}") from None
    source["run_record"] = _run_record(source["model_file"])
    if source["run_record"] is None and source["bundle_dir"] is not None:
        config_file = Path(source["bundle_dir"]) / "config.json"
        training = json.loads(config_file.read_text()).get("training_config") if config_file.is_file() else None
        source["run_record"] = {"config": training} if training else None
    return source


def _download_registry_model(config: TrainConfig, ref) -> dict[str, Any]:
    from model_registry.model_refs import _model_file
    from model_registry.registry import download_version, get_version, registry_settings, version_by_alias

    data_dir = posixpath.dirname(posixpath.dirname(str(config.table or config.train_path).rstrip("/")))
    settings = registry_settings(data_dir, config.init_tracking_uri, ref.registered_name)
    if not settings.exists():
        raise LookupError(f"no model registry at {settings.tracking_uri}")
    version = (version_by_alias(settings, ref.alias, ref.registered_name) if ref.alias is not None
               else get_version(settings, ref.registered_name, ref.version))
    if version is None:
        raise LookupError(f"registered model {ref.registered_name!r} has no alias {ref.alias!r} "
                          f"at {settings.tracking_uri}")
    target = Path(config.out) / "init_model" / f"{ref.registered_name}-v{version.version}"
    bundle = _downloaded_bundle(target) or download_version(settings, ref.registered_name, version.version, target)
    manifest = Path(bundle) / "manifest.json"
    return {"model_file": _model_file(Path(bundle)), "bundle_dir": Path(bundle),
            "bundle_manifest_sha256": file_sha256(manifest) if manifest.is_file() else None,
            "registry": {"name": ref.registered_name, "version": str(version.version), "run_id": version.run_id,
                         "alias": ref.alias, "tracking_uri": settings.tracking_uri}}


def _downloaded_bundle(target: Path) -> Path | None:
    """An intact bundle of this very version already downloaded into `target` (the incremental decision
    and the warm start both resolve the reference): reused, not downloaded twice."""
    from model_registry.bundle import verify_bundle

    found = sorted(target.glob("**/manifest.json")) if target.is_dir() else []
    return found[0].parent if found and not verify_bundle(found[0].parent) else None


def trained_on(source: dict[str, Any]) -> dict[str, Any] | None:
    """The days the old model trained and validated on (its run record's config; its model file's
    training snapshot otherwise): what backfills check so that no day warm-starts from a later model."""
    recorded = (source["payload"].get("metadata") or {}).get("training")
    if recorded and recorded.get("train_end"):
        return dict(recorded)
    config = (source.get("run_record") or {}).get("config") or {}
    if config.get("train_end"):
        return {k: config.get(k) for k in ("train_start", "train_end", "validation_date")}
    snapshot = (source["payload"].get("metadata") or {}).get("snapshot") or {}
    days = sorted(json.loads(p).get("dt") for p in snapshot.get("partitions", []) if "dt" in json.loads(p))
    return {"train_start": days[0], "train_end": days[-1], "validation_date": None} if days else None


# --- comparing ------------------------------------------------------------------------------------

def compare(payload: dict[str, Any], old_spec: ModelSpec, config: TrainConfig, spec: ModelSpec,
            hyperparameters: dict[str, Any]) -> list[str]:
    """What differs between the old model and the one this run builds (empty: same architecture)."""
    differences = []
    if payload["model_name"] != config.model:
        differences.append(f"model {payload['model_name']!r} -> {config.model!r}")
    old_h, new_h = _plain(payload.get("hyperparameters") or {}), _plain(hyperparameters)
    changed = sorted(k for k in set(old_h) | set(new_h) if old_h.get(k) != new_h.get(k))
    differences += [f"hyperparameter {k}: {old_h.get(k)!r} -> {new_h.get(k)!r}" for k in changed]

    def tasks(s: ModelSpec):
        return [(t.name, t.type, t.label, t.mask) for t in s.tasks]

    def features(s: ModelSpec):
        return [(f.name, f.type, f.embedding_dim, f.hash_buckets, f.max_len) for f in s.features]

    if tasks(old_spec) != tasks(spec):
        differences.append(f"tasks {tasks(old_spec)} -> {tasks(spec)}")
    if features(old_spec) != features(spec):
        old, new = set(features(old_spec)), set(features(spec))
        differences.append(f"features: only in the old model {sorted(old - new)}, only in this run "
                           f"{sorted(new - old)}" + ("" if old != new else " (order differs)"))
    return differences


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


# --- the old model's vocabulary ------------------------------------------------------------------

def _old_vocabulary(source: dict[str, Any], new_vocabulary: dict[str, Any] | None) -> dict[str, Any]:
    """{"pinned": {table, version} | None, "ids": vocabulary name -> {raw value: id}} of the old model:
    its bundle's vocabulary.parquet (registry models), else its vocabulary table at its pinned version."""
    from model_registry.bundle import model_vocabulary_version

    from .vocabulary import group_ids, ids_by_vocabulary

    metadata, record = source["payload"].get("metadata") or {}, source.get("run_record") or {}
    version = model_vocabulary_version(metadata, record)
    recorded = metadata.get("vocabulary") or (record.get("vocab") or {}).get("vocabulary_table") or {}
    table = recorded.get("table")
    if table and not Path(table).exists() and "://" not in table:
        table = (new_vocabulary or {}).get("table")      # the lake moved: the same table where this plan reads it
    bundled = Path(source["bundle_dir"]) / "vocabulary.parquet" if source.get("bundle_dir") else None
    pinned = {"table": table, "version": version, "read_from": str(bundled) if bundled and bundled.is_file()
              else table} if version is not None else None

    @functools.cache
    def every_vocabulary() -> dict[str, dict[str, int]]:
        # one read for all features (the table gains a file a day: a read per feature grew with the lake)
        if bundled is not None and bundled.is_file():
            import pyarrow.parquet as pq

            return group_ids(pq.read_table(bundled, columns=["vocabulary", "value", "id"]))
        return ids_by_vocabulary(table, version)

    def ids(vocabulary: str) -> dict[str, int]:
        if pinned is None:
            raise ConfigError(f"--init-from {source['model_file']} records no vocabulary version (trained before "
                              "vocabularies were pinned): its embedding rows cannot be matched by raw value. Pass "
                              "--init-partial to start the vocabulary-backed embeddings fresh")
        return every_vocabulary().get(vocabulary, {})

    return {"pinned": pinned, "ids": ids}


# --- mapping the weights ---------------------------------------------------------------------------

def map_state(model: torch.nn.Module, old_state: dict[str, torch.Tensor], old_spec: ModelSpec, spec: ModelSpec,
              vocab_sources: dict[str, str], old_vocabulary: dict[str, Any], vocab_record: dict[str, Any] | None):
    """(state dict of `model` with the old weights in it, loaded names, names left fresh, rows per feature)."""
    from ple_model.input_layer import CategoricalGroup, TaskIdBias, _EmbeddingTable

    from .vocabulary import ids_by_vocabulary

    state = model.state_dict()
    features = {f.name: f for f in spec.features}
    new_ids = functools.cache(lambda: ids_by_vocabulary(vocab_record["table"], vocab_record["version"]))
    loaded, not_loaded, rows, handled = [], [], {}, set()
    for name, module in model.named_modules():
        if not isinstance(module, _EmbeddingTable):
            continue
        key = f"{name}.table"
        handled |= {key, f"{name}.offsets", f"{name}.vocab_sizes"}
        names = module.names if isinstance(module, CategoricalGroup) else [module.name]
        only = names if isinstance(module, TaskIdBias) else None   # its width is the task count, not a dim
        old_layout = _table_layout(old_spec, names, int(state[key].shape[1]), multi=not isinstance(
            module, CategoricalGroup), only=only)
        if key not in old_state or old_layout is None or old_state[key].shape != (
                sum(size for _, size in old_layout.values()), state[key].shape[1]):
            not_loaded.append(key)
            continue
        new_layout = _table_layout(spec, names, int(state[key].shape[1]), multi=not isinstance(
            module, CategoricalGroup), only=only)
        for feature in names:
            if feature not in old_layout:
                continue
            rows[feature] = _carry_rows(state[key], old_state[key], new_layout[feature], old_layout[feature],
                                        _row_map(features[feature], vocab_sources.get(feature, ""),
                                                 old_vocabulary, new_ids))
        loaded.append(key)
    for key, value in state.items():
        if key in handled:
            continue
        if key in old_state and old_state[key].shape == value.shape:
            state[key] = old_state[key].clone()
            loaded.append(key)
        else:
            not_loaded.append(key)
    return state, loaded, not_loaded, rows


def _table_layout(spec: ModelSpec, names: list[str], dim: int, multi: bool,
                  only: list[str] | None = None) -> dict[str, tuple[int, int]] | None:
    """{feature: (offset, rows)} of the table that holds `names` in a model built from `spec`
    (categorical features of one embedding size share a table, in spec order; None: no such table).
    `only`: the table holds exactly these categorical features, in spec order (per-task id biases)."""
    if multi:
        feature = next((f for f in spec.features if f.name == names[0] and f.type == "multi_categorical"), None)
        return {feature.name: (0, int(feature.vocab_size))} if feature is not None else None
    group = [f for f in spec.features if f.type == "categorical"
             and (int(f.embedding_dim) == dim if only is None else f.name in only)]
    layout, offset = {}, 0
    for feature in group:
        layout[feature.name] = (offset, int(feature.vocab_size))
        offset += int(feature.vocab_size)
    return layout or None


def _row_map(feature, source: str, old_vocabulary: dict[str, Any], new_ids):
    """None: rows carry over by index (hashed buckets, fixed-size ids); else (old ids, new ids) of the
    values the feature's vocabulary holds in both versions, and the counts of new and dropped values.
    `new_ids()`: {vocabulary: {value: id}} of the new plan's pinned version (read once, cached)."""
    if feature.hash_buckets is not None or not source.startswith("vocabulary table"):
        return None
    vocabulary = feature.vocabulary or feature.name
    old = old_vocabulary["ids"](vocabulary)
    new = new_ids().get(vocabulary, {})
    shared = sorted(set(old) & set(new))
    return ([0] + [old[v] for v in shared], [0] + [new[v] for v in shared],   # id 0: OOV, carried too
            len(set(new) - set(old)), len(set(old) - set(new)))


def _carry_rows(table: torch.Tensor, old_table: torch.Tensor, new_place: tuple[int, int],
                old_place: tuple[int, int], row_map) -> dict[str, int]:
    """Copy one feature's rows from the old table into the new one (in place); the counts."""
    (new_offset, new_rows), (old_offset, old_rows) = new_place, old_place
    if row_map is None:
        n = min(new_rows, old_rows)
        table[new_offset:new_offset + n] = old_table[old_offset:old_offset + n]
        return {"carried": n - 1, "new": max(0, new_rows - old_rows), "dropped": max(0, old_rows - new_rows),
                "by": "index"}
    old_ids, new_ids, _, dropped = row_map
    pairs = [(o, n) for o, n in zip(old_ids, new_ids) if o < old_rows and n < new_rows]
    old_index = torch.tensor([old_offset + o for o, _ in pairs], dtype=torch.long)
    new_index = torch.tensor([new_offset + n for _, n in pairs], dtype=torch.long)
    table[new_index] = old_table[old_index]
    # new: rows left at their fresh initialisation (values new to the vocabulary, and unused ids)
    return {"carried": len(pairs) - 1, "new": new_rows - len(pairs), "dropped": dropped, "by": "raw value"}
