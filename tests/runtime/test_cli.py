"""The `ple` command line as users meet it: every subcommand's --help, and relative
paths resolved once, at the edge."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.cli import SUBCOMMANDS, main


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_every_subcommand_help_exits_0(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"ple {command}" in out and "usage" in out


def test_a_percent_sign_in_a_description_does_not_break_help():
    from pydantic import Field

    from ple_runtime.config import JobConfig, build_parser

    class Odd(JobConfig):
        share: float = Field(0.5, description="50% of the rows (%(prog)s is not a format either)")

    text = build_parser(Odd, "odd", "").format_help()
    assert "50% of the rows" in text and "%(prog)s is not a format" in text


def test_local_paths_become_absolute_and_uris_stay(tmp_path, monkeypatch):
    from ple_runtime.config import absolute_location

    monkeypatch.chdir(tmp_path)
    assert absolute_location("data") == str(tmp_path / "data")
    assert absolute_location("~/x") == str(Path.home() / "x")
    assert absolute_location("file:///tmp/a%3Db") == "/tmp/a=b"
    assert absolute_location("s3a://bucket/lake") == "s3a://bucket/lake"
    assert absolute_location("hdfs://nn:8020/lake") == "hdfs://nn:8020/lake"


def test_job_configs_resolve_relative_paths_and_defaults(tmp_path, monkeypatch):
    from evaluation.config import EvaluateConfig
    from extraction.extract import ExtractConfig
    from ple_runtime.config import parse_job_config

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PLE_DATA_DIR", raising=False)
    extract = parse_job_config(ExtractConfig, ["--date", "2026-01-01"], "ple extract")
    assert extract.data_dir == str(tmp_path / "ple_data")  # the default, resolved too
    evaluate = parse_job_config(EvaluateConfig, [
        "--model", "runs/ple", "--date", "2026-01-02", "--table", "lake/examples", "--out", "rep",
        "--compare", "@production", "models:/ple_video/3", "runs/mmoe"], "ple evaluate")
    assert evaluate.model == str(tmp_path / "runs" / "ple")
    assert evaluate.table == str(tmp_path / "lake" / "examples")
    assert evaluate.out == str(tmp_path / "rep")
    assert evaluate.compare == ["@production", "models:/ple_video/3", str(tmp_path / "runs" / "mmoe")]
