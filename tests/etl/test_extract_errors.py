"""Bad inputs stop `ple extract` with a message naming the path, and nothing is written."""

from __future__ import annotations

import pytest
from pyspark.sql import types as T

from jobs import extract
from ple_runtime.config import ConfigError
from ple_runtime.lake import Lake
from tests.etl import scenario as sc


@pytest.fixture()
def data(tmp_path):
    sc.write_scenario(tmp_path / "raw")
    return tmp_path


def test_missing_day_fails_clearly(data, capsys):
    assert extract.main(["--data-dir", str(data), "--date", "2026-04-01"]) == 1
    err = capsys.readouterr().err
    assert "dt=2026-04-01" in err and "does not exist" in err
    assert not (data / "lake").exists()


def test_corrupt_gzip_names_the_file(data, capsys):
    bad = data / "raw" / "events" / f"dt={sc.DAY}" / "part-0.json.gz"
    bad.write_bytes(bad.read_bytes()[:30])  # truncated gzip stream
    assert extract.main(["--data-dir", str(data), "--date", sc.DAY]) == 1
    err = capsys.readouterr().err
    assert f"dt={sc.DAY}" in err
    assert not (data / "lake").exists()


def test_not_gzip_named_gz(data, capsys):
    (data / "raw" / "events" / f"dt={sc.DAY}" / "part-5.json.gz").write_text('{"a": 1}\n')
    assert extract.main(["--data-dir", str(data), "--date", sc.DAY]) == 1
    assert "part-5.json.gz" in capsys.readouterr().err


def test_existing_table_with_another_schema_is_refused(spark, data, capsys):
    lake = Lake(str(data))
    schema = T.StructType([T.StructField("impression_id", T.StringType()), T.StructField("dt", T.StringType())])
    spark.createDataFrame([("x", sc.PREV)], schema).write.format("delta").partitionBy("dt").save(lake.examples)
    assert extract.main(["--data-dir", str(data), "--date", sc.DAY]) == 1
    err = capsys.readouterr().err
    assert lake.examples in err and "missing columns" in err
    assert spark.read.format("delta").load(lake.examples).count() == 1  # untouched
    assert not (data / "lake" / "quarantine").exists()


def test_config_needs_a_date(data):
    with pytest.raises(ConfigError):
        extract.main(["--data-dir", str(data)])
    with pytest.raises(ConfigError):
        extract.main(["--data-dir", str(data), "--date", "2026-02-30"])
