"""Schemas of the ETL's inputs and outputs: the single source of truth.

Raw events (input contract, docs/DATA.md) are JSON lines; every field is parsed
as a string first so a mistyped value is reported (`bad_type:<field>`) instead
of silently becoming null. The examples table (`<lake>/examples`) is described
column by column with its role, so the train job, the spec (conf/video_spec.yaml)
and the tests all read the same list.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import types as T

# --- raw events -----------------------------------------------------------------

EVENT_TYPES = ("impression", "play", "share", "comment")
ENGAGEMENT_TYPES = ("play", "share", "comment")

COMMON_FIELDS = ("event_id", "event_type", "ts", "user_id", "item_id")
FIELDS_BY_TYPE: dict[str, tuple[str, ...]] = {
    "impression": ("impression_id", "position", "device"),
    "play": ("impression_id", "watch_ms"),
    "share": ("impression_id", "channel"),
    "comment": ("impression_id", "comment_len"),
}
INTEGER_FIELDS = ("position", "watch_ms", "comment_len")
ALL_EVENT_FIELDS = COMMON_FIELDS + ("impression_id", "position", "device", "watch_ms", "channel", "comment_len")

# Spark fills this column with the whole line when the line is not a JSON object.
CORRUPT_COLUMN = "_corrupt_record"
# The day a row is extracted for: lines of partition P are read for P-1, P and P+1, so one run
# classifies and labels several days with the same Spark jobs, each as if alone (feature_eng.extract_pass).
EXTRACT_DAY = "day"

RAW_EVENT_STRING_SCHEMA = T.StructType(
    [T.StructField(name, T.StringType()) for name in ALL_EVENT_FIELDS]
    + [T.StructField(CORRUPT_COLUMN, T.StringType())]
)

ITEM_FIELDS = ("item_id", "author_id", "category", "duration_ms", "upload_ts")
USER_FIELDS = ("user_id", "age_bucket", "gender", "region", "signup_ts")
RAW_ITEM_STRING_SCHEMA = T.StructType([T.StructField(n, T.StringType()) for n in ITEM_FIELDS])
RAW_USER_STRING_SCHEMA = T.StructType([T.StructField(n, T.StringType()) for n in USER_FIELDS])

# --- quarantine reasons ---------------------------------------------------------------
# Checked in this order; a line gets the first reason that applies.

EMPTY_LINE = "empty_line"
MALFORMED_JSON = "malformed_json"
UNKNOWN_EVENT_TYPE = "unknown_event_type"
BAD_TIMESTAMP = "bad_timestamp"
CLOCK_SKEW = "clock_skew"
NEGATIVE_WATCH_MS = "negative_watch_ms"
ABSURD_WATCH_MS = "absurd_watch_ms"
ORPHAN_ENGAGEMENT = "orphan_engagement"
UNKNOWN_ITEM = "unknown_item"


def missing_field(field: str) -> str:
    return f"missing_field:{field}"


def bad_type(field: str) -> str:
    return f"bad_type:{field}"


def bad_value(field: str) -> str:
    return f"bad_value:{field}"


def known_reasons() -> set[str]:
    """Every reason `ple extract` can give (tests check the generator's manifest against it)."""
    reasons = {EMPTY_LINE, MALFORMED_JSON, UNKNOWN_EVENT_TYPE, BAD_TIMESTAMP, CLOCK_SKEW,
               NEGATIVE_WATCH_MS, ABSURD_WATCH_MS, ORPHAN_ENGAGEMENT, UNKNOWN_ITEM}
    reasons |= {missing_field(f) for f in ALL_EVENT_FIELDS}
    reasons |= {bad_type(f) for f in ALL_EVENT_FIELDS}
    reasons |= {bad_value(f) for f in ("position", "comment_len")}
    return reasons


# --- vocabularies ---------------------------------------------------------------------
# vocabulary name -> (source column of the joined impression, id column of the examples table)

VOCABULARIES: dict[str, tuple[str, str]] = {
    "user_id": ("user_id", "user_idx"),
    "item_id": ("item_id", "item_idx"),
    "author_id": ("author_id", "author_idx"),
    "category": ("category", "category_idx"),
    "device": ("device", "device_idx"),
    "age_bucket": ("age_bucket", "age_bucket_idx"),
    "gender": ("gender", "gender_idx"),
    "region": ("region", "region_idx"),
}
OOV_ID = 0  # out-of-vocabulary and null

VOCABULARY_SCHEMA = T.StructType([
    T.StructField("vocabulary", T.StringType(), False),
    T.StructField("value", T.StringType(), False),
    T.StructField("id", T.IntegerType(), False),
    T.StructField("first_seen_dt", T.StringType(), False),
])

# --- fixed-size categorical features ------------------------------------------------------

HOUR_SIZE = 24          # 0..23, UTC hour of the impression
DAY_OF_WEEK_SIZE = 7    # 0 = Monday .. 6 = Sunday
POSITION_BUCKETS = 32   # 0 = unknown, 1 + position for 0..29, 31 = position >= 30
# duration bucket upper bounds in seconds; bucket 0 = unknown duration
DURATION_BUCKET_BOUNDS_S = (15, 30, 60, 180, 600)
DURATION_BUCKETS = len(DURATION_BUCKET_BOUNDS_S) + 2

# --- the examples table ---------------------------------------------------------------------

KEY, FEATURE, LABEL, MASK, PARTITION, DETAIL = "key", "feature", "label", "mask", "partition", "detail"


@dataclass(frozen=True)
class Column:
    name: str
    dtype: T.DataType
    role: str                    # key | feature | label | partition | detail
    kind: str = ""               # features: categorical | numeric
    vocab_size: int | None = None  # fixed-size categoricals
    vocabulary: str | None = None  # vocab-backed categoricals (size from the vocabulary table)
    nullable: bool = False
    doc: str = ""


def _cat(name, doc, size=None, vocabulary=None):
    return Column(name, T.IntegerType(), FEATURE, "categorical", size, vocabulary, doc=doc)


def _num(name, doc):
    return Column(name, T.FloatType(), FEATURE, "numeric", doc=doc)


EXAMPLE_COLUMNS: tuple[Column, ...] = (
    Column("impression_id", T.StringType(), KEY, doc="raw impression id (unique per row)"),
    Column("user_id", T.StringType(), KEY, doc="raw user id"),
    Column("item_id", T.StringType(), KEY, doc="raw item id"),
    Column("impression_ts", T.TimestampType(), KEY, doc="impression time (UTC)"),
    # categorical features backed by the vocabulary table (0 = OOV/null)
    *(_cat(idx, f"vocabulary id of {src}", vocabulary=name) for name, (src, idx) in VOCABULARIES.items()),
    # fixed-size categorical features
    _cat("hour", "UTC hour of the impression", HOUR_SIZE),
    _cat("day_of_week", "0 = Monday", DAY_OF_WEEK_SIZE),
    _cat("position_bucket", "0 unknown, 1 + feed position, 31 for >= 30", POSITION_BUCKETS),
    _cat("duration_bucket", f"0 unknown, then upper bounds {DURATION_BUCKET_BOUNDS_S} s, then longer",
         DURATION_BUCKETS),
    # numeric features (scaled)
    _num("item_age_log", "log1p(hours since upload) at impression time, 0 when unknown"),
    _num("duration_log", "log1p(duration in seconds)"),
    *(_num(f"{who}_hist_daily_impressions_log",
           f"log1p({who}'s impressions in the trailing window before dt / the window's days holding examples)")
      for who in ("user", "item")),
    *(_num(f"{who}_hist_{rate}", f"{who}'s smoothed {rate.replace('_', ' ')} in the trailing window before dt")
      for who in ("user", "item") for rate in ("play_rate", "watch_ratio", "share_rate", "comment_rate")),
    # labels (the `play` label is also the mask of watch_ratio)
    Column("play", T.IntegerType(), LABEL, doc="1 if played within the attribution window"),
    Column("watch_ratio", T.FloatType(), LABEL, nullable=True,
           doc="min(1, total watch_ms / duration_ms); null when play = 0 (mask: play)"),
    Column("share", T.IntegerType(), LABEL, doc="1 if shared within the attribution window"),
    Column("comment", T.IntegerType(), LABEL, doc="1 if commented within the attribution window"),
    Column("watch_ms", T.LongType(), DETAIL, doc="total watch_ms attributed (0 when not played)"),
    Column("dt", T.StringType(), PARTITION, doc="impression UTC day, YYYY-MM-DD"),
)

EXAMPLES_SCHEMA = T.StructType([T.StructField(c.name, c.dtype, c.nullable) for c in EXAMPLE_COLUMNS])
EXAMPLES_PARTITION_COLUMN = "dt"
FEATURE_COLUMNS = tuple(c.name for c in EXAMPLE_COLUMNS if c.role == FEATURE)
LABEL_COLUMNS = tuple(c.name for c in EXAMPLE_COLUMNS if c.role == LABEL)
# task -> mask column (the task's sample space, Eq. 9 of the paper); tasks without one use every row
TASK_MASKS = {"watch_ratio": "play"}
HIST_STAT_COLUMNS = tuple(c.name for c in EXAMPLE_COLUMNS if "_hist_" in c.name)

QUARANTINE_SCHEMA = T.StructType([
    T.StructField("dt", T.StringType(), False),            # partition the line was read from
    T.StructField("source_file", T.StringType(), False),
    T.StructField("raw_line", T.StringType(), True),
    T.StructField("reason", T.StringType(), False),
    T.StructField("event_id", T.StringType(), True),
    T.StructField("event_type", T.StringType(), True),
])

DATA_QUALITY_SCHEMA = T.StructType([
    T.StructField("dt", T.StringType(), False),
    T.StructField("metric", T.StringType(), False),
    T.StructField("value", T.DoubleType(), False),
])
