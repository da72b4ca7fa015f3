"""The daily DAG's train task takes `ple tune`'s best_train.yaml through the ple_train_config setting."""

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


def test_train_config_replaces_the_model_flags_and_is_quoted():
    assert render({}) == ["--model", "ple", "--epochs", "2", "--batch-size", "1024"]
    assert render({"ple_model": "mmoe", "ple_batch_size": "256"})[:2] == ["--model", "mmoe"]
    assert render({"ple_train_config": "/tune/my study/best_train.yaml"}) == [
        "--config", "/tune/my study/best_train.yaml"]


def test_the_daily_dag_renders_the_setting_into_train(dagbag):
    train = dagbag.get_dag("ple_daily").get_task("train")
    assert model_settings() in train.bash_command
