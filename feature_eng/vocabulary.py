"""Stable categorical ids: (vocabulary, value) -> id, kept in the vocabulary Delta table.

An id, once given, never changes. New values of a day get new ids after the largest
id of their vocabulary, in sorted order of the value (deterministic); days extracted
together number their values day by day, in order, as if extracted one at a time. Id 0 is
reserved for out-of-vocabulary and null. A model trained with vocab sizes taken
at training time keeps working when the vocabulary grows: ids it has never seen
are mapped to 0 by the model (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from feature_eng import schema as S


def vocabulary_values(df: DataFrame) -> DataFrame:
    """Distinct non-null (vocabulary, value) pairs of the source columns in `df`, with the first
    day (`day`, S.EXTRACT_DAY) each is seen on as `first_seen_dt` (one scan of `df`: each row
    becomes one row per vocabulary, then aggregates)."""
    pairs = F.inline(F.array(*(
        F.struct(F.lit(name).alias("vocabulary"), F.col(source).cast("string").alias("value"))
        for name, (source, _) in S.VOCABULARIES.items())))
    # min() of a date, not of the day string: a string buffer makes Spark sort (86 s of CPU on a
    # 5M-event day). The cast runs for every pair: a distinct (vocabulary, value, day) first would
    # be dropped by Catalyst (RemoveRedundantAggregates, as min() ignores repeats), and an integer
    # day (translate, cast) or a distinct kept alive by a count were both slower (docs/DATA.md)
    return (df.select(S.EXTRACT_DAY, pairs).where(F.col("value").isNotNull())
            .groupBy("vocabulary", "value").agg(F.min(F.col(S.EXTRACT_DAY).cast("date")).cast("string")
                                                .alias("first_seen_dt")))


def new_vocabulary_entries(existing: DataFrame, values: DataFrame) -> DataFrame:
    """Rows to append: `values` (vocabulary_values) not in `existing`, with ids continuing each
    vocabulary in order of (first_seen_dt, value): exactly the ids that extracting the days one
    at a time, in order, would give."""
    max_ids = existing.groupBy("vocabulary").agg(F.max("id").alias("_max_id"))
    unseen = values.join(existing.select("vocabulary", "value"), ["vocabulary", "value"], "left_anti")
    order = Window.partitionBy("vocabulary").orderBy("first_seen_dt", "value")
    return (
        unseen.join(max_ids, "vocabulary", "left")
        .select(
            "vocabulary", "value",
            (F.coalesce(F.col("_max_id"), F.lit(S.OOV_ID)) + F.row_number().over(order)).cast("int").alias("id"),
            "first_seen_dt",
        )
    )


def apply_vocabulary(df: DataFrame, vocabulary: DataFrame) -> DataFrame:
    """Add the id column of every vocabulary (S.VOCABULARIES) to df; unknown/null -> 0.

    The whole vocabulary is broadcast ONCE: every join below has the very same build side
    (one key column `vocabulary NUL value`, no filter or alias on that side: either would
    make the eight build sides differ), so Spark reuses one broadcast for all of them and
    `df` is not shuffled. Columns are renamed after each join, on the joined side."""
    table = F.broadcast(vocabulary.select(F.concat_ws("\u0000", "vocabulary", "value").alias("_key"), "id"))
    for name, (source, id_column) in S.VOCABULARIES.items():
        key = F.concat(F.lit(name + "\u0000"), F.col(source).cast("string"))  # null source: no match
        df = (df.join(table, key == F.col("_key"), "left")
              .drop("_key")
              .withColumn(id_column, F.coalesce(F.col("id"), F.lit(S.OOV_ID)).cast("int"))
              .drop("id"))
    return df


def vocabulary_sizes(vocabulary: DataFrame) -> dict[str, int]:
    """Embedding table size per vocabulary: max id + 1 (1 when empty: only the OOV id).

    The train job calls this on the vocabulary table (read at the version it trains
    with) to fill `vocab_size: null` entries of conf/video_spec.yaml.
    """
    rows = vocabulary.groupBy("vocabulary").agg(F.max("id").alias("max_id")).collect()  # one row per vocabulary
    sizes = {name: 1 for name in S.VOCABULARIES}
    sizes.update({row["vocabulary"]: int(row["max_id"]) + 1 for row in rows})
    return sizes
