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
    row = examples.agg(
        F.count(F.lit(1)).alias("examples"),
        F.avg("play").alias("label_rate:play"),
        F.avg("watch_ratio").alias("label_mean:watch_ratio"),
        F.avg("share").alias("label_rate:share"),
        F.avg("comment").alias("label_rate:comment"),
        F.avg((F.col("user_hist_impressions_log") == 0).cast("int")).alias("cold_user_share"),
        F.avg((F.col("item_hist_impressions_log") == 0).cast("int")).alias("cold_item_share"),
    ).collect()[0]
    return {k: float(v) for k, v in row.asDict().items() if v is not None}


def engagement_figures(engagement: DataFrame, day: str) -> dict[str, float]:
    """How engagement events joined to the day's impressions were counted."""
    row = engagement.agg(
        F.sum(F.col("in_window").cast("int")).alias("engagement_attributed"),
        F.sum((~F.col("in_window")).cast("int")).alias("engagement_outside_window"),
        F.sum((F.col("in_window") & (F.col("engagement_dt") > day)).cast("int"))
        .alias("engagement_attributed_from_next_partition"),
    ).collect()[0]
    return {k: float(v or 0) for k, v in row.asDict().items()}


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
