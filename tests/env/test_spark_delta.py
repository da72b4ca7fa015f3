"""Spark + Delta Lake really work together: MERGE, history, time travel."""

import pytest
from delta.tables import DeltaTable


def test_delta_merge_and_time_travel(spark, tmp_path):
    path = str(tmp_path / "events")
    spark.createDataFrame([(1, "a"), (2, "b")], "id INT, value STRING").write.format("delta").save(path)

    updates = spark.createDataFrame([(2, "B"), (3, "c")], "id INT, value STRING")
    (DeltaTable.forPath(spark, path).alias("t")
        .merge(updates.alias("u"), "t.id = u.id")
        .whenMatchedUpdateAll()
        .whenNotMatchedInsertAll()
        .execute())

    latest = {r.id: r.value for r in spark.read.format("delta").load(path).collect()}
    assert latest == {1: "a", 2: "B", 3: "c"}

    history = DeltaTable.forPath(spark, path).history().select("version", "operation").collect()
    assert sorted((r.version, r.operation) for r in history) == [(0, "WRITE"), (1, "MERGE")]

    version_0 = {r.id: r.value for r in spark.read.format("delta").option("versionAsOf", 0).load(path).collect()}
    assert version_0 == {1: "a", 2: "b"}, "time travel must return the rows before the MERGE"


@pytest.mark.slow
def test_spark_submit_without_delta_jars_fails_with_the_fix(tmp_path, venv_bin, subprocess_env):
    """Under spark-submit the driver JVM starts before our code: missing jars must
    give the command-line fix, not Py4J's "'JavaPackage' object is not callable"."""
    import subprocess

    app = tmp_path / "app.py"
    app.write_text("from ple_runtime.spark import get_spark\nget_spark('no-jars')\n")
    result = subprocess.run([str(venv_bin / "spark-submit"), "--master", "local[1]", str(app)],
                            capture_output=True, text=True, timeout=300, env=subprocess_env)
    output = result.stdout + result.stderr  # spark-submit sends Python's stderr to stdout
    assert result.returncode != 0
    assert "SparkSetupError" in output
    assert "--packages io.delta:delta-spark_2.12:3.3.2" in output


@pytest.mark.slow
def test_spark_submit_options_win_over_local_defaults(tmp_path, venv_bin, subprocess_env):
    """--master and --conf given to spark-submit are kept; only missing settings get defaults."""
    import subprocess

    from ple_runtime.spark import delta_jars

    app = tmp_path / "app.py"
    app.write_text(
        "from ple_runtime.spark import get_spark\n"
        "spark = get_spark('submitted')\n"
        "conf = spark.sparkContext.getConf()\n"
        "print('MASTER', conf.get('spark.master'), 'PARTITIONS', conf.get('spark.sql.shuffle.partitions'),\n"
        "      'TZ', conf.get('spark.sql.session.timeZone'))\n"
        "spark.range(3).write.format('delta').save(%r)\n" % str(tmp_path / "t")
    )
    result = subprocess.run(
        [str(venv_bin / "spark-submit"), "--master", "local[1]", "--conf", "spark.sql.shuffle.partitions=3",
         "--jars", ",".join(delta_jars()), str(app)],
        capture_output=True, text=True, timeout=300, env=subprocess_env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "MASTER local[1] PARTITIONS 3 TZ UTC" in result.stdout
    assert (tmp_path / "t" / "_delta_log").is_dir()
