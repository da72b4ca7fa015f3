"""The one Delta log reader (ple_runtime.delta_log) against Spark + Delta 3.3.2 itself, on a
local table and on a table in the cluster's S3 server (s3a:// for Spark, the same URI for
the reader): file lists, partition values and record counts at every version (across
checkpoints, a replaceWhere, an OPTIMIZE and a DELETE), the partitions each commit changed,
and time travel by timestamp."""

from __future__ import annotations

import datetime as dt
import os
import uuid
from urllib.parse import unquote

import pytest
from pyspark.sql import functions as F

from ple_runtime import arrow_storage, delta_log

D1, D2, D3 = "2026-02-01", "2026-02-02", "2026-02-03"


def _rows(spark, day: str, first_id: int, n: int):
    # Two tasks: each partition value gets up to two files, so OPTIMIZE has work to do.
    return spark.range(first_id, first_id + n, numPartitions=2).selectExpr("id", f"'{day}' AS dt")


def _build_history(spark, table: str) -> list[set[str]]:
    """Five commits (checkpoints after versions 2 and 4); returns the partitions each changed."""
    (_rows(spark, D1, 0, 40).unionByName(_rows(spark, D2, 100, 30))
     .write.format("delta").option("delta.checkpointInterval", "2").partitionBy("dt").save(table))
    _rows(spark, D3, 200, 20).write.format("delta").mode("append").save(table)
    (_rows(spark, D1, 300, 10).write.format("delta").mode("overwrite")
     .option("replaceWhere", f"dt = '{D1}'").save(table))
    spark.sql(f"OPTIMIZE delta.`{table}`").collect()
    spark.sql(f"DELETE FROM delta.`{table}` WHERE dt = '{D2}'").collect()
    return [{D1, D2}, {D3}, {D1}, set(), {D2}]


@pytest.fixture(scope="module", params=["local", pytest.param("s3", marks=pytest.mark.slow)])
def history(request, tmp_path_factory):
    """(SparkSession, table, partitions each commit changed): one history per module on
    local disk, or on the cluster's object storage (slow: it needs the cluster)."""
    if request.param == "local":
        spark, table = request.getfixturevalue("spark"), str(tmp_path_factory.mktemp("delta") / "t")
    else:
        spark = request.getfixturevalue("s3_spark")
        table = request.getfixturevalue("cluster").uri("tests", uuid.uuid4().hex[:12], "t")
    return spark, table, _build_history(spark, table)


def _spark_files(spark, table: str, where_sql: str | None = None, **options) -> list[str]:
    reader = spark.read.format("delta")
    for key, value in options.items():
        reader = reader.option(key, value)
    frame = reader.load(table)
    if where_sql:
        frame = frame.where(where_sql)
    # Spark names local files file:/...; the reader gives the plain absolute path.
    return sorted(f.removeprefix("file:") if arrow_storage.is_local(table) else f for f in frame.inputFiles())


def _spark_rows_per_file(spark, table: str, version: int) -> tuple[dict[str, int], dict[str, str]]:
    """The rows Spark reads from each file of a version, and each file's `dt`: one Spark job
    (a table's files all hold rows, so these are its files). A file named as the reader names it."""
    frame = spark.read.format("delta").option("versionAsOf", version).load(table)
    rows = frame.groupBy(F.input_file_name().alias("file"), "dt").count().collect()

    def plain(uri: str) -> str:  # Spark: file:///tmp/..., URL-escaped; the reader: /tmp/...
        uri = unquote(uri)
        return uri.removeprefix("file://").removeprefix("file:") if arrow_storage.is_local(table) else uri

    return {plain(r["file"]): r["count"] for r in rows}, {plain(r["file"]): r["dt"] for r in rows}


def test_reader_matches_spark_at_every_version(history):
    spark, table, changed = history
    latest = len(changed) - 1

    assert delta_log.is_delta_table(table)
    assert delta_log.latest_version(table) == latest
    assert delta_log.checkpoint_versions(table) == [2, 4]
    file_sets = []
    for version in range(latest + 1):
        ours = delta_log.snapshot(table, version)
        assert ours.version == version
        rows_per_file, partition_of_file = _spark_rows_per_file(spark, table, version)
        assert [f.path for f in ours.files] == sorted(rows_per_file), version
        assert {f.path: f.num_records for f in ours.files} == rows_per_file, version
        assert {f.path: f.partition_values["dt"] for f in ours.files} == partition_of_file, version
        assert all(f.size and f.size > 0 for f in ours.files)
        file_sets.append(frozenset(f.path for f in ours.files))
    assert len(set(file_sets)) == len(file_sets), "every version of the history must differ in its files"

    # partition filters, at a version before the checkpoint and at the latest
    for version in (1, latest):
        window = delta_log.snapshot(table, version, {"dt": {"min": D2, "max": D3}})
        assert [f.path for f in window.files] == _spark_files(
            spark, table, f"dt >= '{D2}' AND dt <= '{D3}'", versionAsOf=version)
        chosen = delta_log.snapshot(table, version, {"dt": [D1, D3]})
        assert [f.path for f in chosen.files] == _spark_files(spark, table, f"dt IN ('{D1}', '{D3}')",
                                                              versionAsOf=version)
    assert delta_log.snapshot(table, 1, {"dt": D3}).num_records == 20
    assert delta_log.snapshot(table, latest).partition_columns == ("dt",)
    assert [f["name"] for f in delta_log.snapshot(table).schema["fields"]] == ["id", "dt"]

    commits = delta_log.commits(table)
    assert [c.version for c in commits] == list(range(latest + 1))
    assert [set(c.partitions_changed) for c in commits] == changed
    assert [c.operation for c in commits] == ["WRITE", "WRITE", "WRITE", "OPTIMIZE", "DELETE"]

    with pytest.raises(delta_log.DeltaLogError, match=f"versions up to {latest}; version {latest + 3} does not"):
        delta_log.snapshot(table, latest + 3)
    with pytest.raises(delta_log.DeltaLogError, match="partitioned by \\['dt'\\]"):
        delta_log.snapshot(table, None, {"day": D1})


def _spark_history_ms(spark, table: str) -> dict[int, int]:
    rows = spark.sql(f"DESCRIBE HISTORY delta.`{table}`").selectExpr("version", "unix_millis(timestamp) AS ms")
    return {r["version"]: r["ms"] for r in rows.collect()}


def _spark_version_files(spark, table: str, moment_ms: int) -> list[str] | str:
    stamp = dt.datetime.fromtimestamp(moment_ms / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    try:
        return _spark_files(spark, table, timestampAsOf=stamp)
    except Exception as err:  # noqa: BLE001 - Delta's "before the earliest version" error
        return f"refused: {str(err).splitlines()[0][:120]}"


def _our_version_files(table: str, moment_ms: int) -> list[str] | str:
    moment = dt.datetime.fromtimestamp(moment_ms / 1000, dt.timezone.utc)
    try:
        return [f.path for f in delta_log.snapshot(table, delta_log.version_at(table, moment)).files]
    except delta_log.DeltaLogError as err:
        return f"refused: {err}"


def test_time_travel_by_timestamp_agrees_with_spark(history):
    spark, table, _ = history
    if arrow_storage.is_local(table):
        # Equal commit-file times, as S3's one-second modification times often give:
        # Delta makes them increasing (v1 at T, v2 at T+1 ms, ...); so must the reader.
        log = os.path.join(table, "_delta_log")
        tie = int(os.stat(os.path.join(log, f"{1:020d}.json")).st_mtime)
        for version in (1, 2, 3):
            os.utime(os.path.join(log, f"{version:020d}.json"), (tie, tie))
    commit_ms = _spark_history_ms(spark, table)
    assert {c.version: c.timestamp_ms for c in delta_log.commits(table)} == commit_ms

    latest = max(commit_ms)
    # Each commit's boundary: 1 ms before it and at it (1 ms after resolves as "at it", or is the next
    # commit's own time when Delta made tied times increasing). Spark refuses a time after the last
    # commit (the reader gives the latest, checked below). Which version a time resolves to depends
    # on the commit times only, so on S3, once its times equal Spark's (above), three moments suffice.
    moments = sorted({m for ms in commit_ms.values() for m in (ms - 1, ms) if m <= commit_ms[latest]})
    if not arrow_storage.is_local(table):
        moments = [moments[0], moments[1], moments[-1]]
    for moment in moments:
        spark_answer = _spark_version_files(spark, table, moment)
        ours = _our_version_files(table, moment)
        if isinstance(spark_answer, str):
            assert isinstance(ours, str) and "before the oldest commit" in ours, (moment, spark_answer)
        else:
            assert ours == spark_answer, (moment, commit_ms)
    after = dt.datetime.fromtimestamp(commit_ms[latest] / 1000 + 3600, dt.timezone.utc)
    assert delta_log.version_at(table, after) == latest
    assert delta_log.version_at(table, after.replace(tzinfo=None).isoformat()) == latest  # naive = UTC


def test_refuses_what_plain_parquet_readers_would_get_wrong(spark, tmp_path):
    with_dv = str(tmp_path / "dv")
    (spark.range(0, 50, numPartitions=1).selectExpr("id", "'x' AS dt").write.format("delta")
     .option("delta.enableDeletionVectors", "true").save(with_dv))
    assert delta_log.snapshot(with_dv).num_records == 50  # the feature alone is fine
    spark.sql(f"DELETE FROM delta.`{with_dv}` WHERE id = 7").collect()
    with pytest.raises(delta_log.DeltaLogError, match="deletion vectors on 1 files"):
        delta_log.snapshot(with_dv)

    mapped = str(tmp_path / "cm")
    (spark.range(0, 5).write.format("delta").option("delta.columnMapping.mode", "name")
     .option("delta.minReaderVersion", "2").option("delta.minWriterVersion", "5").save(mapped))
    with pytest.raises(delta_log.DeltaLogError, match="column mapping mode 'name'"):
        delta_log.snapshot(mapped)


def test_paths_and_partition_values_with_characters_a_log_escapes(spark, tmp_path):
    table = str(tmp_path / "odd")
    odd = "a b:c/d%e"
    spark.range(0, 6).selectExpr("id", f"CASE WHEN id < 3 THEN '{odd}' ELSE '{D1}' END AS dt") \
        .write.format("delta").partitionBy("dt").save(table)
    ours = delta_log.snapshot(table, 0)
    assert [f.path for f in ours.files] == _spark_files(spark, table, versionAsOf=0)
    assert all(os.path.isfile(f.path) for f in ours.files)
    assert sorted(f.partition_values["dt"] for f in ours.files) == sorted([D1, odd])
    assert [f.path for f in delta_log.snapshot(table, 0, {"dt": odd}).files] == \
        _spark_files(spark, table, f"dt = '{odd}'", versionAsOf=0)


def test_not_a_table(tmp_path):
    (tmp_path / "plain").mkdir()
    assert not delta_log.is_delta_table(str(tmp_path / "plain"))
    with pytest.raises(delta_log.DeltaLogError, match="is not a Delta table"):
        delta_log.snapshot(str(tmp_path / "plain"))
    with pytest.raises(delta_log.DeltaLogError, match="is not a Delta table"):
        delta_log.commits(str(tmp_path / "plain"))


def test_locations_keep_their_scheme():
    assert arrow_storage.join("s3a://bucket/data", "lake", "examples") == "s3a://bucket/data/lake/examples"
    assert arrow_storage.join("/data", "lake") == "/data/lake"
    assert arrow_storage.to_uri("s3a://bucket/t") == "s3://bucket/t"
    assert arrow_storage.to_uri("file:///tmp/x/../t") == "/tmp/t"
    with pytest.raises(arrow_storage.StorageError, match="names no bucket"):
        arrow_storage.filesystem("s3a:///key")
