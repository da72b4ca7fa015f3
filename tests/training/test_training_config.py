"""`ple train` refuses bad settings before any worker starts (exit 2, a message naming the problem)."""

from __future__ import annotations

import pytest

from jobs.train import main


def _fails(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


BASE = ["--spec", "conf/video_spec.yaml", "--out", "/tmp/never-written"]


def test_unknown_model_is_rejected_with_the_valid_names(capsys, tmp_path):
    err = _fails(capsys, ["--train-path", str(tmp_path), "--validation-path", str(tmp_path), *BASE,
                          "--model", "transformer9000"])
    assert "unknown model 'transformer9000'" in err and "ple" in err


def test_unknown_hyperparameter_is_rejected(capsys, tmp_path):
    err = _fails(capsys, ["--train-path", str(tmp_path), "--validation-path", str(tmp_path), *BASE,
                          "--set", "model_params.num_levelz=2"])
    assert "num_levelz" in err and "num_levels" in err


def test_validation_day_inside_training_range_is_rejected(capsys):
    err = _fails(capsys, ["--table", "/nowhere", "--train-start", "2026-01-01", "--train-end", "2026-01-07",
                          "--validation-date", "2026-01-03", *BASE])
    assert "inside the training range" in err


def test_start_after_end_and_malformed_dates_are_rejected(capsys):
    err = _fails(capsys, ["--table", "/nowhere", "--train-start", "2026-01-09", "--train-end", "2026-01-07",
                          "--validation-date", "2026-01-10", *BASE])
    assert "after train_end" in err
    err = _fails(capsys, ["--table", "/nowhere", "--train-start", "2026-13-01", "--train-end", "2026-01-07",
                          "--validation-date", "2026-01-10", *BASE])
    assert "train_start" in err


def test_table_and_paths_are_exclusive_and_required(capsys, tmp_path):
    err = _fails(capsys, BASE)
    assert "either --table" in err
    err = _fails(capsys, ["--table", str(tmp_path), "--train-path", str(tmp_path), *BASE])
    assert "either --table" in err


def test_missing_table_is_reported_before_launch(capsys, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("features: [{name: x, type: numeric}]\ntasks: [{name: y, type: binary}]\n")
    err = _fails(capsys, ["--table", str(tmp_path / "missing"), "--train-start", "2026-01-01",
                          "--train-end", "2026-01-02", "--validation-date", "2026-01-03",
                          "--spec", str(spec), "--out", str(tmp_path / "out"), "--workers", "2"])
    assert "does not exist" in err
    assert not (tmp_path / "out").exists()


def test_single_launcher_needs_one_worker(capsys, tmp_path):
    err = _fails(capsys, ["--train-path", str(tmp_path), "--validation-path", str(tmp_path), *BASE,
                          "--launcher", "single", "--workers", "2"])
    assert "launcher 'single'" in err


def test_steps_per_epoch_by_policy():
    from training.config import TrainConfig
    from training.trainer import TrainingError, steps_per_epoch

    def config(**settings):
        return TrainConfig(train_path="/t", validation_path="/v", spec="conf/video_spec.yaml", out="/o",
                           batch_size=64, **settings)
    shards = (4000, 150)   # rows per worker
    assert steps_per_epoch(config(steps_per_epoch_policy="min"), shards, 2) == 150 // 64   # the short shard's end
    assert steps_per_epoch(config(steps_per_epoch_policy="mean"), shards, 2) == 4150 // 128
    assert steps_per_epoch(config(steps_per_epoch_policy="mean", max_steps_per_epoch=5), shards, 2) == 5
    with pytest.raises(TrainingError, match=r"0 steps per epoch: rows per worker \[4000, 50\]"):
        steps_per_epoch(config(), (4000, 50), 2)
