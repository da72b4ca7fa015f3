"""The trainer in one process on small Parquet tables: resume, refusals, early stopping, model selection,
the embedding options. (Several workers: test_training_distributed.py and test_torch_distributor.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import fault_callbacks
import training_tables as synth
from ple_runtime.config import ConfigError, parse_job_config
from ple_runtime.lineage import file_sha256, write_json
from training.checkpoint import CheckpointMismatch
from training.config import TrainConfig
from training.launch import run_training

SMALL = ["--set", "model_params.expert_hidden=[16]", "--set", "model_params.tower_hidden=[16,8]"]
SMALL_SINGLE_TASK = ["--set", "model_params.bottom_hidden=[16]", "--set", "model_params.tower_hidden=[16,8]"]


def flipped_share(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The same rows with share drawn from the OPPOSITE of the training relation: learning share hurts here."""
    rng = np.random.default_rng(seed)
    frame = frame.copy()
    p = 1 / (1 + np.exp(-(-frame["x1"].to_numpy() - frame["x2"].to_numpy() - 1.0)))
    frame["share"] = (rng.random(len(frame)) < p).astype(np.int32)
    return frame


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    root = tmp_path_factory.mktemp("trainer_tables")
    synth.write_parquet_folder(synth.make_rows(1500, 1), root / "train", files=3)
    validation = synth.make_rows(600, 2, start_id=10**6)
    synth.write_parquet_folder(validation, root / "valid", files=2)
    synth.write_parquet_folder(flipped_share(validation, 3), root / "valid_flipped", files=2)
    spec = json.loads(json.dumps(synth.SPEC))
    spec["features"][0]["vocab_size"] = synth.USERS + 1
    (root / "spec.yaml").write_text(json.dumps(spec))
    return {"root": root, "validation": validation}


def config(tables, out: Path, *args: str, validation: str = "valid", small=SMALL) -> TrainConfig:
    root = tables["root"]
    return parse_job_config(TrainConfig, [
        "--train-path", str(root / "train"), "--validation-path", str(root / validation), "--spec",
        str(root / "spec.yaml"), "--out", str(out), "--batch-size", "100", "--lr", "0.003", "--no-progress",
        "--seed", "7", *small, *args], prog="ple train")


def train(tables, out: Path, *args: str, callbacks=(), validation: str = "valid", small=SMALL) -> dict:
    assert run_training(config(tables, out, *args, validation=validation, small=small), callbacks) == 0
    return json.loads((out / "run_record.json").read_text())


def test_resume_from_an_end_of_epoch_checkpoint_matches_an_uninterrupted_run(tables, tmp_path):
    full = train(tables, tmp_path / "full", "--epochs", "2", "--selection", "last_epoch")
    first = train(tables, tmp_path / "split", "--epochs", "1", "--selection", "last_epoch")
    assert first["status"] == "completed" and len(first["epochs"]) == 1
    resumed = train(tables, tmp_path / "split", "--epochs", "2", "--selection", "last_epoch", "--resume")
    assert resumed["resumes"][0]["position"] == {"epoch": 1, "step": 0}
    assert resumed["resumes"][0]["checkpoint"] == "epoch-0000.pt"
    assert resumed["epochs"][1]["validation"] == full["epochs"][1]["validation"]   # bit for bit
    assert resumed["epochs"][1]["train_loss"] == full["epochs"][1]["train_loss"]


@pytest.mark.parametrize("embedding_optimizer", ["dense", "sparse_adam", "rowwise_adagrad"])
def test_crash_mid_epoch_then_resume_is_exact(tables, tmp_path, embedding_optimizer):
    common = ["--epochs", "2", "--checkpoint-every-steps", "4", "--embedding-optimizer", embedding_optimizer,
              "--selection", "last_epoch", "--set", "model_params.task_bias_features=[user_idx]"]
    full = train(tables, tmp_path / "full", *common)
    with pytest.raises(fault_callbacks.SimulatedCrash):
        train(tables, tmp_path / "crashed", *common, callbacks=[fault_callbacks.RaiseAfterSteps(steps=15 + 6)])
    pointer = json.loads((tmp_path / "crashed" / "checkpoints" / "latest.json").read_text())
    assert pointer == {"file": "step-e0001-s000004.pt", "epoch": 1, "step": 4}   # 15 steps/epoch: epoch 1, step 4
    resumed = train(tables, tmp_path / "crashed", *common, "--resume")
    assert resumed["resumes"][0]["position"] == {"epoch": 1, "step": 4}
    assert resumed["embeddings"]["optimizer"] == embedding_optimizer
    assert resumed["embeddings"]["sparse_gradients"] == (embedding_optimizer != "dense")
    assert resumed["epochs"][-1]["validation"] == full["epochs"][-1]["validation"]


def test_a_checkpoint_of_another_world_size_is_refused(tables, tmp_path):
    out = tmp_path / "run"
    train(tables, out, "--epochs", "1")
    # A checkpoint written by 2 workers (the only change to this real checkpoint): refused on resume.
    path = out / "checkpoints" / "epoch-0000.pt"
    state = torch.load(path, weights_only=False)
    state["world_size"] = 2
    torch.save(state, path)
    # ... written whole: its digest matches (a mismatch would read as a torn file, test_failure_paths.py)
    write_json(path.with_name(path.name + ".digest.json"), {"bytes": path.stat().st_size, "sha256": file_sha256(path)})
    with pytest.raises(CheckpointMismatch, match="written by 2 workers .* this run has 1"):
        run_training(config(tables, out, "--epochs", "2", "--resume"))
    # And the plan refuses another --workers before any worker starts.
    with pytest.raises(ConfigError, match="workers: 1 -> 2"):
        run_training(config(tables, out, "--epochs", "2", "--resume", "--workers", "2"))


def test_early_stopping_when_nothing_improves_keeps_the_first_epoch(tables, tmp_path):
    # lr 1e-30 moves no float32 weight: every epoch's metrics are identical, so none improves on epoch 0.
    out = tmp_path / "run"
    record = train(tables, out, "--epochs", "6", "--patience", "2", "--lr", "1e-30")
    assert record["status"] == "early_stopped" and record["stopped_early"] is True
    assert len(record["epochs"]) == 3                               # epoch 0, then 2 without improvement
    assert record["selection"]["criterion"] == "mean_normalized"    # the multi-task default, recorded
    assert record["selection"]["values"] == [0.0, 0.0, 0.0] and record["selection"]["chosen_epoch"] == 0
    saved = torch.load(out / "model.pt", weights_only=False)
    assert saved["metadata"]["epoch"] == 0
    assert sorted(p.name for p in (out / "checkpoints").glob("epoch-*.pt")) == [
        "epoch-0000.pt", "epoch-0001.pt", "epoch-0002.pt"]


def _rescore(out: Path, frame: pd.DataFrame) -> dict:
    """model.pt scored by evaluation's own code on the validation rows."""
    from evaluation.scoring import score_model
    from ple_model import load_model

    loaded = load_model(out / "model.pt")
    return score_model(loaded.model, loaded.spec, frame.drop(columns=["_play_p"])).tasks


def test_model_pt_holds_the_epoch_the_criterion_chose(tables, tmp_path):
    out = tmp_path / "run"
    record = train(tables, out, "--epochs", "3", "--lr", "0.02", "--patience", "3")
    values = record["selection"]["values"]
    chosen = record["selection"]["chosen_epoch"]
    assert chosen == int(np.nanargmax(values)) and record["best"]["epoch"] == chosen
    scores = _rescore(out, tables["validation"])
    for task in ("play", "share"):
        assert scores[task]["auc"] == pytest.approx(record["epochs"][chosen]["validation"][task]["auc"], abs=1e-6)
    assert scores["watch_ratio"]["mse"] == pytest.approx(record["epochs"][chosen]["validation"]["watch_ratio"]["mse"],
                                                         rel=1e-5)


def test_single_task_keeps_each_task_at_its_own_best_epoch(tables, tmp_path):
    out = tmp_path / "run"
    record = train(tables, out, "--model", "single_task", "--epochs", "3", "--patience", "3",
                   "--set", "model_params.task_bias_features=[user_idx]",   # per-task biases: a column per task
                   validation="valid_flipped", small=SMALL_SINGLE_TASK)
    chosen = record["selection"]["chosen_epoch"]
    assert record["selection"]["criterion"] == "per_task"
    # play keeps improving; share's validation relation is flipped, so learning it only hurts there.
    assert chosen["play"] == 2 and chosen["share"] == 0
    # model.pt combines the networks: each task's part equals that task's best-epoch checkpoint exactly.
    saved = torch.load(out / "model.pt", weights_only=False)["state_dict"]
    epoch_states = {e: torch.load(out / "checkpoints" / f"epoch-{e:04d}.pt", weights_only=False)["model"]
                    for e in range(3)}
    names = record["spec"]["tasks"]
    for index, task in enumerate(t["name"] for t in names):
        source = epoch_states[chosen[task]]
        for key, value in saved.items():
            if key.startswith("task_networks."):
                assert torch.equal(value[index], source[key][index]), (task, key)
            elif key.startswith(f"task_inputs.{index}."):
                assert torch.equal(value, source[key]), (task, key)
            elif key == "task_bias.0.table":
                assert torch.equal(value[:, index], source[key][:, index]), (task, key)
    assert not torch.equal(epoch_states[0]["task_bias.0.table"], epoch_states[2]["task_bias.0.table"])  # trained
    # Scored by evaluation: each task reproduces the validation metric of its own chosen epoch.
    scores = _rescore(out, flipped_share(tables["validation"], 3))
    for task in ("play", "share"):
        expected = record["epochs"][chosen[task]]["validation"][task]["auc"]
        assert scores[task]["auc"] == pytest.approx(expected, abs=1e-6)


def test_selection_settings_are_checked(tables, tmp_path):
    with pytest.raises(SystemExit):   # pydantic: per_task needs a model without shared parameters
        config(tables, tmp_path / "x", "--selection", "per_task")
    with pytest.raises(ConfigError, match="selection_reference .* not a run record"):
        (tmp_path / "not_a_run").mkdir()
        run_training(config(tables, tmp_path / "y", "--selection-reference", str(tmp_path / "not_a_run")))
    with pytest.raises(ConfigError, match="selection_metrics names unknown tasks \\['clicks'\\]"):
        run_training(config(tables, tmp_path / "z", "--set", "selection_metrics.clicks=auc"))


def test_hashed_vocabulary_with_a_sparse_optimizer_trains_and_scores_in_evaluation(tables, tmp_path):
    spec = json.loads((tables["root"] / "spec.yaml").read_text())
    spec["features"][0] = {"name": "user_idx", "type": "categorical", "hash_buckets": 16, "embedding_dim": 8}
    (tmp_path / "hashed.yaml").write_text(json.dumps(spec))
    out = tmp_path / "run"
    record = train(tables, out, "--epochs", "2", "--lr", "0.01", "--embedding-optimizer", "rowwise_adagrad",
                   "--embedding-lr", "0.05", "--spec", str(tmp_path / "hashed.yaml"))
    assert record["vocab"]["sources"]["user_idx"] == "hash_buckets (16)"
    assert record["embeddings"] == {"optimizer": "rowwise_adagrad", "rows": 16 + 24 + synth.TAGS,
                                    "sparse_gradients": True}
    chosen = record["selection"]["chosen_epoch"]
    auc = record["epochs"][chosen]["validation"]["play"]["auc"]
    assert auc > 0.7   # 40 users in 15 buckets: some collide, play stays learnable
    assert _rescore(out, tables["validation"])["play"]["auc"] == pytest.approx(auc, abs=1e-6)


def test_default_shuffle_buffer_mixes_row_groups_of_several_files(tables):
    """One row group per file (per day in the demo lake): a buffer smaller than a row group yields batches
    from one file at a time; the default (4 row groups, here the whole shard) mixes them from the start."""
    from ple_model import ModelSpec
    from training.data import DeterministicBatches, auto_shuffle_buffer, shard_layout
    from ple_runtime.snapshot import resolve_parquet_snapshot

    spec = ModelSpec.model_validate(json.loads((tables["root"] / "spec.yaml").read_text()))
    urls = resolve_parquet_snapshot(str(tables["root"] / "train")).urls   # 3 files x 500 rows, 1 row group each
    layout = shard_layout(urls, 1)
    assert layout.largest_row_group == 500 and auto_shuffle_buffer(layout, 0) == 1500
    assert auto_shuffle_buffer(layout, 0, minimum=10) == 1500 and auto_shuffle_buffer(layout, 0, 2, 10) == 1000

    def files_in_first_batches(buffer: int) -> list[int]:
        source = DeterministicBatches(urls, spec, rank=0, layout=layout, batch_size=100, seed=3, shuffle=True,
                                      shuffle_buffer=buffer, extra_columns=("row_id",))
        # make_rows numbers rows 0..1499 in file order: file = row_id // 500
        return [len(set((b["row_id"] // 500).tolist())) for b in source.batches(limit=3)]

    assert files_in_first_batches(100) == [1, 1, 1]
    assert min(files_in_first_batches(auto_shuffle_buffer(layout, 0))) == 3


def test_the_plan_round_trips_typed_and_loads_plans_with_retired_test_settings(tables, tmp_path):
    from training.plan import TrainingPlan, prepare_plan
    from ple_runtime.snapshot import Snapshot

    plan = prepare_plan(config(tables, tmp_path / "run", "--epochs", "1"))
    loaded = TrainingPlan.load(tmp_path / "run" / "plan.json")
    assert loaded == plan
    assert isinstance(loaded.config, TrainConfig) and isinstance(loaded.train_snapshot, Snapshot)
    assert loaded.spec.features[0].vocab_size == synth.USERS + 1 and loaded.train_snapshot.urls == plan.train_snapshot.urls
    # A plan.json written before the test hooks left the config still loads (they are dropped).
    data = json.loads((tmp_path / "run" / "plan.json").read_text())
    data["config"].update(stop_after_steps=5, debug_step_delay_s=0.1, debug_row_id_column="row_id")
    (tmp_path / "old.json").write_text(json.dumps(data))
    assert TrainingPlan.load(tmp_path / "old.json") == plan
    with pytest.raises(ValueError, match="is not a training plan"):
        (tmp_path / "other.json").write_text(json.dumps({"format": "something-else"}))
        TrainingPlan.load(tmp_path / "other.json")


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_the_selected_model_is_calibrated_on_the_validation_rows(tables, tmp_path, method):
    from ple_model.calibration import read_calibration

    record = train(tables, tmp_path / method, "--epochs", "1", "--calibration", method)
    calibration = read_calibration(str(tmp_path / method / "model.pt"))
    assert calibration is not None and calibration.method == method
    fitted = record["calibration"]
    assert fitted["rows"] == len(tables["validation"])
    assert fitted["fitted_on"]["table"].endswith("valid")
    for task, after in fitted["after"].items():
        before = fitted["before"][task]
        assert before["observed"] == pytest.approx(after["observed"])
        # isotonic regression matches the mean of the rows it was fitted on exactly; Platt nearly
        tolerance = 1e-6 if method == "isotonic" else 0.02 * max(after["observed"], 0.05)
        assert abs(after["mean_prediction"] - after["observed"]) <= tolerance, (task, before, after)


def test_calibration_none_leaves_the_model_file_without_one(tables, tmp_path):
    from ple_model.calibration import read_calibration

    record = train(tables, tmp_path / "raw", "--epochs", "1", "--calibration", "none")
    assert read_calibration(str(tmp_path / "raw" / "model.pt")) is None and "calibration" not in record


def test_calibration_scores_the_validation_rows_in_batches_as_one_whole_read(tables, tmp_path):
    """The rows calibration is fitted on are read in batches that cross the files' boundaries; they are the
    predictions, labels and masks a whole read of the validation files gives, bit for bit, kept compactly."""
    from ple_model import model_inputs
    from ple_model.model_file import load_model
    from ple_model.model_inputs import source_columns
    from ple_model.prediction import predict
    from ple_runtime import arrow_storage
    from training.calibration import validation_predictions

    train(tables, tmp_path / "run", "--epochs", "1", "--calibration", "none")
    loaded = load_model(tmp_path / "run" / "model.pt")
    paths = sorted(str(p) for p in (tables["root"] / "valid").glob("*.parquet"))
    assert len(paths) == 2
    whole = model_inputs(arrow_storage.read_parquet(paths, source_columns(loaded.spec)).to_pandas(), loaded.spec)
    rows = len(whole.labels["play"])
    kept = validation_predictions(loaded, paths, rows, batch_size=64, rows_per_batch=130)
    predictions, labels, masks = kept.columns()
    expected, _ = predict(loaded.model, loaded.spec, whole.features, 64)
    for task in loaded.spec.task_names:
        binary = loaded.spec.task(task).type == "binary"
        assert predictions[task].dtype == np.float32 and masks[task].dtype == np.uint8
        assert labels[task].dtype == (np.uint8 if binary else np.float32)
        assert np.array_equal(predictions[task], expected[task])
        assert np.array_equal(labels[task], whole.labels[task])
        assert np.array_equal(masks[task], whole.masks[task] > 0)
    with pytest.raises(ValueError, match="other than the"):   # the footers' rows are what the files give
        validation_predictions(loaded, paths, rows + 1, batch_size=64, rows_per_batch=130)


def test_bf16_training_keeps_fp32_weights_and_says_which_path_ran(tables, tmp_path):
    """precision=bf16 (with the sparse embedding path): the run completes, its record says bf16 and why, and the
    weights it keeps (model.pt, the checkpoint's optimizer state) are fp32; the bf16 forward did run (its outputs
    differ from fp32's)."""
    from ple_model import autocast, load_model, model_inputs

    record = train(tables, tmp_path / "bf16", "--epochs", "1", "--precision", "bf16",
                   "--embedding-optimizer", "sparse_adam", "--calibration", "none")
    assert record["status"] == "completed" and record["precision"]["resolved"] == "bf16"
    assert record["precision"]["setting"] == "bf16" and record["precision"]["reason"].startswith("set to bf16")
    loaded = load_model(tmp_path / "bf16" / "model.pt")
    assert {t.dtype for t in loaded.model.state_dict().values() if t.is_floating_point()} == {torch.float32}
    checkpoint = torch.load(sorted((tmp_path / "bf16" / "checkpoints").glob("*.pt"))[-1], weights_only=False)
    floats = [t for t in _tensors([checkpoint["model"], checkpoint["optimizer"]])
              if t.is_floating_point() and t.dim() > 0]   # 0-dim: the optimizers' step counters
    assert floats and {t.dtype for t in floats} == {torch.float32}
    features = model_inputs(tables["validation"].head(50), loaded.spec).to_tensors()[0]
    with torch.no_grad(), autocast("bf16"):
        low = loaded.model(features)
    full = loaded.model(features)
    task = loaded.spec.task_names[0]
    assert low[task].dtype == torch.float32 and 0 < float((low[task] - full[task]).abs().max()) < 0.1


def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)


def test_auto_precision_resolves_by_the_hardware(tmp_path):
    """auto = bf16 where the CPU has amx_bf16 (read from /proc/cpuinfo), fp32 elsewhere; fp32/bf16 as set."""
    from training.precision import cpu_flags, resolve_precision

    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu, {"amx_bf16", "amx_tile", "avx512f"}).resolved == "bf16"
    without = resolve_precision("auto", cpu, {"avx512f", "avx512_bf16"})
    assert without.resolved == "fp32" and "lacks amx_bf16" in without.reason and "avx512_bf16" in without.hardware
    assert resolve_precision("fp32", cpu, {"amx_bf16"}).resolved == "fp32"
    assert "emulated" in resolve_precision("bf16", cpu, set()).reason
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 amx_bf16 amx_tile\n\nprocessor\t: 1\n")
    assert {"amx_bf16", "sse2"} <= cpu_flags(str(cpuinfo)) and cpu_flags(str(tmp_path / "missing")) == set()
    here = resolve_precision("auto", cpu)   # this machine, as `ple train --precision auto` resolves it
    assert here.resolved == ("bf16" if "amx_bf16" in cpu_flags() else "fp32")
    with pytest.raises(ConfigError, match="precision"):
        config({"root": tmp_path}, tmp_path / "out", "--precision", "fp16")


def test_the_pipeline_passes_its_precision_to_every_training_run(tmp_path):
    from orchestration.config import PipelineConfig
    from orchestration.pipeline import stage_configs

    configs = stage_configs(PipelineConfig(data_dir=str(tmp_path), precision="auto"))
    assert {model: train.precision for model, train in configs.train.items()} == {
        "ple": "auto", "mmoe": "auto", "single_task": "auto"}
    with pytest.raises(ConfigError, match="precision"):
        parse_job_config(PipelineConfig, ["--precision", "fp8"], prog="ple pipeline")
