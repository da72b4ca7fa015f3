"""Per-day data-quality figures and the reconciliation every extract must pass:

    lines read = accepted + quarantined + duplicates      (for the day's partition)
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F


class ReconciliationError(RuntimeError):
    """The lines of a day do not add up: a bug, never a data problem. Nothing is written."""


def status_counts(classified: DataFrame, day: str) -> dict[str, int]:
    """{'accepted': n, 'duplicates': n, 'quarantined': n, 'quarantined:<reason>': n} for `day`'s lines."""
    rows = (classified.where(F.col("dt") == day)
            .groupBy("status", "reason").count().collect())  # at most a few dozen rows
    return _status_figures(rows)


def day_counts(raw_lines: DataFrame, classified: DataFrame, items: DataFrame,
               day: str) -> tuple[int, dict[str, int], int]:
    """(lines read, status_counts, valid items) in ONE Spark job: the raw lines of `day`
    are counted straight from the files (independently of the classification, which is
    what makes the reconciliation a check), next to the statuses and the item count."""
    parts = (
        raw_lines.select(F.lit("lines_read").alias("status"), F.lit(None).cast("string").alias("reason")),
        classified.where(F.col("dt") == day).select("status", "reason"),
        items.select(F.lit("items_known").alias("status"), F.lit(None).cast("string").alias("reason")),
    )
    union = parts[0].unionByName(parts[1]).unionByName(parts[2])
    rows = union.groupBy("status", "reason").count().collect()  # at most a few dozen rows
    special = {r["status"]: r["count"] for r in rows if r["status"] in ("lines_read", "items_known")}
    counts = _status_figures([r for r in rows if r["status"] not in ("lines_read", "items_known")])
    return special.get("lines_read", 0), counts, special.get("items_known", 0)


def _status_figures(rows) -> dict[str, int]:
    figures = {"accepted": 0, "quarantined": 0, "duplicates": 0}
    for row in rows:
        if row["status"] == "accepted":
            figures["accepted"] += row["count"]
        elif row["status"] == "duplicate":
            figures["duplicates"] += row["count"]
        else:
            figures["quarantined"] += row["count"]
            key = f"quarantined:{row['reason']}"
            figures[key] = figures.get(key, 0) + row["count"]
    return figures


def reconcile(day: str, lines_read: int, counts: dict[str, int]) -> None:
    accounted = counts["accepted"] + counts["quarantined"] + counts["duplicates"]
    by_reason = sum(v for k, v in counts.items() if k.startswith("quarantined:"))
    if accounted != lines_read or by_reason != counts["quarantined"]:
        raise ReconciliationError(
            f"{day}: {lines_read} lines read but accepted {counts['accepted']} + quarantined "
            f"{counts['quarantined']} + duplicates {counts['duplicates']} = {accounted} "
            f"(quarantined by reason: {by_reason}); refusing to write anything")


def label_figures(examples: DataFrame) -> dict[str, float]:
    row = _label_aggregate(examples).collect()[0]
    return {k: float(v) for k, v in row.asDict().items() if v is not None}


def _label_aggregate(examples: DataFrame) -> DataFrame:
    return examples.agg(
        F.count(F.lit(1)).alias("examples"),
        F.avg("play").alias("label_rate:play"),
        F.avg("watch_ratio").alias("label_mean:watch_ratio"),
        F.avg("share").alias("label_rate:share"),
        F.avg("comment").alias("label_rate:comment"),
        F.avg((F.col("user_hist_impressions_log") == 0).cast("int")).alias("cold_user_share"),
        F.avg((F.col("item_hist_impressions_log") == 0).cast("int")).alias("cold_item_share"),
    )


def _engagement_aggregate(engagement: DataFrame, day: str) -> DataFrame:
    return engagement.agg(
        F.sum(F.col("in_window").cast("int")).alias("engagement_attributed"),
        F.sum((~F.col("in_window")).cast("int")).alias("engagement_outside_window"),
        F.sum((F.col("in_window") & (F.col("engagement_dt") > day)).cast("int"))
        .alias("engagement_attributed_from_next_partition"),
    )


def engagement_figures(engagement: DataFrame, day: str) -> dict[str, float]:
    """How engagement events joined to the day's impressions were counted."""
    row = _engagement_aggregate(engagement, day).collect()[0]
    return {k: float(v or 0) for k, v in row.asDict().items()}


def label_and_engagement_figures(examples: DataFrame, engagement: DataFrame, day: str) -> dict[str, float]:
    """label_figures(examples) and engagement_figures(engagement, day) in one Spark job
    (two one-row aggregates side by side)."""
    row = _label_aggregate(examples).crossJoin(_engagement_aggregate(engagement, day)).collect()[0].asDict()
    engagement_keys = ("engagement_attributed", "engagement_outside_window",
                       "engagement_attributed_from_next_partition")
    figures = {k: float(v) for k, v in row.items() if k not in engagement_keys and v is not None}
    figures.update({k: float(row[k] or 0) for k in engagement_keys})
    return figures


def data_quality_rows(day: str, figures: dict[str, float]) -> list[tuple[str, str, float]]:
    return [(day, metric, float(value)) for metric, value in sorted(figures.items())]


def format_summary(day: str, figures: dict[str, float]) -> str:
    width = max(len(k) for k in figures)
    lines = [f"extract {day}", "-" * (width + 16)]
    for key in sorted(figures):
        value = figures[key]
        shown = f"{value:,.0f}" if float(value).is_integer() else f"{value:.4f}"
        lines.append(f"{key:<{width}}  {shown:>12}")
    return "\n".join(lines)
