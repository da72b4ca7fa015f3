"""Raw lines -> parsed events with a quarantine reason (null when the line is valid).

Input: a DataFrame of lines `(dt, source_file, value)`, `dt` being the partition
(the day the line was RECEIVED). Every field is parsed as a string first (Spark
renders a JSON number as its text and an object as its JSON), then checked and
cast here, so each problem gets its own reason instead of a silent null.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from feature_eng import schema as S

_INTEGER_PATTERN = r"^-?[0-9]{1,18}$"   # 18 digits: always fits a long
_ISO_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}"


@dataclass(frozen=True)
class ValidationRules:
    """Limits of what a valid line may say (docs/DATA.md explains each)."""

    max_late_hours: float = 24.0      # ts may be up to this long before the partition's day starts
    max_early_minutes: float = 60.0   # ... or this long after it ends (device clocks run ahead)
    max_watch_ms: int = 4 * 3600 * 1000  # one play event longer than this is absurd


def _blank_to_null(column: Column) -> Column:
    return F.when(F.trim(column) == "", None).otherwise(column)


def parse_timestamp(text: Column) -> Column:
    """ISO-8601 (UTC or with an offset) or epoch milliseconds -> timestamp; null when neither."""
    return (
        F.when(text.rlike(_INTEGER_PATTERN), F.timestamp_millis(text.cast("long")))
        .when(text.rlike(_ISO_PATTERN), F.try_to_timestamp(text))
    )


def validate_lines(lines: DataFrame, rules: ValidationRules = ValidationRules()) -> DataFrame:
    """Parse and check every line; returns one row per line with `reason` (null = valid).

    Columns out: dt, source_file, value, line_hash, reason, event_id, event_type,
    ts (timestamp), user_id, item_id, impression_id, position, device, watch_ms,
    channel, comment_len.
    """
    json = F.from_json("value", S.RAW_EVENT_STRING_SCHEMA,
                       {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": S.CORRUPT_COLUMN})
    # Step 1: one column per field (blank -> null, integers cast when they are integers).
    # Step 2 refers to these columns, which keeps the reason expression (and the code
    # Spark generates for it) small.
    fields = lines.select("dt", "source_file", "value", json.alias("_j")).select(
        "dt", "source_file", "value",
        F.col("_j").isNull().alias("_unparsed"),
        F.col(f"_j.{S.CORRUPT_COLUMN}").alias("_corrupt"),
        *(_blank_to_null(F.col(f"_j.{name}")).alias(f"_raw_{name}") for name in S.ALL_EVENT_FIELDS),
    )
    raw = {name: F.col(f"_raw_{name}") for name in S.ALL_EVENT_FIELDS}
    fields = fields.select(
        "*",
        parse_timestamp(raw["ts"]).alias("_ts"),
        *(F.when(raw[name].rlike(_INTEGER_PATTERN), raw[name].cast("long")).alias(f"_int_{name}")
          for name in S.INTEGER_FIELDS),
    )
    etype = raw["event_type"]
    ts = F.col("_ts")
    integers = {name: F.col(f"_int_{name}") for name in S.INTEGER_FIELDS}
    partition_start = F.to_timestamp(F.col("dt"))
    earliest = partition_start - F.expr(f"INTERVAL {int(rules.max_late_hours * 3600)} SECONDS")
    latest = partition_start + F.expr(f"INTERVAL {86400 + int(rules.max_early_minutes * 60)} SECONDS")

    # (condition, reason) in priority order: the first that holds names the problem
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
    checks += [
        (ts.isNull(), S.BAD_TIMESTAMP),
        ((ts < earliest) | (ts >= latest), S.CLOCK_SKEW),
        ((etype == "play") & (integers["watch_ms"] < 0), S.NEGATIVE_WATCH_MS),
        ((etype == "play") & (integers["watch_ms"] > rules.max_watch_ms), S.ABSURD_WATCH_MS),
        ((etype == "impression") & (integers["position"] < 0), S.bad_value("position")),
        ((etype == "comment") & (integers["comment_len"] < 0), S.bad_value("comment_len")),
    ]
    reason = reduce(lambda acc, check: acc.when(check[0], F.lit(check[1])),
                    checks[1:], F.when(checks[0][0], F.lit(checks[0][1])))

    return fields.select(
        "dt", "source_file", "value",
        F.xxhash64("value").alias("line_hash"),
        reason.alias("reason"),
        raw["event_id"].alias("event_id"),
        etype.alias("event_type"),
        ts.alias("ts"),
        raw["user_id"].alias("user_id"),
        raw["item_id"].alias("item_id"),
        raw["impression_id"].alias("impression_id"),
        integers["position"].cast("int").alias("position"),
        raw["device"].alias("device"),
        integers["watch_ms"].alias("watch_ms"),
        raw["channel"].alias("channel"),
        integers["comment_len"].alias("comment_len"),
    )


def classify_partition(events: DataFrame, day: str, known_items: DataFrame) -> DataFrame:
    """Give every line of partition `day` a status: accepted | quarantined | duplicate.

    `events` holds validated lines of `day` and its neighbour partitions (the day
    before and after, when present). Lines of the neighbours are used as context:
    - orphan engagement: an engagement line of `day` whose impression_id matches no
      valid impression in any partition read (late engagement of yesterday's
      impressions is therefore not an orphan);
    - unknown item: an impression of `day` whose item is not in the catalog;
    - duplicates: among valid lines, the first occurrence of an event_id by
      (partition, source file, line hash) is kept; later ones, including a retry
      delivered today of an event received yesterday, are duplicates.
    Neighbour lines get a status too (line-level reasons only); only `day`'s
    rows are accounted for by the caller.
    """
    in_day = F.col("dt") == day
    # "some valid impression carries this impression_id": a window over impression_id
    # instead of a self-join with the distinct valid impressions, so the lines are
    # parsed once and shuffled once for it (null ids never match, as in a join).
    is_valid_impression = F.col("reason").isNull() & (F.col("event_type") == "impression")
    impression_known = F.max(is_valid_impression.cast("int")).over(Window.partitionBy("impression_id")) == 1
    impression_known = F.coalesce(F.col("impression_id").isNotNull() & impression_known, F.lit(False))
    items = known_items.select(F.col("item_id").alias("_item_known")).distinct()
    engagement = F.col("event_type").isin(*S.ENGAGEMENT_TYPES)
    checked = (
        events
        .join(F.broadcast(items), events["item_id"] == items["_item_known"], "left")
        .withColumn("_imp_known", impression_known)
        .withColumn(
            "reason",
            F.when(F.col("reason").isNotNull(), F.col("reason"))
            .when(in_day & engagement & ~F.col("_imp_known"), F.lit(S.ORPHAN_ENGAGEMENT))
            .when(in_day & (F.col("event_type") == "impression") & F.col("_item_known").isNull(),
                  F.lit(S.UNKNOWN_ITEM)),
        )
        .drop("_imp_known", "_item_known")
    )
    # rank valid lines only: a quarantined copy must not push the valid one out
    first_seen = Window.partitionBy("event_id", F.col("reason").isNull()).orderBy("dt", "source_file", "line_hash")
    rank = F.when(F.col("reason").isNull(), F.row_number().over(first_seen))
    return checked.withColumn(
        "status",
        F.when(F.col("reason").isNotNull(), F.lit("quarantined"))
        .when(rank > 1, F.lit("duplicate"))
        .otherwise(F.lit("accepted")),
    )
