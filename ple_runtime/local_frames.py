"""Small tables made in Python (a pass's data-quality figures, a backfill's metrics rows, an empty
first-day vocabulary) as local relations of the JVM.

`spark.createDataFrame(list)` makes a Python RDD: the job that reads it starts `pyspark.daemon`
and Python workers (~6.6 CPU-seconds an application on a 2-core machine, a few seconds of wall,
docs/measurements/test_suite.md), and executors then need Python. Sent as Arrow, or built empty in
the JVM, the same rows need neither. (450 rows as literal structs took ~9 s to plan, as Arrow 0.6 s.)
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

ARROW = "spark.sql.execution.arrow.pyspark.enabled"


def empty_frame(spark: SparkSession, schema: T.StructType) -> DataFrame:
    """No rows, exactly `schema` (nullability included), as a local relation of the JVM: pyspark's
    `createDataFrame([], schema)` makes a Python RDD even for no rows, and pyspark 3.5 has no public
    call for this (hence the session's JVM object, as pyspark itself uses it)."""
    jschema = spark._jsparkSession.parseDataType(schema.json())
    return DataFrame(spark._jsparkSession.createDataFrame(spark._jvm.java.util.ArrayList(), jschema), spark)


def local_frame(spark: SparkSession, rows: Sequence[Sequence], schema: T.StructType) -> DataFrame:
    """`rows` (tuples in `schema`'s column order; None for null) as a DataFrame of exactly `schema`,
    sent to the JVM as Arrow. The session's Arrow setting is on only while the rows are converted
    (createDataFrame converts them at once), so the caller's other pandas conversions keep their own."""
    import pandas as pd

    if not rows:
        return empty_frame(spark, schema)
    # object columns: pandas would make an integer column with a None float (exact only below 2**53)
    frame = pd.DataFrame.from_records(rows, columns=schema.fieldNames(), coerce_float=False).astype(object)
    configured = spark.conf.get(ARROW, None)
    spark.conf.set(ARROW, "true")
    try:
        return spark.createDataFrame(frame, schema)
    finally:
        if configured is None:
            spark.conf.unset(ARROW)
        else:
            spark.conf.set(ARROW, configured)
