"""Small tables given in Python (days, priors, figures) as DataFrames planned by the JVM alone.

`spark.createDataFrame(list)` makes a Python RDD: every job that reads it then starts Python
worker processes to scan a few rows (about a second a job on a 2-core machine, measured on the
extract; ~6.6 CPU-seconds for the workers a Spark application starts, docs/measurements/test_suite.md).
A few rows: a literal array of structs, exploded (`literal_frame`). Hundreds of rows (a pass's
data-quality figures): a local relation sent as Arrow (`local_frame`; 450 rows as literals took
~9 s to plan, as Arrow 0.6 s). Neither needs Python workers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import reduce

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

ARROW = "spark.sql.execution.arrow.pyspark.enabled"


def empty_frame(spark: SparkSession, schema: T.StructType) -> DataFrame:
    """No rows, exactly `schema` (nullability included), as a local relation of the JVM: pyspark's
    `createDataFrame([], schema)` makes a Python RDD even for no rows, and pyspark 3.5 has no public
    call for this (hence the session's JVM object, as pyspark itself uses it)."""
    jschema = spark._jsparkSession.parseDataType(schema.json())
    return DataFrame(spark._jsparkSession.createDataFrame(spark._jvm.java.util.ArrayList(), jschema), spark)


def local_frame(spark: SparkSession, rows: Sequence[Sequence], schema: T.StructType) -> DataFrame:
    """`rows` (tuples in `schema`'s column order) as a DataFrame of exactly `schema`, sent to the JVM
    as Arrow. The session's Arrow setting is on only while the rows are converted (createDataFrame
    converts them at once), so the caller's other pandas conversions keep their own setting."""
    import pandas as pd

    if not rows:
        return empty_frame(spark, schema)
    frame = pd.DataFrame.from_records(rows, columns=schema.fieldNames())
    configured = spark.conf.get(ARROW, None)
    spark.conf.set(ARROW, "true")
    try:
        return spark.createDataFrame(frame, schema)
    finally:
        if configured is None:
            spark.conf.unset(ARROW)
        else:
            spark.conf.set(ARROW, configured)


def literal_frame(spark: SparkSession, rows: Sequence[Sequence], schema: T.StructType) -> DataFrame:
    """`rows` (tuples in `schema`'s column order) as a DataFrame of exactly `schema`."""
    if not rows:
        return empty_frame(spark, schema)
    structs = [F.struct(*(F.lit(value).cast(field.dataType).alias(field.name) for value, field in zip(row, schema)))
               for row in rows]
    return spark.range(1).select(F.inline(F.array(*structs)))  # the structs' fields, typed by the casts


def string_pairs(spark: SparkSession, rows: Sequence[tuple[str, str]], first: str, second: str) -> DataFrame:
    """(first, second) string pairs, e.g. (dt, day)."""
    return literal_frame(spark, rows, T.StructType([T.StructField(first, T.StringType()),
                                                    T.StructField(second, T.StringType())]))


def explode_mapped(df: DataFrame, column: str, mapping: Mapping[str, Sequence[str]], alias: str) -> DataFrame:
    """`df`'s rows once for each value `mapping` gives their `column` (dropped when none), as
    `alias`: what an inner join with the (key, value) pairs gives, by a CASE of literal arrays per
    row instead of a hash lookup (the lines of a pass are expanded like this by every job that
    reads them: millions of rows)."""
    cases = [(F.col(column) == key, F.array(*(F.lit(value) for value in mapped))) for key, mapped in mapping.items()]
    if not cases:
        raise ValueError(f"no value of {column!r} is mapped")
    values = reduce(lambda chain, case: chain.when(*case), cases[1:], F.when(*cases[0]))
    return df.select("*", F.explode(values).alias(alias))
