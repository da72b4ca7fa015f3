"""`ple train --init-from`: a model of day 1 warm-starts day 2's, whose vocabulary grew (training/warm_start.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import training_tables as synth
from ple_runtime.config import ConfigError, parse_job_config
from training.config import TrainConfig
from training.launch import run_training
from training.plan import prepare_plan

DAYS = ["2026-03-01", "2026-03-02", "2026-03-03"]
SMALL = ["--set", "model_params.expert_hidden=[8]", "--set", "model_params.tower_hidden=[8]"]


def config(root: Path, out: str, train_day: str, validation_day: str, *extra: str) -> TrainConfig:
    return parse_job_config(TrainConfig, [
        "--table", str(root / "lake" / "examples"), "--train-start", train_day, "--train-end", train_day,
        "--validation-date", validation_day, "--spec", str(root / "spec.yaml"), "--out", str(root / out),
        "--epochs", "1", "--max-steps-per-epoch", "3", "--batch-size", "32", "--calibration", "none",
        "--no-progress", "--seed", "3", *SMALL, *extra], prog="ple train")


def user_rows(model: torch.nn.Module) -> torch.Tensor:
    """user_idx's rows of the table it shares with the other features of its embedding size."""
    from ple_model.input_layer import CategoricalGroup

    group = next(m for m in model.modules() if isinstance(m, CategoricalGroup) and "user_idx" in m.names)
    index = group.names.index("user_idx")
    offset, size = int(group.offsets[index]), int(group.vocab_sizes[index])
    return group.table.detach()[offset:offset + size].clone()


@pytest.fixture(scope="module")
def grown_lake(tmp_path_factory):
    """Day 1: users u1..u30 and a model trained on it; then day 2's extract adds users u31..u50."""
    root = tmp_path_factory.mktemp("warm_start")
    (root / "spec.yaml").write_text(json.dumps(synth.SPEC))
    examples, vocabulary = str(root / "lake" / "examples"), str(root / "lake" / "vocabulary")
    synth.write_vocabulary_rs(vocabulary, 1, 30, DAYS[0])
    synth.write_day_rs(examples, DAYS[0], 0, users=30)
    synth.write_day_rs(examples, DAYS[1], 1, users=30)
    assert run_training(config(root, "day1", DAYS[0], DAYS[1])) == 0
    synth.write_vocabulary_rs(vocabulary, 31, 50, DAYS[2])
    synth.write_day_rs(examples, DAYS[2], 2, users=50)
    return root


def test_warm_start_keeps_shared_users_rows_by_raw_value_and_counts_them(grown_lake):
    from ple_model.model_file import load_model
    from ple_runtime.lineage import file_sha256
    from training.warm_start import fresh_model

    root = grown_lake
    day2 = config(root, "day2", DAYS[1], DAYS[2], "--init-from", str(root / "day1"))
    assert run_training(day2) == 0
    record = json.loads((root / "day2" / "run_record.json").read_text())
    warm = record["warm_start"]
    assert warm["model_sha256"] == file_sha256(root / "day1" / "model.pt") and not warm["partial"]
    assert warm["rows"]["user_idx"] == {"carried": 30, "new": 20, "dropped": 0, "by": "raw value"}
    assert warm["rows"]["tag_idx"]["by"] == "index" and warm["source_vocabulary"]["version"] == 0
    assert record["vocab"]["vocabulary_table"]["version"] == 1 and record["vocab"]["sizes"]["user_idx"] == 51

    old = load_model(root / "day1" / "model.pt").model
    plan = prepare_plan(day2.model_copy(update={"out": str(root / "day2_plan")}))
    start = fresh_model(day2, plan.spec)
    start.load_state_dict(torch.load(plan.warm_start.init_state))
    fresh = user_rows(fresh_model(day2, plan.spec))
    assert torch.equal(user_rows(start)[:31], user_rows(old))         # u1..u30 (and OOV): day 1's rows exactly
    assert torch.equal(user_rows(start)[31:], fresh[31:])            # u31..u50: the seeded fresh rows
    assert not torch.equal(user_rows(start)[:31], fresh[:31])
    same_shape = [k for k, v in old.state_dict().items()
                  if start.state_dict()[k].shape == v.shape and not k.endswith(("offsets", "vocab_sizes"))]
    assert "towers.layers.0.weight" in same_shape and "levels.0.experts.layers.0.weight" in same_shape
    for key in same_shape:                                           # dense weights, unchanged tables: copied
        assert torch.equal(start.state_dict()[key], old.state_dict()[key]), key
    assert set(warm["loaded"]) >= set(same_shape) and not warm["not_loaded"]


def test_per_task_user_biases_are_carried_by_raw_value_like_the_embedding(grown_lake):
    from ple_model.model_file import load_model
    from training.warm_start import fresh_model

    root, biases = grown_lake, ["--set", "model_params.task_bias_features=[user_idx]"]
    assert run_training(config(root, "day1_biases", DAYS[0], DAYS[1], *biases)) == 0
    day2 = config(root, "day2_biases", DAYS[1], DAYS[2], *biases, "--init-from", str(root / "day1_biases"))
    plan = prepare_plan(day2)
    start = fresh_model(day2, plan.spec)
    start.load_state_dict(torch.load(plan.warm_start.init_state))
    old = load_model(root / "day1_biases" / "model.pt").model.task_bias[0].table.detach()
    new = start.task_bias[0].table.detach()
    assert old.shape == (31, 3) and new.shape == (51, 3) and float(old.abs().sum()) > 0   # (users, tasks)
    assert torch.equal(new[:31], old)                       # u1..u30 (and OOV): day 1's biases exactly
    assert torch.equal(new[31:], torch.zeros(20, 3))        # u31..u50: fresh, i.e. zero
    assert "task_bias.0.table" in plan.warm_start.loaded


def test_rows_follow_the_raw_value_when_the_ids_are_renumbered(grown_lake):
    from ple_model.model_file import load_model
    from training.warm_start import fresh_model

    root = grown_lake
    renumbered = str(root / "renumbered_vocabulary")                 # u_i gets id 51 - i
    synth.write_vocabulary_rs(renumbered, 1, 50, DAYS[0], ids=[51 - i for i in range(1, 51)])
    day2 = config(root, "renumbered", DAYS[1], DAYS[2], "--init-from", str(root / "day1" / "model.pt"),
                  "--vocabulary-table", renumbered, "--vocabulary-version", "0")
    plan = prepare_plan(day2)
    start = fresh_model(day2, plan.spec)
    start.load_state_dict(torch.load(plan.warm_start.init_state))
    old_rows, new_rows = user_rows(load_model(root / "day1" / "model.pt").model), user_rows(start)
    for i in range(1, 31):
        assert torch.equal(new_rows[51 - i], old_rows[i]), i
    assert plan.warm_start.rows["user_idx"]["carried"] == 30


def test_another_architecture_is_refused_with_the_differences_or_loaded_in_part(grown_lake):
    root = grown_lake
    wider = ["--set", "model_params.expert_hidden=[12]", "--init-from", str(root / "day1")]
    with pytest.raises(ConfigError) as error:
        prepare_plan(config(root, "wider", DAYS[1], DAYS[2], *wider))
    assert "expert_hidden" in str(error.value) and "--init-partial" in str(error.value)
    plan = prepare_plan(config(root, "wider_partial", DAYS[1], DAYS[2], *wider, "--init-partial"))
    warm = plan.warm_start
    assert warm.partial and any("expert_hidden" in d for d in warm.differences)
    assert warm.not_loaded and warm.rows["user_idx"]["carried"] == 30        # embeddings still carried


# --- --training-mode incremental (training/incremental.py) ----------------------------------------

def test_incremental_warm_starts_on_the_days_after_the_candidate_and_retrains_when_due(grown_lake):
    root = grown_lake
    incremental = ["--training-mode", "incremental", "--init-from", str(root / "day1")]
    plan = prepare_plan(config(root, "inc", DAYS[0], DAYS[2], *incremental).model_copy(
        update={"train_end": synth_date(DAYS[1])}))
    assert plan.training.mode == "warm_start" and plan.warm_start is not None
    assert str(plan.training.train_start) == DAYS[1]                   # day 1's model already saw DAYS[0]
    assert {f.partition_values["dt"] for f in plan.train_snapshot.files} == {DAYS[1]}
    assert plan.trained_days()["last_full_retrain_end"] == DAYS[0]     # the chain started with day 1's full run

    due = prepare_plan(config(root, "due", DAYS[0], DAYS[2], *incremental, "--full-retrain-every-days", "1")
                       .model_copy(update={"train_end": synth_date(DAYS[1])}))
    assert due.training.mode == "full" and due.warm_start is None and "full-retrain-every-days" in due.training.reason
    assert {f.partition_values["dt"] for f in due.train_snapshot.files} == {DAYS[0], DAYS[1]}


def test_a_backfill_never_warm_starts_from_a_model_of_later_data(grown_lake):
    root = grown_lake
    # Re-training day 1 itself (a backfill) with day 1's model published: it trained on DAYS[0], not before it.
    plan = prepare_plan(config(root, "backfill", DAYS[0], DAYS[1], "--training-mode", "incremental",
                               "--init-from", str(root / "day1")))
    assert plan.training.mode == "full" and plan.warm_start is None
    assert "not strictly before" in plan.training.reason and plan.training.candidate_trained_on["train_end"] == DAYS[0]
    # No production model at all (no registry yet): a full retrain, and the reason says so.
    first = prepare_plan(config(root, "first", DAYS[0], DAYS[1], "--training-mode", "incremental"))
    assert first.training.mode == "full" and "no model to warm-start from" in first.training.reason


def synth_date(text: str):
    import datetime as dt

    return dt.date.fromisoformat(text)


def test_incremental_from_the_production_alias_of_a_real_registry(grown_lake, tmp_path):
    """Day 1's model published (real MLflow registry, SQLite): day 2 warm-starts from @production and reads
    the old vocabulary from the bundle; a backfill of day 1 does not."""
    from model_registry.bundle import export_vocabulary, write_manifest
    from model_registry.registry import move_alias, register_bundle, registry_settings
    from ple_runtime.lineage import file_sha256

    root = grown_lake
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "model.pt").write_bytes((root / "day1" / "model.pt").read_bytes())
    export_vocabulary(str(root / "lake" / "vocabulary"), bundle / "vocabulary.parquet", version=0)
    write_manifest(bundle)
    uri = f"sqlite:///{tmp_path / 'registry' / 'mlflow.db'}"
    settings = registry_settings(str(root), uri)
    version = register_bundle(settings, bundle, tags={}, params={}, metrics={})
    move_alias(settings, version.version)

    registry = ["--training-mode", "incremental", "--init-tracking-uri", uri]
    plan = prepare_plan(config(root, "from_registry", DAYS[0], DAYS[2], *registry).model_copy(
        update={"train_end": synth_date(DAYS[1])}))
    warm = plan.warm_start
    assert plan.training.mode == "warm_start" and warm.registry["version"] == str(version.version)
    assert warm.registry["alias"] == "production" and warm.bundle_manifest_sha256 == file_sha256(bundle / "manifest.json")
    assert warm.source_vocabulary["read_from"].endswith("vocabulary.parquet")
    assert warm.rows["user_idx"] == {"carried": 30, "new": 20, "dropped": 0, "by": "raw value"}
    backfill = prepare_plan(config(root, "backfill_registry", DAYS[0], DAYS[1], *registry))
    assert backfill.training.mode == "full" and "not strictly before" in backfill.training.reason


def test_ple_pipeline_trains_only_the_published_model_incrementally(tmp_path):
    from orchestration.config import PipelineConfig
    from orchestration.pipeline import stage_configs

    configs = stage_configs(PipelineConfig(data_dir=str(tmp_path), training_mode="incremental",
                                           full_retrain_every_days=3))
    assert configs.train["ple"].training_mode == "incremental" and configs.train["ple"].full_retrain_every_days == 3
    assert [m for m, c in configs.train.items() if c.training_mode == "full"] == ["mmoe", "single_task"]


@pytest.mark.slow
def test_two_horovod_workers_start_from_the_same_warm_weights(grown_lake, subprocess_env):
    import fault_callbacks
    from conftest import run_train
    from training.callbacks import CALLBACKS_ENV

    root = grown_lake
    out = root / "two_workers"
    subprocess_env[CALLBACKS_ENV] = fault_callbacks.spec(("StartWeights", {}))
    result = run_train([*config_args(root, out), "--workers", "2", "--init-from", str(root / "day1")], subprocess_env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    warm = torch.load(out / "warm_start.pt")
    ranks = [torch.load(out / "debug" / f"start-rank{rank}.pt") for rank in (0, 1)]
    for key, value in warm.items():                # rank 1 never read warm_start.pt: the broadcast gave it rank 0's
        assert torch.equal(ranks[0][key], value) and torch.equal(ranks[1][key], value), key
    assert json.loads((out / "run_record.json").read_text())["world_size"] == 2


def config_args(root: Path, out: Path) -> list[str]:
    """`ple train` flags of a run on DAYS[0]..DAYS[1] validated on DAYS[2] (two files: one per worker)."""
    return ["--table", str(root / "lake" / "examples"), "--train-start", DAYS[0], "--train-end", DAYS[1],
            "--validation-date", DAYS[2], "--spec", str(root / "spec.yaml"), "--out", str(out), "--epochs", "1",
            "--max-steps-per-epoch", "2", "--batch-size", "16", "--calibration", "none", "--no-progress",
            "--seed", "3", *SMALL]
