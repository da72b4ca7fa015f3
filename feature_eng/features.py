"""Features of an impression: dimensions, context, and point-in-time history statistics."""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.window import Window

from feature_eng import schema as S
from feature_eng.literal import literal_frame
from feature_eng.params import shift_day
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


# the examples columns the history statistics read
HISTORY_COLUMNS = ("user_idx", "item_idx", "play", "watch_ratio", "share", "comment", "dt")


@dataclass(frozen=True)
class HistorySummary:
    priors: dict[str, float]   # global rates of the window (DEFAULT_PRIORS when empty)
    days: int                  # days in the window that hold examples
    keys: dict[str, int]       # upper bound of distinct user_idx / item_idx (how big the per-key statistics are)


def history_windows(days: list[str], stats_window_days: int) -> list[tuple[str, str]]:
    """(dt, day) pairs: history day dt is in the statistics window of `day` (the
    `stats_window_days` days strictly before it: point-in-time by construction)."""
    return [(shift_day(day, -offset), day) for day in days for offset in range(1, stats_window_days + 1)]


def history_summaries(history: DataFrame, days: list[str], stats_window_days: int) -> dict[str, HistorySummary]:
    """Priors, days and key counts of each day's history window, from ONE small aggregate (one
    row per history day): a window's rates are its days' sums over its days' counts, exactly the
    averages over its rows."""
    rows = history.groupBy("dt").agg(
        F.count(F.lit(1)).alias("n"),
        F.sum(F.col("play").cast("double")).alias("plays"),
        F.sum(F.col("watch_ratio").cast("double")).alias("watched"),
        F.count("watch_ratio").alias("watched_n"),   # played rows: watch_ratio's sample space
        F.sum(F.col("share").cast("double")).alias("shares"),
        F.sum(F.col("comment").cast("double")).alias("comments"),
        F.approx_count_distinct("user_idx").alias("user_idx"),
        F.approx_count_distinct("item_idx").alias("item_idx"),
    ).collect()  # one row per history day
    by_day = {row["dt"]: row for row in rows}
    summaries = {}
    for day in days:
        window = [by_day[dt] for dt, _ in history_windows([day], stats_window_days) if dt in by_day]
        total = {name: sum(row[name] or 0 for row in window)
                 for name in ("n", "plays", "watched", "watched_n", "shares", "comments", "user_idx", "item_idx")}
        rates = {"play_rate": (total["plays"], total["n"]), "watch_ratio": (total["watched"], total["watched_n"]),
                 "share_rate": (total["shares"], total["n"]), "comment_rate": (total["comments"], total["n"])}
        priors = {name: float(part) / float(whole) if whole else DEFAULT_PRIORS[name]
                  for name, (part, whole) in rates.items()}
        summaries[day] = HistorySummary(priors, sum(1 for row in window if row["n"]),
                                        {key: int(total[key]) for key in ("user_idx", "item_idx")})
    return summaries


def _prior(name: str):
    return F.col(f"_prior_{name}")


# the days of a day's window that hold examples (HistorySummary.days), carried next to its priors
HISTORY_DAYS = "_history_days"


def priors_frame(spark, summaries: dict[str, HistorySummary]) -> DataFrame:
    """(day, _prior_<name>..., _history_days) rows: each day's priors and days of history present
    as columns, to join by day."""
    names = list(DEFAULT_PRIORS)
    rows = [(day, *(float(summary.priors[n]) for n in names), summary.days) for day, summary in summaries.items()]
    schema = T.StructType([T.StructField(S.EXTRACT_DAY, T.StringType()),
                           *(T.StructField(f"_prior_{n}", T.DoubleType()) for n in names),
                           T.StructField(HISTORY_DAYS, T.IntegerType())])
    return literal_frame(spark, rows, schema)


def history_stats(history: DataFrame, key: str, prefix: str, windows: DataFrame, priors: DataFrame,
                  smoothing_weight: float, stats_window_days: int) -> DataFrame:
    """Per (day, key) statistics of each day's history window, as functions of PER-DAY averages
    over the d days of the window that hold examples, so they mean the same whatever the lake's
    age (a 2-day-old lake's window holds 1 day, a full one `stats_window_days` = W):
    impressions / d, and rates smoothed toward the day's priors with w * d / W pseudo-impressions,
    rate = (successes + w d/W prior) / (trials + w d/W) = (successes/d + w/W prior) / (trials/d + w/W):
    a short window shrinks toward the prior as much as a full one (w at a full window).
    `windows`: the (dt, day) pairs of `history_windows`; `priors`: `priors_frame`. Each history
    day is aggregated once per key, then summed into the windows it belongs to. Keys absent from a window get their values from
    `fill_history_stats` (the prior itself)."""
    w = F.lit(float(smoothing_weight) / stats_window_days) * F.col(HISTORY_DAYS)
    daily = history.groupBy("dt", key).agg(
        F.count(F.lit(1)).alias("_n"),
        F.sum("play").alias("_plays"),
        F.sum(F.coalesce(F.col("watch_ratio"), F.lit(0.0))).alias("_watched"),
        F.sum("share").alias("_shares"),
        F.sum("comment").alias("_comments"),
    )
    agg = daily.join(F.broadcast(windows), "dt").groupBy(S.EXTRACT_DAY, key).agg(
        *(F.sum(c).alias(c) for c in ("_n", "_plays", "_watched", "_shares", "_comments")))
    return agg.join(F.broadcast(priors), S.EXTRACT_DAY).select(
        S.EXTRACT_DAY, key,
        # a key with history has >= 1 day present; the division is what makes days comparable
        F.log1p(F.col("_n") / F.col(HISTORY_DAYS)).cast("float").alias(f"{prefix}_hist_daily_impressions_log"),
        ((F.col("_plays") + w * _prior("play_rate")) / (F.col("_n") + w)).cast("float")
        .alias(f"{prefix}_hist_play_rate"),
        ((F.col("_watched") + w * _prior("watch_ratio")) / (F.col("_plays") + w)).cast("float")
        .alias(f"{prefix}_hist_watch_ratio"),
        ((F.col("_shares") + w * _prior("share_rate")) / (F.col("_n") + w)).cast("float")
        .alias(f"{prefix}_hist_share_rate"),
        ((F.col("_comments") + w * _prior("comment_rate")) / (F.col("_n") + w)).cast("float")
        .alias(f"{prefix}_hist_comment_rate"),
    )


def fill_history_stats(df: DataFrame, prefix: str) -> DataFrame:
    """Cold keys (no history): zero impressions, rates equal to the day's prior (`df` carries
    the `priors_frame` columns)."""
    fills = {f"{prefix}_hist_daily_impressions_log": F.lit(0.0),
             **{f"{prefix}_hist_{name}": _prior(name) for name in DEFAULT_PRIORS}}
    return df.select(*(
        F.coalesce(F.col(c), fills[c]).cast("float").alias(c) if c in fills else F.col(c)
        for c in df.columns
    ))
