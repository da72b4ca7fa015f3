"""The plan pins the vocabulary version its examples were written against (training/vocabulary.py)."""

from __future__ import annotations

import json

import pytest

import training_tables as synth
from ple_runtime.config import ConfigError, parse_job_config
from training.config import TrainConfig
from training.plan import prepare_plan

DAYS = ["2026-02-01", "2026-02-02", "2026-02-03", "2026-02-04"]


def write_vocabulary(path: str, first: int, last: int) -> None:
    synth.write_vocabulary_rs(path, first, last, DAYS[0])


def write_day(table: str, day: str, index: int, users: int) -> None:
    synth.write_day_rs(table, day, index, users)


def plan_for(root, out: str, train: tuple[str, str], validation: str, *extra: str):
    spec = root / "spec.yaml"
    spec.write_text(json.dumps(synth.SPEC))
    return prepare_plan(parse_job_config(TrainConfig, [
        "--table", str(root / "lake" / "examples"), "--train-start", train[0], "--train-end", train[1],
        "--validation-date", validation, "--spec", str(spec), "--out", str(root / out), "--no-progress",
        "--set", "model_params.expert_hidden=[8]", "--set", "model_params.tower_hidden=[8]", *extra],
        prog="ple train"))


def test_a_rerun_of_an_old_day_after_the_lake_grew_pins_the_same_vocabulary_and_plan(tmp_path):
    from model_registry.bundle import export_vocabulary, model_vocabulary_version

    lake = tmp_path / "lake"
    examples, vocabulary = str(lake / "examples"), str(lake / "vocabulary")
    write_vocabulary(vocabulary, 0, 30)                 # as extract: the vocabulary, then the days
    for index, day in enumerate(DAYS[:3]):
        write_day(examples, day, index, users=30)
    first = plan_for(tmp_path, "first", (DAYS[0], DAYS[1]), DAYS[2])
    assert first.vocab.sizes["user_idx"] == 31 and first.vocab.vocabulary_table["version"] == 0

    write_vocabulary(vocabulary, 31, 50)                # the next day: new users, then its examples
    write_day(examples, DAYS[3], 3, users=50)
    rerun = plan_for(tmp_path, "rerun", (DAYS[0], DAYS[1]), DAYS[2])
    assert rerun.vocab == first.vocab
    assert rerun.spec == first.spec
    assert rerun.train_snapshot == first.train_snapshot and rerun.validation_snapshot == first.validation_snapshot
    assert rerun.model_dump(exclude={"config"}) == first.model_dump(exclude={"config"})

    newest = plan_for(tmp_path, "newest", (DAYS[1], DAYS[2]), DAYS[3])  # a plan reading the new day: grown
    assert newest.vocab.sizes["user_idx"] == 51 and newest.vocab.vocabulary_table["version"] == 1
    assert newest.train_snapshot.version > first.train_snapshot.version

    # The bundle's vocabulary.parquet is the model's own version, not the latest.
    exported = export_vocabulary(vocabulary, tmp_path / "vocabulary.parquet",
                                 version=model_vocabulary_version({"vocabulary": first.vocab.vocabulary_table}, None))
    assert exported["version"] == 0 and exported["rows"] == 31


def test_a_missing_vocabulary_table_is_an_error_naming_it_and_the_fix(tmp_path):
    write_day(str(tmp_path / "lake" / "examples"), DAYS[0], 0, users=10)
    write_day(str(tmp_path / "lake" / "examples"), DAYS[1], 1, users=10)
    with pytest.raises(ConfigError) as error:
        plan_for(tmp_path, "out", (DAYS[0], DAYS[0]), DAYS[1])
    message = str(error.value)
    assert str(tmp_path / "lake" / "vocabulary") in message and "ple extract" in message
    assert "user_idx" in message
