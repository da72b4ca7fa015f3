"""Raw logs and lake tables through Hadoop's FileSystem: a `file:` URI takes the same code
path as `s3a://` or `hdfs://` would (listing, markers, readability, table versions)."""

from __future__ import annotations

import pytest

from extraction.raw_logs import MARKER, RawLogs
from extraction.tables import LakeTables
from ple_runtime.errors import InputError
from ple_runtime.lake import Lake
from tests.extraction import scenario as sc


@pytest.fixture()
def raw_uri(tmp_path):
    sc.write_scenario(tmp_path / "raw")
    return tmp_path, f"file://{tmp_path}/raw"


def test_partitions_markers_and_lines_through_a_uri(spark, raw_uri):
    _, uri = raw_uri
    logs = RawLogs(spark, uri)
    plan = logs.plan([sc.DAY], require_next_day=True, allow_incomplete=False)[sc.DAY]
    assert [f.name for f in plan.day.files] == ["part-0.json.gz", "part-1.json"]  # the marker is not data
    assert plan.day.folder == f"{uri}/events/dt={sc.DAY}" and plan.day.complete
    assert plan.figures() == {"previous_partition_read": 1.0, "next_partition_read": 1.0,
                              "previous_partition_complete": 1.0, "next_partition_complete": 1.0}
    assert logs.read_lines([plan.day]).where(f"dt = '{sc.DAY}'").count() == sc.day_lines_read()
    assert logs.partition("2026-04-01") is None


def test_uri_checks_name_the_file_or_folder(spark, raw_uri):
    root, uri = raw_uri
    (root / "raw" / "events" / f"dt={sc.DAY}" / "part-7.json.gz").write_text("not gzip\n")
    with pytest.raises(InputError, match=r"part-7\.json\.gz: named \.gz but is not gzip data"):
        RawLogs(spark, uri).plan([sc.DAY], require_next_day=False, allow_incomplete=False)
    (root / "raw" / "events" / f"dt={sc.NEXT}" / MARKER).unlink()
    with pytest.raises(InputError, match=f"{uri}/events/dt={sc.NEXT} has no {MARKER}"):
        RawLogs(spark, uri).plan([sc.NEXT], require_next_day=False, allow_incomplete=False)
    with pytest.raises(InputError, match="does not exist"):
        RawLogs(spark, uri).plan(["2026-04-01"], require_next_day=False, allow_incomplete=False)


def test_table_versions_through_a_uri(spark, tmp_path):
    tables = LakeTables(spark, Lake(f"file://{tmp_path}"))
    path = tables.lake.data_quality
    assert path.startswith("file://") and tables.version(path) is None
    df = spark.createDataFrame([("2026-01-01", "lines_read", 1.0)], "dt string, metric string, value double")
    df.write.format("delta").partitionBy("dt").save(path)
    df.write.format("delta").mode("append").save(path)
    assert tables.version(path) == 1
    assert tables.extracted_days() == {"2026-01-01"}
