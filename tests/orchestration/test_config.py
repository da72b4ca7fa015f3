"""The chain's settings without training: `ple pipeline` and `ple experiment` give every model the same
per-task id biases and task weights (a matched comparison), a model's own model_params win, and a spec
without the bias features fails at start, naming the setting."""

from __future__ import annotations

import pytest
import yaml

from conftest import REPO_ROOT
from orchestration.config import PipelineConfig
from orchestration.experiment import train_config
from orchestration.pipeline import stage_configs
from ple_runtime.config import ConfigError, parse_job_config

DATES = ["--train-start", "2026-01-01", "--train-end", "2026-01-05", "--validation-date", "2026-01-06",
         "--test-date", "2026-01-07"]


def test_every_model_gets_the_same_biases_and_task_weights(tmp_path):
    from orchestration.config import ExperimentConfig

    pipeline = parse_job_config(PipelineConfig, ["--data-dir", str(tmp_path), "--set", "task_weights.comment=3",
                                                 "--models", "ple", "mmoe", "single_task"], prog="ple pipeline")
    trains = stage_configs(pipeline).train
    assert {m: t.model_params["task_bias_features"] for m, t in trains.items()} == {
        m: ["user_idx", "item_idx"] for m in ("ple", "mmoe", "single_task")}
    assert {m: t.task_weights for m, t in trains.items()} == {m: {"comment": 3.0} for m in trains}
    assert trains["ple"].model_params["specific_experts"] == 2   # the model's own defaults stay
    experiment = parse_job_config(ExperimentConfig, ["--data-dir", str(tmp_path), *DATES, "--set",
                                                     "model_params.mmoe={task_bias_features: [item_idx]}"],
                                  prog="ple experiment")
    assert train_config(experiment, "mmoe", 0).model_params["task_bias_features"] == ["item_idx"]   # its own wins
    assert train_config(experiment, "cgc", 0).model_params["task_bias_features"] == ["user_idx", "item_idx"]
    none = parse_job_config(PipelineConfig, ["--data-dir", str(tmp_path), "--set", "task_bias_features=[]"],
                            prog="ple pipeline")
    assert all("task_bias_features" not in t.model_params for t in stage_configs(none).train.values())


def test_a_spec_without_the_bias_features_fails_naming_the_setting(tmp_path):
    spec = yaml.safe_load((REPO_ROOT / "conf" / "video_spec.yaml").read_text())
    spec["features"] = [f for f in spec["features"] if f["name"] != "item_idx"]
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match=r"task_bias_features \['item_idx'\] are not id features of the spec"):
        parse_job_config(PipelineConfig, ["--data-dir", str(tmp_path), "--spec", str(path)], prog="ple pipeline")
    assert parse_job_config(PipelineConfig, ["--data-dir", str(tmp_path), "--spec", str(path), "--set",
                                             "task_bias_features=[user_idx]"], prog="ple pipeline")
