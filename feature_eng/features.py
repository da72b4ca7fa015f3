"""Features of an impression: dimensions, context, and point-in-time history statistics."""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from feature_eng import schema as S
from feature_eng.validation import parse_timestamp

# Global rates used as the prior when no history exists at all (the first day).
DEFAULT_PRIORS = {"play_rate": 0.3, "watch_ratio": 0.5, "share_rate": 0.03, "comment_rate": 0.01}


def _blank_to_null(name: str):
    return F.when(F.trim(F.col(f"_j.{name}")) == "", None).otherwise(F.col(f"_j.{name}"))


def _one_per_key(df: DataFrame, key: str) -> DataFrame:
    # a snapshot listing a key twice: keep the lexicographically first line (deterministic)
    first = Window.partitionBy(key).orderBy("value")
    return df.withColumn("_n", F.row_number().over(first)).where("_n = 1").drop("_n", "value")


def parse_items(text: DataFrame) -> DataFrame:
    """Item snapshot lines -> item_id, author_id, category, duration_ms, upload_ts.
    Items without a positive integer duration are dropped: their impressions are
    quarantined as unknown_item (a watch ratio needs a duration)."""
    parsed = text.withColumn("_j", F.from_json("value", S.RAW_ITEM_STRING_SCHEMA))
    duration = _blank_to_null("duration_ms")
    items = parsed.select(
        "value",
        _blank_to_null("item_id").alias("item_id"),
        _blank_to_null("author_id").alias("author_id"),
        _blank_to_null("category").alias("category"),
        F.when(duration.rlike(r"^[0-9]{1,15}$"), duration.cast("long")).alias("duration_ms"),
        parse_timestamp(_blank_to_null("upload_ts")).alias("upload_ts"),
    ).where(F.col("item_id").isNotNull() & (F.col("duration_ms") > 0))
    return _one_per_key(items, "item_id")


def parse_users(text: DataFrame) -> DataFrame:
    """User snapshot lines -> user_id, age_bucket, gender, region, signup_ts."""
    parsed = text.withColumn("_j", F.from_json("value", S.RAW_USER_STRING_SCHEMA))
    users = parsed.select(
        "value",
        *(_blank_to_null(n).alias(n) for n in ("user_id", "age_bucket", "gender", "region")),
        parse_timestamp(_blank_to_null("signup_ts")).alias("signup_ts"),
    ).where(F.col("user_id").isNotNull())
    return _one_per_key(users, "user_id")


def context_features(df: DataFrame) -> DataFrame:
    """hour, day_of_week, position_bucket, duration_bucket, item_age_log, duration_log."""
    seconds = F.col("duration_ms") / 1000.0
    duration_bucket = F.when(F.col("duration_ms").isNull(), 0)
    for bucket, bound in enumerate(S.DURATION_BUCKET_BOUNDS_S, start=1):
        duration_bucket = duration_bucket.when(seconds < bound, bucket)
    duration_bucket = duration_bucket.otherwise(S.DURATION_BUCKETS - 1)
    last_position = S.POSITION_BUCKETS - 2  # positions 0..last_position-1 get their own bucket
    age_hours = (F.col("impression_ts").cast("long") - F.col("upload_ts").cast("long")) / 3600.0
    return df.select(
        "*",
        F.hour("impression_ts").alias("hour"),
        ((F.dayofweek("impression_ts") + 5) % 7).alias("day_of_week"),  # Spark: 1 = Sunday
        F.when(F.col("position").isNull(), 0)
        .when(F.col("position") >= last_position, S.POSITION_BUCKETS - 1)
        .otherwise(F.col("position") + 1).alias("position_bucket"),
        duration_bucket.alias("duration_bucket"),
        F.coalesce(F.log1p(F.greatest(age_hours, F.lit(0.0))), F.lit(0.0)).alias("item_age_log"),
        F.coalesce(F.log1p(seconds), F.lit(0.0)).alias("duration_log"),
    )


@dataclass(frozen=True)
class HistorySummary:
    priors: dict[str, float]   # global rates of the window (DEFAULT_PRIORS when empty)
    days: int                  # distinct days in the window
    keys: dict[str, int]       # approximate distinct user_idx / item_idx (how big the per-key statistics are)


def history_summary(history: DataFrame) -> HistorySummary:
    """Priors, days and key counts of the history window in one small aggregate."""
    row = history.agg(
        F.count(F.lit(1)).alias("n"),
        F.countDistinct("dt").alias("days"),
        F.avg("play").alias("play_rate"),
        F.avg("watch_ratio").alias("watch_ratio"),  # avg ignores nulls: over played rows only
        F.avg("share").alias("share_rate"),
        F.avg("comment").alias("comment_rate"),
        F.approx_count_distinct("user_idx").alias("user_idx"),
        F.approx_count_distinct("item_idx").alias("item_idx"),
    ).collect()[0]
    priors = {name: float(row[name]) if row["n"] and row[name] is not None else default
              for name, default in DEFAULT_PRIORS.items()}
    return HistorySummary(priors, int(row["days"] or 0), {k: int(row[k] or 0) for k in ("user_idx", "item_idx")})


def history_stats(history: DataFrame, key: str, prefix: str, priors: dict[str, float],
                  smoothing_weight: float) -> DataFrame:
    """Per-key statistics of the history window, smoothed toward the global priors:
    rate = (successes + w * prior) / (trials + w). Keys absent from the history get
    their values from `fill_history_stats` (the prior itself)."""
    w = float(smoothing_weight)
    agg = history.groupBy(key).agg(
        F.count(F.lit(1)).alias("_n"),
        F.sum("play").alias("_plays"),
        F.sum(F.coalesce(F.col("watch_ratio"), F.lit(0.0))).alias("_watched"),
        F.sum("share").alias("_shares"),
        F.sum("comment").alias("_comments"),
    )
    return agg.select(
        key,
        F.log1p("_n").cast("float").alias(f"{prefix}_hist_impressions_log"),
        ((F.col("_plays") + w * priors["play_rate"]) / (F.col("_n") + w)).cast("float")
        .alias(f"{prefix}_hist_play_rate"),
        ((F.col("_watched") + w * priors["watch_ratio"]) / (F.col("_plays") + w)).cast("float")
        .alias(f"{prefix}_hist_watch_ratio"),
        ((F.col("_shares") + w * priors["share_rate"]) / (F.col("_n") + w)).cast("float")
        .alias(f"{prefix}_hist_share_rate"),
        ((F.col("_comments") + w * priors["comment_rate"]) / (F.col("_n") + w)).cast("float")
        .alias(f"{prefix}_hist_comment_rate"),
    )


def fill_history_stats(df: DataFrame, prefix: str, priors: dict[str, float]) -> DataFrame:
    """Cold keys (no history): zero impressions, rates equal to the prior."""
    fills = {f"{prefix}_hist_impressions_log": 0.0,
             **{f"{prefix}_hist_{name}": value for name, value in priors.items()}}
    return df.select(*(
        F.coalesce(F.col(c), F.lit(fills[c])).cast("float").alias(c) if c in fills else F.col(c)
        for c in df.columns
    ))
