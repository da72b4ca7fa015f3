"""Failure paths of training, on the real components: a training range with a missing day, a
checkpoint truncated on disk. (A worker killed in a collective: test_worker_killed.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

import fault_callbacks
import training_tables as synth
from ple_runtime.config import ConfigError, parse_job_config
from training.config import TrainConfig
from training.launch import run_training

SMALL = ["--set", "model_params.expert_hidden=[8]", "--set", "model_params.tower_hidden=[8]"]
COMMON = ["--batch-size", "100", "--lr", "0.003", "--no-progress", "--seed", "7", *SMALL]


def _record(out: Path) -> dict:
    return json.loads((out / "run_record.json").read_text())


def test_a_training_range_with_a_missing_day_is_refused_unless_gaps_are_allowed(spark, tmp_path, capsys):
    days = ["2026-01-01", "2026-01-03", "2026-01-05", "2026-01-06"]   # 01-02 and 01-04 never extracted
    frames = [synth.make_rows(200, i, start_id=i * 10**6, dt=day) for i, day in enumerate(days)]
    table = str(tmp_path / "lake" / "examples")
    synth.write_delta(spark, pd.concat(frames, ignore_index=True), table, files_per_day=1)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(synth.SPEC, sort_keys=False))
    args = ["--table", table, "--train-start", "2026-01-01", "--train-end", "2026-01-05", "--validation-date",
            "2026-01-06", "--spec", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "run"), "--epochs", "1",
            "--vocab-sizes", "{user_idx: 41}", *COMMON]

    with pytest.raises(ConfigError) as refused:
        run_training(parse_job_config(TrainConfig, args, prog="ple train"))
    assert "no rows for 2 day(s) of the training range 2026-01-01..2026-01-05" in str(refused.value)
    assert "2026-01-02, 2026-01-04" in str(refused.value) and "--allow-gaps" in str(refused.value)
    assert not (tmp_path / "run" / "plan.json").exists()   # refused before anything was written

    capsys.readouterr()
    assert run_training(parse_job_config(TrainConfig, [*args, "--allow-gaps"], prog="ple train")) == 0
    assert "training without 2 missing day(s) (2026-01-02, 2026-01-04)" in capsys.readouterr().err
    run = _record(tmp_path / "run")
    assert run["status"] == "completed" and run["config"]["allow_gaps"] is True
    assert run["missing_days"] == ["2026-01-02", "2026-01-04"]
    assert run["train_snapshot"]["num_records"] == 600


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    root = tmp_path_factory.mktemp("failure_tables")
    synth.write_parquet_folder(synth.make_rows(1500, 1), root / "train", files=3)
    synth.write_parquet_folder(synth.make_rows(400, 2, start_id=10**6), root / "valid", files=1)
    spec = json.loads(json.dumps(synth.SPEC))
    spec["features"][0]["vocab_size"] = synth.USERS + 1
    (root / "spec.yaml").write_text(json.dumps(spec))
    return root


def _train(root: Path, out: Path, *args: str, callbacks=()) -> dict:
    config = parse_job_config(TrainConfig, [
        "--train-path", str(root / "train"), "--validation-path", str(root / "valid"), "--spec",
        str(root / "spec.yaml"), "--out", str(out), *COMMON, *args], prog="ple train")
    assert run_training(config, callbacks) == 0
    return _record(out)


def test_a_truncated_checkpoint_is_skipped_for_the_previous_complete_one(tables, tmp_path, capsys):
    common = ["--epochs", "2", "--checkpoint-every-steps", "4", "--selection", "last_epoch"]
    full = _train(tables, tmp_path / "full", *common)
    with pytest.raises(fault_callbacks.SimulatedCrash):   # 15 steps/epoch: stops at epoch 1, step 10
        _train(tables, tmp_path / "crashed", *common, callbacks=[fault_callbacks.RaiseAfterSteps(steps=15 + 10)])
    checkpoints = tmp_path / "crashed" / "checkpoints"
    torn = checkpoints / json.loads((checkpoints / "latest.json").read_text())["file"]
    assert torn.name == "step-e0001-s000008.pt"
    torn.write_bytes(torn.read_bytes()[: torn.stat().st_size // 2])   # half the file: torn on disk
    capsys.readouterr()

    resumed = _train(tables, tmp_path / "crashed", *common, "--resume")
    err = capsys.readouterr().err
    assert f"checkpoint {torn} is incomplete" in err and "(truncated)" in err
    assert resumed["resumes"][0]["checkpoint"] == "step-e0001-s000004.pt"
    assert resumed["resumes"][0]["position"] == {"epoch": 1, "step": 4}
    assert resumed["epochs"][-1]["validation"] == full["epochs"][-1]["validation"]   # the replayed steps: exact
