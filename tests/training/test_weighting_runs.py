"""GradNorm, DWA and PCGrad through `ple train` itself: sparse embedding gradients (sparse_adam), the
weights the run records, checkpoint/resume of their state; PCGrad with 2 Horovod workers (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import training_tables as synth
from conftest import SMALL_MODEL, date_args, record, run_train
from ple_runtime.config import parse_job_config
from training.config import TrainConfig
from training.launch import run_training


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    root = tmp_path_factory.mktemp("weighting_tables")
    synth.write_parquet_folder(synth.make_rows(1200, 1), root / "train", files=2)
    synth.write_parquet_folder(synth.make_rows(400, 2, start_id=10**6), root / "valid", files=1)
    spec = json.loads(json.dumps(synth.SPEC))
    spec["features"][0]["vocab_size"] = synth.USERS + 1
    (root / "spec.yaml").write_text(json.dumps(spec))
    return root


def train(root: Path, out: Path, *args: str) -> dict:
    config = parse_job_config(TrainConfig, [
        "--train-path", str(root / "train"), "--validation-path", str(root / "valid"), "--spec",
        str(root / "spec.yaml"), "--out", str(out), "--batch-size", "100", "--lr", "0.01", "--no-progress",
        "--embedding-optimizer", "sparse_adam", "--calibration", "none", "--selection", "last_epoch",
        *SMALL_MODEL, *args], prog="ple train")
    assert run_training(config) == 0
    return json.loads((out / "run_record.json").read_text())


def test_dwa_weights_come_from_the_last_two_epochs_losses(tables, tmp_path):
    run = train(tables, tmp_path / "dwa", "--weighting", "dwa", "--set", "weighting_params.temperature=0.5",
                "--epochs", "3", "--max-steps-per-epoch", "4")
    epochs = run["epochs"]
    assert run["embeddings"]["sparse_gradients"] is True
    # The record's weights are those after the epoch's end: the third epoch uses the ratio of epochs 0 and 1.
    assert set(epochs[0]["task_weights"].values()) == {1.0}
    losses = [epochs[e]["train_loss"] for e in (0, 1)]
    ratios = {t: losses[1][t] / losses[0][t] for t in losses[0]}
    weights = epochs[1]["task_weights"]
    assert sum(weights.values()) == pytest.approx(len(weights), rel=1e-5)
    slowest = max(ratios, key=ratios.get)   # the task whose loss fell least gets the most weight
    assert max(weights, key=weights.get) == slowest


def test_gradnorm_learns_weights_and_resumes_them(tables, tmp_path):
    out = tmp_path / "gradnorm"
    run = train(tables, out, "--weighting", "gradnorm", "--epochs", "1", "--max-steps-per-epoch", "6")
    weights = run["epochs"][0]["task_weights"]
    assert sum(weights.values()) == pytest.approx(len(weights), rel=1e-5)
    assert max(abs(w - 1.0) for w in weights.values()) > 1e-3   # moved from the equal start
    resumed = train(tables, out, "--weighting", "gradnorm", "--epochs", "2", "--max-steps-per-epoch", "6",
                    "--resume")
    assert resumed["resumes"] and resumed["epochs"][0]["task_weights"] == weights
    assert resumed["epochs"][1]["task_weights"] != weights


def test_pcgrad_trains_with_sparse_embedding_gradients(tables, tmp_path):
    run = train(tables, tmp_path / "pcgrad", "--weighting", "pcgrad", "--epochs", "1", "--max-steps-per-epoch",
                "10")
    assert run["status"] == "completed" and run["embeddings"]["sparse_gradients"] is True
    # It learns: play depends on x1 and the user (AUC 0.5 would mean nothing learned).
    assert run["epochs"][-1]["validation"]["play"]["auc"] > 0.6


@pytest.mark.slow
def test_pcgrad_with_two_horovod_workers(lake, tmp_path, subprocess_env):
    out = tmp_path / "run"
    result = run_train([*date_args(lake), "--out", str(out), "--workers", "2", "--epochs", "1", "--batch-size",
                        "64", "--lr", "0.003", "--weighting", "pcgrad", "--embedding-optimizer", "sparse_adam",
                        "--max-steps-per-epoch", "20", *SMALL_MODEL], subprocess_env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    run = record(out)
    assert run["world_size"] == 2 and run["launcher"] == "horovodrun" and run["status"] == "completed"
    assert run["embeddings"]["sparse_gradients"] is True
    assert run["epochs"][0]["validation"]["play"]["auc"] > 0.55
