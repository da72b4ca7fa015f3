"""Job configs: file < --set < flags, validated up front with messages that say what to fix."""

import datetime as dt

import pytest
from pydantic import Field

from ple_runtime.config import ConfigError, JobConfig, parse_job_config


class Section(JobConfig):
    rate: float = 0.1


class ExampleConfig(JobConfig):
    date: dt.date = Field(..., description="day to process")
    name: str = "default"
    workers: int = Field(2, ge=1)
    models: list[str] = ["ple"]
    verbose: bool = False
    section: Section = Section()


def parse(argv):
    return parse_job_config(ExampleConfig, argv, "example")


def test_flags_win_over_set_which_wins_over_the_file(tmp_path):
    config_file = tmp_path / "job.yaml"
    config_file.write_text("date: 2026-01-02\nname: from-file\nworkers: 3\nsection: {rate: 0.5}\n")
    config = parse(["--config", str(config_file), "--set", "workers=4", "--set", "section.rate=0.7",
                    "--name", "from-flag", "--models", "ple", "mmoe", "--verbose"])
    assert config.date == dt.date(2026, 1, 2)
    assert config.name == "from-flag"
    assert config.workers == 4
    assert config.section.rate == 0.7
    assert config.models == ["ple", "mmoe"]
    assert config.verbose is True


def test_flag_values_keep_their_field_type():
    # a numeric-looking value for a str field stays a string; a date parses as a date
    config = parse(["--date", "2026-03-04", "--name", "123"])
    assert config.name == "123" and config.date == dt.date(2026, 3, 4)


def test_missing_and_invalid_settings_fail_with_what_to_fix(capsys):
    with pytest.raises(ConfigError) as missing:
        parse([])
    assert missing.value.code == 2
    assert "date" in missing.value.message and "--date" in missing.value.message

    with pytest.raises(ConfigError) as invalid:
        parse(["--date", "2026-01-01", "--workers", "0"])
    assert "workers" in invalid.value.message and "[from --workers]" in invalid.value.message
    assert "config error" in capsys.readouterr().err


def test_unknown_keys_in_a_file_are_errors_not_silently_ignored(tmp_path):
    config_file = tmp_path / "typo.yaml"
    config_file.write_text("date: 2026-01-01\nworkres: 3\n")
    with pytest.raises(ConfigError) as error:
        parse(["--config", str(config_file)])
    assert "workres" in error.value.message and str(config_file) in error.value.message


def test_bad_files_and_bad_set_syntax_are_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        parse(["--config", str(tmp_path / "nope.yaml")])
    not_a_mapping = tmp_path / "list.yaml"
    not_a_mapping.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        parse(["--config", str(not_a_mapping)])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse(["--date", "2026-01-01", "--set", "workers"])
