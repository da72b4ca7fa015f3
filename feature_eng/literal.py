"""A few rows given in Python (days, priors) as DataFrames planned by the JVM alone: a literal array
of structs, exploded (`literal_frame`), where `spark.createDataFrame(list)` would be a Python RDD whose
readers start Python workers. Hundreds of rows: `ple_runtime.local_frames` (Arrow).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import reduce

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ple_runtime.local_frames import empty_frame


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
