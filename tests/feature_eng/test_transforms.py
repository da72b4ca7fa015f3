"""feature_eng transforms on small hand-made DataFrames: attribution windows and labels at
their boundaries, point-in-time history at its window's lower bound, item-side and
share/comment statistics. Every expected value is worked out by hand below."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from feature_eng import schema as S
from feature_eng.extract_pass import examples_from, labelled_impressions
from feature_eng.params import ExtractParams
from feature_eng.validation import classification_keys

DAY = "2026-03-10"
UTC = dt.timezone.utc

CLASSIFIED_SCHEMA = T.StructType([T.StructField(n, t) for n, t in (
    ("dt", T.StringType()), ("event_id", T.StringType()), ("event_type", T.StringType()),
    ("ts", T.TimestampType()), ("user_id", T.StringType()), ("item_id", T.StringType()),
    ("impression_id", T.StringType()), ("position", T.IntegerType()), ("device", T.StringType()),
    ("watch_ms", T.LongType()), ("status", T.StringType()))])
ITEMS_SCHEMA = T.StructType([T.StructField("item_id", T.StringType()), T.StructField("author_id", T.StringType()),
                             T.StructField("category", T.StringType()), T.StructField("duration_ms", T.LongType()),
                             T.StructField("upload_ts", T.TimestampType())])
USERS_SCHEMA = T.StructType([T.StructField(n, T.StringType()) for n in ("user_id", "age_bucket", "gender", "region")]
                            + [T.StructField("signup_ts", T.TimestampType())])
HISTORY_SCHEMA = T.StructType([T.StructField("user_idx", T.IntegerType()), T.StructField("item_idx", T.IntegerType()),
                               T.StructField("play", T.IntegerType()), T.StructField("watch_ratio", T.FloatType()),
                               T.StructField("share", T.IntegerType()), T.StructField("comment", T.IntegerType()),
                               T.StructField("dt", T.StringType())])


def ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def line(partition, event_id, event_type, at, impression_id, user="u1", item="v1", watch_ms=None, status="accepted"):
    position, device = (0, "ios") if event_type == "impression" else (None, None)
    return (partition, event_id, event_type, ts(at), user, item, impression_id, position, device, watch_ms, status)


def _read_for(lines, day):
    """Lines as the extract holds them: each with the day it is read for."""
    return lines.withColumn(S.EXTRACT_DAY, F.lit(day))


def _labelled(classified, items, users, params):
    """labelled_impressions with the classification keys of the lines (a quarantined line has a reason)."""
    keys = classification_keys(classified.withColumn(
        "reason", F.when(F.col("status") == "quarantined", F.lit("quarantined in this test"))))
    return labelled_impressions(classified, keys, items, users, params)


@pytest.fixture(scope="module")
def dims(spark):
    items = spark.createDataFrame([
        ("v1", "a1", "music", 60_000, ts("2026-03-01T00:00:00")),
        ("v2", "a2", "news", 10_000, ts("2026-03-01T00:00:00")),
        ("v3", "a1", "music", 20_000, ts("2026-03-01T00:00:00")),
    ], ITEMS_SCHEMA)
    users = spark.createDataFrame([("u1", "18-24", "f", "north", ts("2025-01-01T00:00:00")),
                                   ("u2", "25-34", "m", "south", ts("2025-01-01T00:00:00"))], USERS_SCHEMA)
    return items, users


# --- labels and attribution windows (6 h) ----------------------------------------------------------

LABEL_LINES = [
    # i1 at 10:00: a play exactly at the window end counts; a share 1 ms later and a comment
    # 1 s BEFORE the impression do not
    line(DAY, "e1", "impression", "2026-03-10T10:00:00", "i1"),
    line(DAY, "e2", "play", "2026-03-10T16:00:00", "i1", watch_ms=30_000),
    line(DAY, "e3", "share", "2026-03-10T16:00:00.001", "i1"),
    line(DAY, "e4", "comment", "2026-03-10T09:59:59", "i1"),
    # i2 at 23:00: a play at 01:00 the next day, delivered in the next partition, counts
    # (across midnight); 90 s of a 60 s video caps watch_ratio at 1
    line(DAY, "e5", "impression", "2026-03-10T23:00:00", "i2", user="u2"),
    line("2026-03-11", "e6", "play", "2026-03-11T01:00:00", "i2", user="u2", watch_ms=90_000),
    # i3: yesterday's impression delivered today: an example of yesterday, not of DAY
    line(DAY, "e7", "impression", "2026-03-09T23:30:00", "i3"),
    # i4: a comment at the very instant of the impression counts; a duplicate line and a
    # quarantined play do not
    line(DAY, "e8", "impression", "2026-03-10T12:00:00", "i4", item="v2"),
    line(DAY, "e9", "comment", "2026-03-10T12:00:00", "i4", item="v2"),
    line(DAY, "e9", "comment", "2026-03-10T12:00:00", "i4", item="v2", status="duplicate"),
    line(DAY, "e10", "play", "2026-03-10T12:01:00", "i4", item="v2", watch_ms=5_000, status="quarantined"),
]


@pytest.fixture(scope="module")
def labelled(spark, dims):
    items, users = dims
    classified = _read_for(spark.createDataFrame(LABEL_LINES, CLASSIFIED_SCHEMA), DAY)
    rows = _labelled(classified, items, users, ExtractParams(attribution_window_hours=6)).collect()
    return {r["impression_id"]: r.asDict() for r in rows}


def test_only_impressions_of_the_day_become_examples(labelled):
    assert set(labelled) == {"i1", "i2", "i4"}


def test_an_impression_delivered_twice_is_one_example_the_smallest_event_id_wins(spark, dims):
    items, users = dims
    classified = _read_for(spark.createDataFrame([
        line(DAY, "e31", "impression", "2026-03-10T10:00:00", "i9", item="v2"),
        line(DAY, "e30", "impression", "2026-03-10T10:00:01", "i9", item="v2"),
        line(DAY, "e32", "impression", "2026-03-10T10:00:00", "i10"),
    ], CLASSIFIED_SCHEMA), DAY)
    rows = _labelled(classified, items, users, ExtractParams()).collect()
    assert sorted((r["impression_id"], r["event_id"]) for r in rows) == [("i10", "e32"), ("i9", "e30")]


def test_attribution_window_boundaries(labelled):
    i1 = labelled["i1"]
    assert (i1["play"], i1["share"], i1["comment"], i1["watch_ms"]) == (1, 0, 0, 30_000)
    assert i1["watch_ratio"] == pytest.approx(0.5)
    assert (i1["_engagement_attributed"], i1["_engagement_outside_window"]) == (1, 2)


def test_engagement_across_midnight_counts_and_is_counted_as_next_partition(labelled):
    i2 = labelled["i2"]
    assert (i2["play"], i2["watch_ms"], i2["watch_ratio"]) == (1, 90_000, 1.0)
    assert i2["_engagement_from_next_partition"] == 1
    assert labelled["i1"]["_engagement_from_next_partition"] == 0


def test_engagement_at_the_impression_instant_counts_and_only_accepted_lines_do(labelled):
    i4 = labelled["i4"]
    assert (i4["play"], i4["share"], i4["comment"]) == (0, 0, 1)
    assert i4["watch_ratio"] is None and i4["watch_ms"] == 0  # the quarantined play is not attributed
    assert i4["_engagement_attributed"] == 1  # the duplicate comment is not counted twice


# --- point-in-time history: stats_window_days = 3 -> dt in [D-3, D-1] ----------------------------------

W = 20.0  # smoothing weight: pseudo-impressions at the prior
HISTORY = [  # (user_idx, item_idx, play, watch_ratio, share, comment, dt); u1 = 1, u2 = 2, v1 = 1, v2 = 2
    (1, 1, 1, 0.8, 1, 0, "2026-03-07"),    # D-3: the window's first day, inside
    (1, 1, 0, None, 0, 1, "2026-03-09"),   # D-1: inside
    (2, 2, 1, 0.2, 0, 0, "2026-03-08"),    # inside
    (2, 2, 0, None, 0, 0, "2026-03-08"),   # inside
    (1, 1, 1, 1.0, 1, 1, "2026-03-06"),    # D-4: just outside, ignored
    (1, 1, 1, 1.0, 1, 1, DAY),             # the day itself: ignored (no leak)
    (2, 2, 1, 1.0, 1, 1, "2026-03-11"),    # a later day: ignored
]
# inside: 4 rows, 2 played -> priors play 2/4, watch_ratio (0.8 + 0.2) / 2, share 1/4, comment 1/4
PRIORS = {"play_rate": 0.5, "watch_ratio": 0.5, "share_rate": 0.25, "comment_rate": 0.25}
# every day of the 3-day window holds examples: impressions are per day of those 3 days
# u1 (and v1): 2 impressions, 1 play (ratio 0.8), 1 share, 1 comment
U1 = {"daily_impressions_log": math.log1p(2 / 3), "play_rate": (1 + W * 0.5) / (2 + W),
      "watch_ratio": (0.8 + W * 0.5) / (1 + W), "share_rate": (1 + W * 0.25) / (2 + W),
      "comment_rate": (1 + W * 0.25) / (2 + W)}
# u2 (and v2): 2 impressions, 1 play (ratio 0.2), no share, no comment
U2 = {"daily_impressions_log": math.log1p(2 / 3), "play_rate": (1 + W * 0.5) / (2 + W),
      "watch_ratio": (0.2 + W * 0.5) / (1 + W), "share_rate": (0 + W * 0.25) / (2 + W),
      "comment_rate": (0 + W * 0.25) / (2 + W)}


@pytest.fixture(scope="module")
def examples(spark, dims):
    items, users = dims
    classified = _read_for(spark.createDataFrame([
        line(DAY, "d1", "impression", "2026-03-10T08:00:00", "j1", user="u1", item="v2"),
        line(DAY, "d2", "impression", "2026-03-10T09:00:00", "j2", user="u3", item="v3"),  # cold user and item
    ], CLASSIFIED_SCHEMA), DAY)
    params = ExtractParams(stats_window_days=3, smoothing_weight=W)
    day_rows = _labelled(classified, items, users, params)
    vocabulary = spark.createDataFrame(
        [("user_id", "u1", 1, "x"), ("user_id", "u2", 2, "x"), ("item_id", "v1", 1, "x"), ("item_id", "v2", 2, "x")],
        S.VOCABULARY_SCHEMA)
    history = spark.createDataFrame(HISTORY, HISTORY_SCHEMA)
    examples, summaries = examples_from(day_rows, vocabulary, history, [DAY], params)
    return {r["impression_id"]: r.asDict() for r in examples.collect()}, summaries[DAY]


def _stats(row, who):
    return {k: row[f"{who}_hist_{k}"] for k in U1}


def test_history_window_is_days_before_d_from_its_lower_bound(examples):
    rows, summary = examples
    assert ExtractParams(stats_window_days=3).history_range(DAY) == ("2026-03-07", "2026-03-09")
    assert summary.days == 3
    assert summary.priors == pytest.approx(PRIORS)
    j1 = rows["j1"]
    # u1's D-3 row counts, its D-4, D and later rows do not
    assert _stats(j1, "user") == pytest.approx(U1, rel=1e-5)


def test_item_side_statistics_come_from_the_item_history(examples):
    rows, _ = examples
    assert _stats(rows["j1"], "item") == pytest.approx(U2, rel=1e-5)  # v2 was seen in u2's rows


def test_share_and_comment_rates_are_smoothed_toward_the_priors(examples):
    rows, _ = examples
    j1 = rows["j1"]
    assert j1["user_hist_share_rate"] == pytest.approx(6 / 22, rel=1e-5)
    assert j1["user_hist_comment_rate"] == pytest.approx(6 / 22, rel=1e-5)
    assert j1["item_hist_share_rate"] == pytest.approx(5 / 22, rel=1e-5)
    assert j1["item_hist_comment_rate"] == pytest.approx(5 / 22, rel=1e-5)


def test_cold_user_and_item_get_exactly_the_priors(examples):
    rows, _ = examples
    j2 = rows["j2"]
    assert (j2["user_idx"], j2["item_idx"]) == (S.OOV_ID, S.OOV_ID)
    for who in ("user", "item"):
        assert j2[f"{who}_hist_daily_impressions_log"] == 0.0
        for rate, prior in PRIORS.items():
            assert j2[f"{who}_hist_{rate}"] == pytest.approx(prior, rel=1e-6), (who, rate)


def test_timestamps_in_every_accepted_form_are_the_same_instant(spark):
    from feature_eng.validation import parse_timestamp

    noon = ts("2026-03-10T12:00:00")
    texts = {
        "2026-03-10T12:00:00Z": noon,                       # UTC (the fast path)
        "2026-03-10 12:00Z": noon,
        "2026-03-10T12:00:00.058Z": noon + dt.timedelta(milliseconds=58),
        "2026-03-10T14:00:00+02:00": noon,                  # an offset
        "2026-03-10T12:00:00": noon,                        # no zone: the session's, UTC
        str(int(noon.timestamp() * 1000)): noon,            # epoch milliseconds
        "2026-03-10T12:00:00+01:00Z": None,                 # not a time
        "noon": None,
    }
    rows = spark.createDataFrame([(t,) for t in texts], "text string").select(
        "text", F.unix_micros(parse_timestamp(F.col("text"))).alias("micros")).collect()
    expected = {t: round(at.timestamp() * 1e6) if at else None for t, at in texts.items()}
    assert {r["text"]: r["micros"] for r in rows} == expected
