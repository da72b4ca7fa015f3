"""Bad inputs stop `ple extract` with a message naming the path, and nothing is written."""

from __future__ import annotations

import pytest
from pyspark.sql import types as T

from jobs import extract
from ple_runtime.config import ConfigError
from ple_runtime.errors import InputError
from ple_runtime.lake import Lake
from tests.extraction import scenario as sc


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
    final = [line for line in err.splitlines() if line.startswith("extract failed:")]
    assert final and f"dt={sc.DAY}/part-0.json.gz" in final[-1], err[-2000:]  # the file, in the final error
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


def test_day_without_its_completion_marker_is_refused(spark, data, capsys):
    folder = data / "raw" / "events" / f"dt={sc.DAY}"
    (folder / sc.MARKER).unlink()  # its writer has not finished
    assert extract.main(["--data-dir", str(data), "--date", sc.DAY]) == 1
    err = capsys.readouterr().err
    assert str(folder) in err and sc.MARKER in err and "--allow-incomplete" in err
    assert not (data / "lake").exists()
    # hand-made logs without markers: the flag reads the partition as it is
    assert extract.main(["--data-dir", str(data), "--date", sc.DAY, "--allow-incomplete"]) == 0
    assert spark.read.format("delta").load(Lake(str(data)).examples).count() == len(sc.EXPECTED_DAY_LABELS)


def test_incomplete_neighbour_is_read_flagged_and_warned_about(spark, data, capsys):
    (data / "raw" / "events" / f"dt={sc.NEXT}" / sc.MARKER).unlink()
    assert extract.main(["--data-dir", str(data), "--date", sc.DAY, "--require-next-day"]) == 1
    assert "--allow-incomplete" in capsys.readouterr().err  # require_next_day wants D+1 complete
    assert extract.main(["--data-dir", str(data), "--date", sc.DAY]) == 0
    assert f"dt={sc.NEXT} has no {sc.MARKER}" in capsys.readouterr().err
    dq = {r["metric"]: r["value"] for r in spark.read.format("delta").load(Lake(str(data)).data_quality).collect()}
    assert dq["next_partition_read"] == 1 and dq["next_partition_complete"] == 0
    assert dq["previous_partition_read"] == 1 and dq["previous_partition_complete"] == 1
    assert dq["engagement_attributed_from_next_partition"] == 1  # its lines were read


def test_a_session_time_zone_other_than_utc_is_refused(spark, data):
    """Days, hours and `...Z` times are UTC: a session in another zone would shift them silently."""
    spark.conf.set("spark.sql.session.timeZone", "Europe/Paris")
    try:
        with pytest.raises(InputError, match="spark.sql.session.timeZone is 'Europe/Paris'"):
            extract.run(extract.ExtractConfig(data_dir=str(data), date=sc.DAY), spark)
    finally:
        spark.conf.set("spark.sql.session.timeZone", "UTC")
    assert not (data / "lake").exists()
