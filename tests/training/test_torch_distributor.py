"""`--launcher torch-distributor`: pyspark's TorchDistributor runs the same training loop with torch.distributed
(gloo on CPU) in 2 processes on the local Spark session's executors, tested the way Horovod is."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import psutil
import pytest

import fault_callbacks
import training_tables as synth
from conftest import SMALL_MODEL, assert_disjoint_shards, date_args, final_metrics, record
from training.callbacks import CALLBACKS_ENV

pytestmark = pytest.mark.slow

COMMON = ["--launcher", "torch-distributor", "--workers", "2", "--epochs", "2", "--batch-size", "100",
          "--lr", "0.003", "--checkpoint-every-steps", "5", "--no-progress", *SMALL_MODEL]


def train_with_callbacks(args: list[str], callbacks: str | None) -> int:
    from jobs.train import main

    before = os.environ.get(CALLBACKS_ENV)
    os.environ.pop(CALLBACKS_ENV, None)
    if callbacks:
        os.environ[CALLBACKS_ENV] = callbacks   # the launcher reads it and hands it to every worker
    try:
        return main(args)
    finally:
        os.environ.pop(CALLBACKS_ENV, None)
        if before is not None:
            os.environ[CALLBACKS_ENV] = before


def torchrun_processes(patience: float = 60) -> list[psutil.Process]:
    """TorchDistributor's launcher processes still alive after `patience` seconds. A failed Spark job's
    wrappers exit shortly after the job's failure is reported (seen once on a loaded 2-core box):
    the check is that they go, not that they were gone first."""
    deadline = time.monotonic() + patience
    while True:
        found = []
        for process in psutil.process_iter(["cmdline"]):
            command = " ".join(process.info.get("cmdline") or [])
            if "torch_run_process_wrapper" in command or "pyspark/ml/torch" in command and "train.py" in command:
                found.append(process)
        if not found or time.monotonic() > deadline:
            return found
        psutil.wait_procs(found, timeout=min(5.0, max(0.1, deadline - time.monotonic())))


@pytest.fixture(scope="module")
def uninterrupted(lake, spark, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("torch_distributor") / "full"
    assert train_with_callbacks([*date_args(lake), *COMMON, "--out", str(out)],
                                fault_callbacks.spec(("RowIdLog", {"column": "row_id"}))) == 0
    return out


def test_two_torch_distributed_workers_learn_and_read_disjoint_shards(lake, uninterrupted):
    run = record(uninterrupted)
    assert run["launcher"] == "torch-distributor" and run["world"] == "torch.distributed"
    assert run["world_size"] == 2 and run["status"] == "completed"
    assert run["lr_effective"] == pytest.approx(0.006)
    oracle = synth.oracle_auc(lake["validation_frame"])
    auc = final_metrics(uninterrupted)["play"]["auc"]
    assert auc > 0.75 and auc > oracle - 0.06, (auc, oracle)
    assert final_metrics(uninterrupted)["play"]["count"] == len(lake["validation_frame"])
    assert_disjoint_shards(lake, uninterrupted, run, batch_size=100)
    assert not torchrun_processes()   # nothing left behind


def test_crash_mid_epoch_then_resume_matches_uninterrupted(lake, uninterrupted, tmp_path):
    steps = record(uninterrupted)["steps_per_epoch"]
    crashed = tmp_path / "crashed"
    # Every worker exits hard (status 75, no cleanup) after step 10 of the second epoch: the Spark job fails.
    assert train_with_callbacks([*date_args(lake), *COMMON, "--out", str(crashed)],
                                fault_callbacks.spec(("HardExitAfterSteps", {"steps": steps + 10}))) == 1
    pointer = json.loads((crashed / "checkpoints" / "latest.json").read_text())
    assert (pointer["epoch"], pointer["step"]) == (1, 10)
    assert record(crashed)["status"] == "running" and len(record(crashed)["epochs"]) == 1
    assert not torchrun_processes()

    assert train_with_callbacks([*date_args(lake), *COMMON, "--out", str(crashed), "--resume"], None) == 0
    resumed = record(crashed)
    assert resumed["status"] == "completed" and resumed["resumes"][0]["position"] == {"epoch": 1, "step": 10}
    full, again = final_metrics(uninterrupted), final_metrics(crashed)
    for task in ("play", "share"):
        assert again[task]["auc"] == pytest.approx(full[task]["auc"], abs=1e-6)
        assert again[task]["logloss"] == pytest.approx(full[task]["logloss"], abs=1e-6)
    assert again["watch_ratio"]["mse"] == pytest.approx(full["watch_ratio"]["mse"], abs=1e-6)
