"""One day of raw lines -> classified lines -> labelled, featurised examples.

Pure DataFrame transformations: the caller (jobs/extract.py) reads the inputs,
persists the classified lines, checks the reconciliation, and writes the tables.

    lines (dt, source_file, value) of day D-1, D, D+1
      -> validate_lines            line-level reasons
      -> classify_partition        orphans, unknown items, duplicates -> status
      -> day_impressions           accepted impressions whose event time is on D
      -> attach_labels             engagement within the attribution window
      -> context_features, apply_vocabulary, history stats from examples of days < D
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from feature_eng import schema as S
from feature_eng.features import (context_features, fill_history_stats, history_priors, history_stats)
from feature_eng.labels import attach_labels, attributed_engagement, day_impressions
from feature_eng.validation import ValidationRules, classify_partition, validate_lines
from feature_eng.vocabulary import apply_vocabulary, new_vocabulary_entries, vocabulary_values


@dataclass(frozen=True)
class DayParams:
    day: str                              # YYYY-MM-DD
    attribution_window_hours: float = 6.0
    stats_window_days: int = 7
    smoothing_weight: float = 20.0        # pseudo-impressions of the prior
    rules: ValidationRules = field(default_factory=ValidationRules)

    def neighbours(self) -> tuple[str, str]:
        day = dt.date.fromisoformat(self.day)
        return (day - dt.timedelta(days=1)).isoformat(), (day + dt.timedelta(days=1)).isoformat()

    def history_range(self) -> tuple[str, str]:
        """First and last dt (inclusive) of the statistics window: days strictly before `day`."""
        day = dt.date.fromisoformat(self.day)
        return ((day - dt.timedelta(days=self.stats_window_days)).isoformat(),
                (day - dt.timedelta(days=1)).isoformat())


def classify_lines(lines: DataFrame, items: DataFrame, params: DayParams) -> DataFrame:
    """Every line read, validated and given a status; raw text kept only where it may be
    needed for the quarantine table (lines of the day itself)."""
    events = validate_lines(lines, params.rules)
    classified = classify_partition(events, params.day, items)
    return classified.withColumn(
        "value", F.when((F.col("dt") == params.day) & (F.col("status") == "quarantined"), F.col("value")))


def quarantine_rows(classified: DataFrame, day: str) -> DataFrame:
    return classified.where((F.col("dt") == day) & (F.col("status") == "quarantined")).select(
        F.col("dt"), F.col("source_file"), F.col("value").alias("raw_line"), F.col("reason"),
        F.col("event_id"), F.col("event_type"),
    )


def labelled_impressions(classified: DataFrame, items: DataFrame, users: DataFrame,
                         params: DayParams, keep=None) -> tuple[DataFrame, DataFrame]:
    """The day's impressions with dims, labels and context features (no ids yet), and the
    engagement joined to them (with `in_window`, for the data-quality figures).
    The caller persists the first: vocabulary and examples both read it. `keep`: applied
    to the impressions and the engagement, which are each read twice (e.g. a persist)."""
    keep = keep or (lambda df: df)
    accepted = classified.where(F.col("status") == "accepted")
    impressions = keep(
        day_impressions(accepted, params.day)
        .join(F.broadcast(items), "item_id", "inner")  # unknown items were quarantined
        .join(F.broadcast(users), "user_id", "left")   # unknown users keep OOV dims
    )
    engagement = keep(attributed_engagement(impressions, accepted, params.attribution_window_hours))
    return context_features(attach_labels(impressions, engagement)), engagement


def new_vocabulary(labelled: DataFrame, vocabulary: DataFrame, params: DayParams) -> DataFrame:
    """Entries to append for values first seen in the day (`vocabulary`: one pinned version)."""
    return new_vocabulary_entries(vocabulary, vocabulary_values(labelled), params.day)


def examples_from(labelled: DataFrame, vocabulary: DataFrame, history: DataFrame,
                  params: DayParams, priors: dict[str, float] | None = None) -> tuple[DataFrame, dict[str, float]]:
    """The day's rows of the examples table (EXAMPLES_SCHEMA) and the priors used.

    `vocabulary`: the pinned version plus this day's new entries. `history`: examples
    rows; only dt in `params.history_range()` (days strictly before the day) is used,
    so no statistic can see the day itself or later (point-in-time by construction).
    `priors`: history_priors of that window when the caller already computed them.
    """
    with_ids = apply_vocabulary(labelled, vocabulary)
    lo, hi = params.history_range()
    history = history.where(F.col("dt").between(lo, hi))
    if priors is None:
        priors = history_priors(history)
    for key, prefix in (("user_idx", "user"), ("item_idx", "item")):
        stats = history_stats(history, key, prefix, priors, params.smoothing_weight)
        with_ids = fill_history_stats(with_ids.join(stats, key, "left"), prefix, priors)
    examples = with_ids.withColumn("dt", F.lit(params.day)).select(
        *(F.col(c.name).cast(c.dtype).alias(c.name) for c in S.EXAMPLE_COLUMNS))
    return examples, priors
