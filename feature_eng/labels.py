"""Impressions of a day and their multi-task labels (play, watch_ratio, share, comment)."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from feature_eng import schema as S
from feature_eng.validation import REPEATED_IMPRESSION_KEYS, key_set


def day_impressions(accepted: DataFrame, keys: DataFrame, broadcast_keys: bool = True) -> DataFrame:
    """Accepted impressions whose event time falls on the day they are read for (`day`, UTC),
    whichever partition delivered them; one row per (day, impression_id) (the smallest event_id
    wins a tie). `keys`: `validation.classification_keys` of the lines: only impression_ids of
    several impression lines (`repeated_impression_id`) are ranked; the rest are sorted by nobody."""
    repeated = key_set(keys, REPEATED_IMPRESSION_KEYS, "_repeated", broadcast_keys)
    impressions = accepted.where(
        (F.col("event_type") == "impression") & (F.to_date("ts") == F.col(S.EXTRACT_DAY).cast("date"))
    ).join(repeated, (F.col(S.EXTRACT_DAY) == F.col("_repeated_day"))
           & (F.col("impression_id") == F.col("_repeated")), "left")
    first = Window.partitionBy(S.EXTRACT_DAY, "impression_id").orderBy("event_id")
    ranked = (impressions.where(F.col("_repeated").isNotNull())
              .withColumn("_n", F.row_number().over(first)).where(F.col("_n") == 1))
    return ranked.drop("_n").unionByName(impressions.where(F.col("_repeated").isNull())).select(
        S.EXTRACT_DAY, "impression_id", "event_id", F.col("ts").alias("impression_ts"), "user_id",
        "item_id", "position", "device")


def attributed_engagement(impressions: DataFrame, accepted: DataFrame, window_hours: float) -> DataFrame:
    """Engagement events joined to `impressions` by (day, impression_id), with `in_window`: at or
    after the impression and at most `window_hours` later. One row per event: `accepted` holds
    one line per event_id and day (`classify` keeps the first copy), so nothing is counted twice."""
    engagement = (
        accepted.where(F.col("event_type").isin("play", "share", "comment"))
        .select(F.col(S.EXTRACT_DAY).alias("_day"), F.col("impression_id").alias("_iid"),
                F.col("event_type").alias("engagement_type"), F.col("ts").alias("engagement_ts"), "watch_ms",
                F.col("dt").alias("engagement_dt"))
    )
    # hashed, not sorted: a sort-merge join compares string ids that share their first bytes
    # ("im-20260105-...") in full, n log n times (with the labels join below: about a tenth of a
    # 5M-event day's CPU); the hash table holds one shuffle partition of the smaller side, and cannot spill:
    # extraction/extract.py gives large passes more partitions
    joined = impressions.select(S.EXTRACT_DAY, "impression_id", "impression_ts").join(
        engagement.hint("shuffle_hash"),
        (F.col(S.EXTRACT_DAY) == F.col("_day")) & (F.col("impression_id") == F.col("_iid")), "inner")
    window_end = F.col("impression_ts") + F.expr(f"INTERVAL {int(round(window_hours * 3600))} SECONDS")
    in_window = (F.col("engagement_ts") >= F.col("impression_ts")) & (F.col("engagement_ts") <= window_end)
    return joined.drop("_day", "_iid").withColumn("in_window", in_window)


# per impression: how its joined engagement was counted (summed into the data-quality figures)
ENGAGEMENT_COUNT_COLUMNS = {
    "engagement_attributed": "_engagement_attributed",
    "engagement_outside_window": "_engagement_outside_window",
    "engagement_attributed_from_next_partition": "_engagement_from_next_partition",
}


def attach_labels(impressions: DataFrame, engagement: DataFrame) -> DataFrame:
    """Add play, watch_ms, share, comment and watch_ratio to impressions (which carry
    duration_ms). watch_ratio = min(1, total watch_ms / duration_ms) when played, else
    null: its sample space is `play` (the spec's mask). Also adds the per-impression
    engagement counts of ENGAGEMENT_COUNT_COLUMNS (0 when none), for the data-quality figures."""
    in_window = F.col("in_window")
    counts = {
        "_engagement_attributed": in_window,
        "_engagement_outside_window": ~in_window,
        "_engagement_from_next_partition": in_window & (F.col("engagement_dt") > F.col(S.EXTRACT_DAY)),
    }
    per_impression = engagement.groupBy(F.col(S.EXTRACT_DAY).alias("_day"), F.col("impression_id").alias("_iid")).agg(
        F.max((in_window & (F.col("engagement_type") == "play")).cast("int")).alias("play"),
        F.sum(F.when(in_window & (F.col("engagement_type") == "play"), F.col("watch_ms")).otherwise(0))
        .alias("watch_ms"),
        F.max((in_window & (F.col("engagement_type") == "share")).cast("int")).alias("share"),
        F.max((in_window & (F.col("engagement_type") == "comment")).cast("int")).alias("comment"),
        *(F.sum(condition.cast("int")).alias(name) for name, condition in counts.items()),
    )
    labelled = impressions.join(  # hashed, as in attributed_engagement (the engaged impressions: the smaller side)
        per_impression.hint("shuffle_hash"),
        (F.col(S.EXTRACT_DAY) == F.col("_day")) & (F.col("impression_id") == F.col("_iid")), "left",
    ).drop("_day", "_iid")
    play = F.coalesce(F.col("play"), F.lit(0))
    return (
        labelled
        .withColumn("play", play)
        .withColumn("share", F.coalesce(F.col("share"), F.lit(0)))
        .withColumn("comment", F.coalesce(F.col("comment"), F.lit(0)))
        .withColumn("watch_ms", F.coalesce(F.col("watch_ms"), F.lit(0)).cast("long"))
        .withColumn("watch_ratio",
                    F.when(play == 1, F.least(F.lit(1.0), F.col("watch_ms") / F.col("duration_ms")))
                    .cast("float"))
        .fillna(0, subset=list(counts))
    )
