"""The daily DAG's train task reads a `ple train` config file (conf/train.yaml, or `ple tune`'s best_train.yaml
through the ple_train_config setting); the model, epochs and batch_size settings, when set, win over it."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from types import SimpleNamespace

import jinja2

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "airflow_dags"))
from ple_settings import model_settings  # noqa: E402


def render(variables: dict[str, str]) -> list[str]:
    template = jinja2.Environment().from_string(model_settings())
    return shlex.split(template.render(var=SimpleNamespace(value=variables), ple_quote=shlex.quote))


def test_the_train_config_file_comes_first_and_set_flags_win_over_it():
    code = {"ple_code_dir": "/srv/ple"}
    assert render(code) == ["--config", "/srv/ple/conf/train.yaml"]   # the tuned defaults
    assert render({**code, "ple_model": "mmoe", "ple_batch_size": "256"}) == [
        "--config", "/srv/ple/conf/train.yaml", "--model", "mmoe", "--batch-size", "256"]
    assert render({"ple_train_config": "/tune/my study/best_train.yaml", "ple_epochs": "1"}) == [
        "--config", "/tune/my study/best_train.yaml", "--epochs", "1"]


def test_the_daily_dag_renders_the_setting_into_train(dagbag):
    train = dagbag.get_dag("ple_daily").get_task("train")
    assert model_settings() in train.bash_command
