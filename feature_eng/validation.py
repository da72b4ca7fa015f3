"""Raw lines -> parsed events with a quarantine reason (null when the line is valid).

Input: a DataFrame of lines `(dt, source_file, value)`, `dt` being the partition
(the day the line was RECEIVED). Every field is parsed as a string first (Spark
renders a JSON number as its text and an object as its JSON), then checked and
cast here, so each problem gets its own reason instead of a silent null.
"""

from __future__ import annotations

from functools import reduce

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from feature_eng import schema as S
from feature_eng.params import ExtractParams

_INTEGER_PATTERN = r"^-?[0-9]{1,18}$"   # 18 digits: always fits a long
_ISO_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}"
_ISO_UTC_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?Z$"


def _blank_to_null(column: Column) -> Column:
    return F.when(F.trim(column) == "", None).otherwise(column)


def parse_timestamp(text: Column) -> Column:
    """ISO-8601 (UTC or with an offset) or epoch milliseconds -> timestamp; null when neither.

    The session time zone is UTC (`ple extract` checks it: days and hours are UTC days and hours), so a
    plain `...Z` time is parsed without its `Z`: the same instant, without the zone lookup Spark
    does for every zoned value (two regular expressions compiled per value: a tenth of parsing)."""
    return (
        F.when(text.rlike(_INTEGER_PATTERN), F.timestamp_millis(text.cast("long")))
        .when(text.rlike(_ISO_UTC_PATTERN), F.try_to_timestamp(text.substr(F.lit(1), F.length(text) - 1)))
        .when(text.rlike(_ISO_PATTERN), F.try_to_timestamp(text))
    )


def validate_lines(lines: DataFrame, params: ExtractParams = ExtractParams()) -> DataFrame:
    """Parse and check every line; returns one row per line with `reason` (null = valid).

    Columns out: dt, source_file, value, line_hash, reason, event_id, event_type,
    ts (timestamp), user_id, item_id, impression_id, position, device, watch_ms,
    channel, comment_len.
    """
    fields = _field_columns(lines)
    raw = {name: F.col(f"_raw_{name}") for name in S.ALL_EVENT_FIELDS}
    integers = {name: F.col(f"_int_{name}") for name in S.INTEGER_FIELDS}
    checks = _quarantine_checks(raw, integers, F.col("_ts"), params)
    reason = reduce(lambda acc, check: acc.when(check[0], F.lit(check[1])),
                    checks[1:], F.when(checks[0][0], F.lit(checks[0][1])))

    return fields.select(
        "dt", "source_file", "value",
        F.xxhash64("value").alias("line_hash"),
        reason.alias("reason"),
        raw["event_id"].alias("event_id"),
        raw["event_type"].alias("event_type"),
        F.col("_ts").alias("ts"),
        raw["user_id"].alias("user_id"),
        raw["item_id"].alias("item_id"),
        raw["impression_id"].alias("impression_id"),
        integers["position"].cast("int").alias("position"),
        raw["device"].alias("device"),
        integers["watch_ms"].alias("watch_ms"),
        raw["channel"].alias("channel"),
        integers["comment_len"].alias("comment_len"),
    )


def _field_columns(lines: DataFrame) -> DataFrame:
    """The lines with one column per field: `_raw_<f>` (blank -> null), `_ts`, `_int_<f>` (cast when
    it is an integer), `_unparsed` and `_corrupt`. The checks refer to these columns, which keeps
    the reason expression (and the code Spark generates for it) small."""
    json = F.from_json("value", S.RAW_EVENT_STRING_SCHEMA,
                       {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": S.CORRUPT_COLUMN})
    fields = lines.select("dt", "source_file", "value", json.alias("_j")).select(
        "dt", "source_file", "value",
        F.col("_j").isNull().alias("_unparsed"),
        F.col(f"_j.{S.CORRUPT_COLUMN}").alias("_corrupt"),
        *(_blank_to_null(F.col(f"_j.{name}")).alias(f"_raw_{name}") for name in S.ALL_EVENT_FIELDS),
    )
    raw = {name: F.col(f"_raw_{name}") for name in S.ALL_EVENT_FIELDS}
    return fields.select(
        "*",
        parse_timestamp(raw["ts"]).alias("_ts"),
        *(F.when(raw[name].rlike(_INTEGER_PATTERN), raw[name].cast("long")).alias(f"_int_{name}")
          for name in S.INTEGER_FIELDS),
    )


def _quarantine_checks(raw: dict[str, Column], integers: dict[str, Column], ts: Column,
                       params: ExtractParams) -> list[tuple[Column, str]]:
    """(condition, reason) in priority order: the first that holds names the problem."""
    etype = raw["event_type"]
    partition_start = F.to_timestamp(F.col("dt"))
    earliest = partition_start - F.expr(f"INTERVAL {int(params.max_late_hours * 3600)} SECONDS")
    latest = partition_start + F.expr(f"INTERVAL {86400 + int(params.max_early_minutes * 60)} SECONDS")
    checks: list[tuple[Column, str]] = [
        (F.trim(F.col("value")) == "", S.EMPTY_LINE),
        (F.col("_unparsed") | F.col("_corrupt").isNotNull(), S.MALFORMED_JSON),
    ]
    checks += [(raw[f].isNull(), S.missing_field(f)) for f in S.COMMON_FIELDS]
    checks.append((~etype.isin(*S.EVENT_TYPES), S.UNKNOWN_EVENT_TYPE))
    for event_type, type_fields in S.FIELDS_BY_TYPE.items():
        checks += [((etype == event_type) & raw[f].isNull(), S.missing_field(f)) for f in type_fields]
    # ids, the type and the type's own string fields must not be objects/arrays; integers must be integers
    string_fields = [f for f in S.ALL_EVENT_FIELDS if f not in S.INTEGER_FIELDS and f != "ts"]
    checks += [(raw[f].startswith("{") | raw[f].startswith("["), S.bad_type(f)) for f in string_fields]
    for event_type, type_fields in S.FIELDS_BY_TYPE.items():
        checks += [((etype == event_type) & integers[f].isNull(), S.bad_type(f))
                   for f in type_fields if f in S.INTEGER_FIELDS]
    return checks + [
        (ts.isNull(), S.BAD_TIMESTAMP),
        ((ts < earliest) | (ts >= latest), S.CLOCK_SKEW),
        ((etype == "play") & (integers["watch_ms"] < 0), S.NEGATIVE_WATCH_MS),
        ((etype == "play") & (integers["watch_ms"] > params.max_watch_ms), S.ABSURD_WATCH_MS),
        ((etype == "impression") & (integers["position"] < 0), S.bad_value("position")),
        ((etype == "comment") & (integers["comment_len"] < 0), S.bad_value("comment_len")),
    ]


def parse_partition(lines: DataFrame, known_items: DataFrame, params: ExtractParams,
                    keep_raw: Column | bool) -> DataFrame:
    """The stored form of partitions' validated lines (what the extract keeps in memory):
    `validate_lines` plus `item_known` (the item is in the snapshot) and `file_name`, without
    the fields nothing downstream reads. The raw text and path (`value`, `source_file`) are kept
    only where `keep_raw` (a condition: the line's partition is a day being extracted) and the
    line may end up in the quarantine table: a line-level reason, an engagement line (may be an
    orphan) or an impression of an unknown item."""
    events = validate_lines(lines, params)
    items = known_items.select(F.col("item_id").alias("_item_known")).distinct()
    checked = (events.join(F.broadcast(items), events["item_id"] == items["_item_known"], "left")
               .withColumn("item_known", F.col("_item_known").isNotNull()))
    keep_raw = keep_raw if isinstance(keep_raw, Column) else F.lit(keep_raw)
    may_be_quarantined = keep_raw & (F.col("reason").isNotNull() | (F.col("event_type") != "impression")
                                     | ~F.col("item_known"))
    return checked.select(
        "dt", F.substring_index("source_file", "/", -1).alias("file_name"),
        F.when(may_be_quarantined, F.col("source_file")).alias("source_file"),
        F.when(may_be_quarantined, F.col("value")).alias("value"),
        "line_hash", "reason", "item_known", "event_id", "event_type", "ts", "user_id", "item_id",
        "impression_id", "position", "device", "watch_ms",
    )


ORPHAN_KEYS, REPEATED_KEYS = "orphan_impression_id", "repeated_event_id"
REPEATED_IMPRESSION_KEYS = "repeated_impression_id"


def classification_keys(lines: DataFrame) -> DataFrame:
    """The small sets `classify` and `labels.day_impressions` need, as (day, kind, key) rows, from
    one narrow aggregate:

    - `orphan_impression_id`: impression_ids named by a valid engagement line of `day` and by
      no valid impression among the lines read for `day`;
    - `repeated_event_id`: event_ids on more than one line read for `day` (only those need ranking);
    - `repeated_impression_id`: impression_ids of more than one valid impression line read for
      `day` (only those can need a tie broken between impressions).

    `lines` carry `day` (S.EXTRACT_DAY): the day they are read for (a partition is read for
    itself and its two neighbours), so several days are classified by the same jobs, each
    exactly as if alone. Only ids are shuffled, never whole lines: the lines themselves are
    then classified with these sets joined in (broadcast when small)."""
    day = F.col(S.EXTRACT_DAY)
    valid = F.col("reason").isNull()
    is_impression = valid & (F.col("event_type") == "impression")
    is_candidate = valid & (F.col("dt") == day) & F.col("event_type").isin(*S.ENGAGEMENT_TYPES)
    by_impression = lines.where(F.col("impression_id").isNotNull() & (is_impression | is_candidate)).select(
        day, F.lit(ORPHAN_KEYS).alias("kind"), F.col("impression_id").alias("key"),
        is_impression.cast("int").alias("_impressions"), is_candidate.alias("_candidate"), F.lit(1).alias("_n"))
    by_event = lines.where(F.col("event_id").isNotNull()).select(
        day, F.lit(REPEATED_KEYS).alias("kind"), F.col("event_id").alias("key"),
        F.lit(0).alias("_impressions"), F.lit(False).alias("_candidate"), F.lit(1).alias("_n"))
    counted = by_impression.unionByName(by_event).groupBy(S.EXTRACT_DAY, "kind", "key").agg(
        F.sum("_impressions").alias("_impressions"), F.max("_candidate").alias("_candidate"),
        F.sum("_n").alias("_n"))
    by_impression_id = F.col("kind") == ORPHAN_KEYS
    return counted.where(
        (by_impression_id & F.col("_candidate") & (F.col("_impressions") == 0))
        | (by_impression_id & (F.col("_impressions") > 1))
        | ((F.col("kind") == REPEATED_KEYS) & (F.col("_n") > 1))
    ).select(S.EXTRACT_DAY,
             F.when(by_impression_id & (F.col("_impressions") > 1), F.lit(REPEATED_IMPRESSION_KEYS))
             .otherwise(F.col("kind")).alias("kind"),
             "key")


def key_set(keys: DataFrame, kind: str, prefix: str, broadcast: bool) -> DataFrame:
    """The `kind` rows of `classification_keys` as (`<prefix>_day`, `<prefix>`) columns to join by."""
    rows = keys.where(F.col("kind") == kind).select(F.col(S.EXTRACT_DAY).alias(f"{prefix}_day"),
                                                    F.col("key").alias(prefix))
    return F.broadcast(rows) if broadcast else rows


def classify(lines: DataFrame, keys: DataFrame, broadcast_keys: bool = True) -> DataFrame:
    """Give every line a status for the day it is read for: accepted | quarantined | duplicate
    (`reason` says why).

    `lines`: `parse_partition` rows with `day`, the day they are read for: a day's own partition
    and its neighbours (the day before and after, when present); `keys`:
    `classification_keys(lines)`. Neighbour lines are context:
    - orphan engagement: an engagement line of `day` whose impression_id matches no
      valid impression in any partition read (late engagement of yesterday's
      impressions is therefore not an orphan);
    - unknown item: an impression of `day` whose item is not in the catalog;
    - duplicates: among valid lines, the first occurrence of an event_id by
      (partition, source file, line hash) is kept; later ones, including a retry
      delivered today of an event received yesterday, are duplicates.
    Neighbour lines get a status too (line-level reasons only); only `day`'s own
    partition's rows (dt = day) are accounted for by the caller.
    """
    day = F.col(S.EXTRACT_DAY)
    in_day = F.col("dt") == day
    engagement = F.col("event_type").isin(*S.ENGAGEMENT_TYPES)
    checked = (
        lines
        .join(key_set(keys, ORPHAN_KEYS, "_orphan", broadcast_keys),
              (day == F.col("_orphan_day")) & (F.col("impression_id") == F.col("_orphan")), "left")
        .join(key_set(keys, REPEATED_KEYS, "_repeated", broadcast_keys),
              (day == F.col("_repeated_day")) & (F.col("event_id") == F.col("_repeated")), "left")
        .withColumn(
            "reason",
            F.when(F.col("reason").isNotNull(), F.col("reason"))
            .when(in_day & engagement & F.col("_orphan").isNotNull(), F.lit(S.ORPHAN_ENGAGEMENT))
            .when(in_day & (F.col("event_type") == "impression") & ~F.col("item_known"), F.lit(S.UNKNOWN_ITEM)),
        )
    )
    # rank valid lines only (a quarantined copy must not push the valid one out), and only
    # lines whose event_id is on several lines: every other valid line is first by itself
    first_seen = Window.partitionBy(S.EXTRACT_DAY, "event_id", F.col("reason").isNull()).orderBy(
        "dt", "file_name", "line_hash")
    valid = F.col("reason").isNull()
    ranked = checked.where(F.col("_repeated").isNotNull()).withColumn(
        "_rank", F.when(valid, F.row_number().over(first_seen)))
    single = checked.where(F.col("_repeated").isNull()).withColumn("_rank", F.when(valid, F.lit(1)))
    return ranked.unionByName(single).select(
        *(c for c in lines.columns),
        F.when(~valid, F.lit("quarantined")).when(F.col("_rank") > 1, F.lit("duplicate"))
        .otherwise(F.lit("accepted")).alias("status"),
    )
