"""One day of parsed raw lines -> classified lines -> labelled, featurised examples.

DataFrame transformations plus the few small aggregates they need (counts, priors).
The caller (jobs/extract.py, through ple_runtime) reads the inputs into a `DayInputs`
and writes the `DayOutputs`; `materialize` says how intermediate results that are
read more than once are kept (ple_runtime.persistence; identity in unit tests).

    lines of D-1, D, D+1 (validation.parse_partition, each partition parsed once)
      -> classification_keys, classify_day   orphans, unknown items, duplicates -> status
      -> day_impressions                     accepted impressions whose event time is on D
      -> attach_labels                       engagement within the attribution window
      -> context_features, vocabulary ids, history stats from examples of days < D
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from feature_eng import schema as S
from feature_eng.features import (HistorySummary, context_features, fill_history_stats, history_stats,
                                  history_summary)
from feature_eng.labels import ENGAGEMENT_COUNT_COLUMNS, attach_labels, attributed_engagement, day_impressions
from feature_eng.params import ExtractParams
from feature_eng.quality import ReconciliationError, reconcile, status_figures
from feature_eng.validation import classification_keys, classify_day
from feature_eng.vocabulary import apply_vocabulary, new_vocabulary_entries, vocabulary_values

# above this many keys (orphan/repeated ids, users/items with history) a join shuffles instead of broadcasting
BROADCAST_KEYS_MAX = 1_000_000


class Materialize(Protocol):
    """How a DataFrame read by several Spark jobs is computed only once."""

    def checkpoint(self, df: DataFrame) -> DataFrame: ...


class Recompute:
    """No materialisation: every job recomputes (small DataFrames, unit tests)."""

    def checkpoint(self, df: DataFrame) -> DataFrame:
        return df


@dataclass(frozen=True)
class DayInputs:
    """Everything one day's extract reads, already opened by the caller."""

    day: str                    # YYYY-MM-DD
    lines: DataFrame            # validation.parse_partition rows of the partitions read (D and its neighbours)
    lines_read: int             # lines in D's partition, counted from the files when it was parsed
    items: DataFrame            # features.parse_items
    users: DataFrame            # features.parse_users
    vocabulary: DataFrame       # the vocabulary table at one pinned version
    history: DataFrame          # examples rows (only dt in params.history_range(day) is used)
    partition_figures: Mapping[str, float] = field(default_factory=dict)  # which neighbours were read


@dataclass(frozen=True)
class DayOutputs:
    """What the caller writes for the day (docs/DATA.md), all checked and counted."""

    day: str
    examples: DataFrame         # EXAMPLES_SCHEMA rows of dt = day
    quarantine: DataFrame       # QUARANTINE_SCHEMA rows of dt = day
    new_vocabulary: DataFrame   # VOCABULARY_SCHEMA rows to add (ids after the pinned version's)
    figures: dict[str, float]   # data-quality figures, reconciled; final_figures adds the label figures

    @property
    def new_vocabulary_values(self) -> int:
        return int(self.figures["vocabulary_new_values"])


def quarantine_rows(classified: DataFrame, day: str) -> DataFrame:
    return classified.where((F.col("dt") == day) & (F.col("status") == "quarantined")).select(
        F.col("dt"), F.col("source_file"), F.col("value").alias("raw_line"), F.col("reason"),
        F.col("event_id"), F.col("event_type"),
    )


def labelled_impressions(classified: DataFrame, items: DataFrame, users: DataFrame, day: str,
                         params: ExtractParams) -> DataFrame:
    """The day's impressions with dims, labels, context features and engagement counts (no ids yet)."""
    accepted = classified.where(F.col("status") == "accepted")
    impressions = (
        day_impressions(accepted, day)
        .join(F.broadcast(items), "item_id", "inner")  # unknown items were quarantined
        .join(F.broadcast(users), "user_id", "left")   # unknown users keep OOV dims
    )
    engagement = attributed_engagement(impressions, accepted, params.attribution_window_hours)
    return context_features(attach_labels(impressions, engagement))


def new_vocabulary(labelled: DataFrame, vocabulary: DataFrame, day: str) -> DataFrame:
    """Entries to append for values first seen in the day (`vocabulary`: one pinned version)."""
    return new_vocabulary_entries(vocabulary, vocabulary_values(labelled), day)


def examples_from(labelled: DataFrame, vocabulary: DataFrame, history: DataFrame, day: str,
                  params: ExtractParams, summary: HistorySummary | None = None) -> DataFrame:
    """The day's rows of the examples table (EXAMPLES_SCHEMA).

    `vocabulary`: the pinned version plus this day's new entries. `history`: examples
    rows; only dt in `params.history_range(day)` (days strictly before the day) is used,
    so no statistic can see the day itself or later (point-in-time by construction).
    `summary`: history_summary of that window when the caller already computed it.
    """
    with_ids = apply_vocabulary(labelled, vocabulary)
    history = history.where(F.col("dt").between(*params.history_range(day)))
    summary = summary or history_summary(history)
    for key, prefix in (("user_idx", "user"), ("item_idx", "item")):
        stats = history_stats(history, key, prefix, summary.priors, params.smoothing_weight)
        if summary.keys[key] <= BROADCAST_KEYS_MAX:
            stats = F.broadcast(stats)  # else a shuffle join (the examples are shuffled by key)
        with_ids = fill_history_stats(with_ids.join(stats, key, "left"), prefix, summary.priors)
    return with_ids.withColumn("dt", F.lit(day)).select(
        *(F.col(c.name).cast(c.dtype).alias(c.name) for c in S.EXAMPLE_COLUMNS))


def _day_sizes(classified: DataFrame, labelled: DataFrame, new_entries: DataFrame, day: str) -> dict:
    """Statuses of the day's lines, labelled impressions, their engagement counts and new
    vocabulary values: ONE Spark job (a union of narrow rows, grouped)."""
    engagement = list(ENGAGEMENT_COUNT_COLUMNS.values())
    zero = F.lit(0).cast("long")

    def part(df: DataFrame, what, reason=None, counts=None) -> DataFrame:
        return df.select(what.alias("what"), (reason if reason is not None else F.lit(None).cast("string"))
                         .alias("reason"), *(((F.col(c) if counts else zero).cast("long")).alias(c)
                                             for c in engagement))

    union = (part(classified.where(F.col("dt") == day), F.col("status"), F.col("reason"))
             .unionByName(part(labelled, F.lit("labelled"), counts=True))
             .unionByName(part(new_entries, F.lit("new_vocabulary"))))
    rows = union.groupBy("what", "reason").agg(
        F.count(F.lit(1)).alias("n"), *(F.sum(c).alias(c) for c in engagement)).collect()  # a few dozen rows
    statuses = [{"status": r["what"], "reason": r["reason"], "count": r["n"]} for r in rows
                if r["what"] not in ("labelled", "new_vocabulary")]
    extra = {r["what"]: r for r in rows if r["what"] in ("labelled", "new_vocabulary")}
    labelled_row = extra.get("labelled")
    return {
        "statuses": status_figures(statuses),
        "labelled": labelled_row["n"] if labelled_row else 0,
        "new_values": extra["new_vocabulary"]["n"] if "new_vocabulary" in extra else 0,
        "engagement": {name: float((labelled_row[column] if labelled_row else 0) or 0)
                       for name, column in ENGAGEMENT_COUNT_COLUMNS.items()},
    }


def label_aggregates() -> list:
    """Label rates and cold shares of the day's examples: aggregate columns, computed while
    the examples are written (DataFrame.observe) instead of by a job of their own."""
    return [
        F.count(F.lit(1)).alias("examples"),
        F.avg("play").alias("label_rate:play"),
        F.avg("watch_ratio").alias("label_mean:watch_ratio"),
        F.avg("share").alias("label_rate:share"),
        F.avg("comment").alias("label_rate:comment"),
        F.avg((F.col("user_hist_impressions_log") == 0).cast("int")).alias("cold_user_share"),
        F.avg((F.col("item_hist_impressions_log") == 0).cast("int")).alias("cold_item_share"),
    ]


def extract_day(inputs: DayInputs, params: ExtractParams, materialize: Materialize = Recompute()) -> DayOutputs:
    """Classify, reconcile, label and featurise one day. Raises ReconciliationError (before
    the caller writes anything) when the day's lines do not add up."""
    day = inputs.day
    keys = materialize.checkpoint(classification_keys(inputs.lines, day))
    classified = classify_day(inputs.lines, day, keys, broadcast_keys=keys.count() <= BROADCAST_KEYS_MAX)
    labelled = materialize.checkpoint(labelled_impressions(classified, inputs.items, inputs.users, day, params))
    new_entries = materialize.checkpoint(new_vocabulary(labelled, inputs.vocabulary, day))
    sizes = _day_sizes(classified, labelled, new_entries, day)
    reconcile(day, inputs.lines_read, sizes["statuses"])
    history = inputs.history.where(F.col("dt").between(*params.history_range(day)))
    summary = history_summary(history)
    examples = examples_from(labelled, inputs.vocabulary.unionByName(new_entries), history, day, params, summary)
    figures: dict[str, float] = {
        "lines_read": inputs.lines_read, **sizes["statuses"], **sizes["engagement"], **inputs.partition_figures,
        "labelled_impressions": sizes["labelled"], "history_days_available": summary.days,
        "vocabulary_new_values": sizes["new_values"], **{f"prior:{k}": v for k, v in summary.priors.items()},
    }
    return DayOutputs(day=day, examples=examples, quarantine=quarantine_rows(classified, day),
                      new_vocabulary=new_entries, figures=figures)


def final_figures(outputs: DayOutputs, labels: Mapping[str, float | None]) -> dict[str, float]:
    """The day's figures plus `label_aggregates` of its examples as written; every labelled
    impression must have been written."""
    figures = {**outputs.figures, **{k: float(v) for k, v in labels.items() if v is not None}}
    labelled = figures.pop("labelled_impressions")
    if figures["examples"] != labelled:
        raise ReconciliationError(f"{outputs.day}: {labelled:.0f} labelled impressions but {figures['examples']:.0f} "
                                  "examples written; the day's data-quality record is not written: extract it again")
    return figures
