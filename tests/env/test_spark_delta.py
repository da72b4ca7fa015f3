"""Spark + Delta Lake really work together: MERGE, history, time travel."""

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
