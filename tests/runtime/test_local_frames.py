"""Small tables made in Python reach Spark as the JVM's local relations (no Python RDD, so no Python
workers), of exactly the schema asked for, with nulls, integers and timestamps intact."""

from __future__ import annotations

import datetime as dt

import pytest

from evaluation.backfill import metrics_schema
from feature_eng import schema as S
from ple_runtime.local_frames import ARROW, local_frame


def _plan(frame) -> str:
    return frame._jdf.queryExecution().analyzed().getClass().getSimpleName()


def _metrics_row(schema, task: str, auc: float | None, count: int | None) -> tuple:
    values = {"model_id": "m1", "dt": "2026-01-05", "task": task, "auc": auc, "count": count,
              "table_version": 2**53 + 1,  # not exact as a float: an integer column must stay integral
              "evaluated_at": dt.datetime(2026, 1, 6, 3, 4, 5, 123456, tzinfo=dt.timezone.utc)}
    return tuple(values.get(name) for name in schema.fieldNames())


def _table(kind: str):
    if kind == "backfill metrics":  # the schema is parsed by the JVM: made once the session is up
        schema = metrics_schema()
        return schema, [_metrics_row(schema, "play", 0.71, 1200), _metrics_row(schema, "share", None, None)]
    return S.DATA_QUALITY_SCHEMA, {"no rows": [], "data quality": [("2026-01-01", "lines_read", 12.0),
                                                                   ("2026-01-01", "examples", 7.0)]}[kind]


@pytest.mark.parametrize("kind", ["no rows", "data quality", "backfill metrics"])
def test_small_python_tables_are_local_relations_of_exactly_their_schema(spark, kind):
    """The extract's data-quality figures, its first day's empty vocabulary and history, `ple backfill`'s
    metrics rows: a LocalRelation, where `createDataFrame(list)` is a Python RDD whose readers start
    Python workers; the schema's nullability kept; the session's Arrow setting left as it was."""
    schema, rows = _table(kind)
    shared = spark.conf.get(ARROW, None)   # other tests' pandas conversions turn it on in the shared session
    spark.conf.set(ARROW, "false")
    try:
        frame = local_frame(spark, rows, schema)
        assert spark.conf.get(ARROW) == "false"   # the session's own setting, back
    finally:
        if shared is None:
            spark.conf.unset(ARROW)
        else:
            spark.conf.set(ARROW, shared)
    assert _plan(frame) == "LocalRelation"
    assert frame.schema == schema
    assert sorted(map(tuple, frame.collect()), key=repr) == sorted(_as_spark_reads(rows), key=repr)
    assert _plan(spark.createDataFrame(rows, schema)) != "LocalRelation"   # what the check tells apart


def _as_spark_reads(rows):
    """Spark returns timestamps as naive datetimes in the session's time zone (UTC in ple_runtime.spark)."""
    return [tuple(v.astimezone(dt.timezone.utc).replace(tzinfo=None) if isinstance(v, dt.datetime) else v
                  for v in row) for row in rows]
