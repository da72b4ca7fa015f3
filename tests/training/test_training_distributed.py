"""Real Horovod runs (2 Gloo workers on CPU) over small real tables. The horovod.spark launcher
(`--launcher spark`) runs on the standalone cluster's executors in tests/cluster/test_cluster_end_to_end.py."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

from conftest import (REPO_ROOT, RESUMABLE_RUN, SMALL_MODEL, assert_disjoint_shards, date_args, final_metrics, record,
                      run_train)
import fault_callbacks
import training_tables as synth
from training.callbacks import CALLBACKS_ENV


def _ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]


def test_two_workers_learn_and_read_disjoint_shards(lake, tmp_path, subprocess_env):
    out = tmp_path / "run"
    subprocess_env[CALLBACKS_ENV] = fault_callbacks.spec(("RowIdLog", {"column": "row_id"}))
    result = run_train([*date_args(lake), "--out", str(out), "--workers", "2", "--epochs", "2",
                        "--batch-size", "64", "--lr", "0.003", "--early-stop-metric", "play.auc", *SMALL_MODEL],
                       subprocess_env)
    _ok(result)
    run = record(out)
    assert run["world_size"] == 2 and run["status"] == "completed" and run["launcher"] == "horovodrun"
    assert run["lr_effective"] == pytest.approx(0.006)                       # linear scaling
    assert run["vocab"]["sources"]["user_idx"] == "vocabulary table (user)"  # size from <lake>/vocabulary
    assert run["vocab"]["sizes"]["user_idx"] == synth.USERS + 1
    # Learnable: play depends on x1 and the user; a model that learned nothing has AUC 0.5.
    # The oracle (true probabilities) reaches ~0.83 on these rows; two short epochs get within 0.06.
    oracle = synth.oracle_auc(lake["validation_frame"])
    auc = final_metrics(out)["play"]["auc"]
    assert auc > 0.75 and auc > oracle - 0.06, (auc, oracle)
    assert final_metrics(out)["play"]["count"] == len(lake["validation_frame"])  # every validation row, once

    assert_disjoint_shards(lake, out, run, batch_size=64)

    # Outputs: model (loadable), checkpoints, TensorBoard events, plan.
    from ple_model.model_file import load_model

    loaded = load_model(out / "model.pt")
    assert loaded.model_name == "ple" and not loaded.model.training
    assert {f.name: f.vocab_size for f in loaded.spec.features}["user_idx"] == synth.USERS + 1
    assert loaded.metadata["snapshot"]["version"] == run["delta_version"]
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert (out / "checkpoints" / "epoch-0001.pt").is_file()


def test_very_uneven_shards_finish_without_hanging(tmp_path, subprocess_env):
    """Policy `mean`: the rank with 150 rows cycles its shard while the other reads 4000 (the default
    `min` stops both at the short shard's end: tests/training/test_training_config.py)."""
    # Row groups (Petastorm's shard unit) of 2000, 100, 2000, 50 rows: rank 0 gets 4000 rows, rank 1 gets 150.
    for index, rows in enumerate([2000, 100, 2000, 50]):
        synth.write_parquet_folder(synth.make_rows(rows, index, start_id=index * 10**5), tmp_path / "train" / f"f{index}",
                                   files=1)
    synth.write_parquet_folder(synth.make_rows(500, 9, start_id=10**7), tmp_path / "val", files=2)
    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps(synth.SPEC))
    out = tmp_path / "run"
    result = run_train(["--train-path", str(tmp_path / "train"), "--validation-path", str(tmp_path / "val"),
                        "--spec", str(spec), "--out", str(out), "--workers", "2", "--epochs", "2",
                        "--batch-size", "64", "--steps-per-epoch-policy", "mean", "--calibration", "none", "--no-progress",
                        "--vocab-sizes-from-data", *SMALL_MODEL],
                       subprocess_env, timeout=180)
    _ok(result)
    run = record(out)
    assert run["rows_per_shard"] == [4000, 150]
    assert run["steps_per_epoch"] == 4150 // 128
    assert len(run["epochs"]) == 2


def _kill_tree(process: subprocess.Popen) -> None:
    parent = psutil.Process(process.pid)
    victims = parent.children(recursive=True) + [parent]
    for victim in victims:
        try:
            victim.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(victims, timeout=30)


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(lake, uninterrupted_run, tmp_path, subprocess_env):
    common = [*date_args(lake), *RESUMABLE_RUN]

    killed = tmp_path / "killed"
    slowed = {**subprocess_env, CALLBACKS_ENV: fault_callbacks.spec(("StepDelay", {"seconds": 0.1}))}
    process = subprocess.Popen([sys.executable, "-m", "jobs.train", *common, "--out", str(killed)],
                               cwd=REPO_ROOT, env=slowed, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pointer = killed / "checkpoints" / "latest.json"
    deadline = time.time() + 180
    try:
        # Kill (SIGKILL, whole process tree) once a mid-epoch checkpoint of the SECOND epoch exists.
        while time.time() < deadline:
            if pointer.is_file():
                position = json.loads(pointer.read_text())
                if position["epoch"] == 1 and position["step"] >= 10:
                    break
            assert process.poll() is None, "the run ended before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("no mid-epoch checkpoint appeared in time")
    finally:
        _kill_tree(process)
    assert record(killed)["status"] == "running" and len(record(killed)["epochs"]) == 1

    _ok(run_train([*common, "--out", str(killed), "--resume"], subprocess_env))
    resumed = record(killed)
    assert resumed["status"] == "completed" and resumed["resumes"][0]["position"]["epoch"] == 1
    assert resumed["resumes"][0]["position"]["step"] >= 10
    full, again = final_metrics(uninterrupted_run), final_metrics(killed)
    for task in ("play", "share"):
        assert again[task]["auc"] == pytest.approx(full[task]["auc"], abs=1e-6)
        assert again[task]["logloss"] == pytest.approx(full[task]["logloss"], abs=1e-6)
    assert again["watch_ratio"]["mse"] == pytest.approx(full["watch_ratio"]["mse"], abs=1e-6)


def test_foreign_parquet_table_with_its_own_spec(tmp_path, subprocess_env):
    """Not the pipeline's table: other columns, other tasks, bool labels with nulls, no dates."""
    import pandas as pd

    def table(n, seed):  # noqa: E306
        rng = np.random.default_rng(seed)
        shop = rng.integers(0, 30, n)
        price = rng.normal(0, 1, n)
        click = rng.random(n) < 1 / (1 + np.exp(-(2 * price + (shop % 3) - 1)))
        buy = np.where(click, rng.random(n) < 0.3 + 0.4 * (price > 0), None)
        return pd.DataFrame({"shop_id": shop, "price_z": price, "clicked": click, "bought": pd.array(buy, "boolean")})
    for name, n, seed in (("train", 3000, 1), ("valid", 1000, 2)):
        (tmp_path / name).mkdir()
        for part, chunk in enumerate(np.array_split(table(n, seed), 3)):
            chunk.to_parquet(tmp_path / name / f"part-{part}.parquet", index=False)
    spec = tmp_path / "shop_spec.yaml"
    spec.write_text("features:\n  - {name: shop_id, type: categorical, vocab_size: null, vocabulary: shops, "
                    "embedding_dim: 4}\n  - {name: price_z, type: numeric}\n"
                    "tasks:\n  - {name: ctr, type: binary, label: clicked}\n"
                    "  - {name: cvr, type: binary, label: bought, mask: clicked}\n")
    out = tmp_path / "run"
    _ok(run_train(["--train-path", str(tmp_path / "train"), "--validation-path", str(tmp_path / "valid"),
                   # one worker: the table and spec are under test here; sharding parquet folders across two
                   # workers is test_very_uneven_shards_finish_without_hanging's
                   "--spec", str(spec), "--out", str(out), "--model", "mmoe", "--epochs", "2", "--vocab-sizes-from-data",
                   "--workers", "1",
                   "--batch-size", "64", "--lr", "0.01", "--weighting", "uncertainty", "--no-progress",
                   "--set", "model_params.expert_hidden=[8]", "--set", "model_params.tower_hidden=[8]"],
                  subprocess_env))
    run = record(out)
    assert run["delta_version"] is None and run["train_snapshot"]["format"] == "parquet"
    assert run["vocab"]["sizes"]["shop_id"] == 30 and "max id" in run["vocab"]["sources"]["shop_id"]
    metrics = final_metrics(out)
    assert metrics["ctr"]["auc"] > 0.75
    assert metrics["cvr"]["count"] == int(table(1000, 2)["clicked"].sum())  # AUC inside the sample space only
