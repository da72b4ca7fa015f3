"""One extract pass: parsed raw lines of consecutive days -> classified lines -> labelled,
featurised examples.

DataFrame transformations plus the few small aggregates they need (counts, priors).
The caller (the extract stage, extraction/extract.py) reads the inputs into `PassInputs`
and writes the `PassOutputs`; `materialize` says how intermediate results that are
read more than once are kept (extraction.persistence; identity in unit tests).

Several days go through the same Spark jobs (a "pass"), each exactly as if extracted
alone and in order: every line carries `day` (S.EXTRACT_DAY), the day it is read for
(partition P is read for P-1, P and P+1), and every grouping, window and join is by day.
Only two things depend on earlier days' output, and both are computed for the pass at once
with the same results as one day at a time: new vocabulary ids (numbered by first day
seen, then value) and history statistics (each day's window sums the earlier days' per-key
aggregates, the pass's own earlier days included).

    lines of D-1, D, D+1 for each day D (validation.parse_partition, each partition parsed once)
      -> classification_keys, classify      orphans, unknown items, duplicates -> status
      -> day_impressions                    accepted impressions whose event time is on D
      -> attach_labels                      engagement within the attribution window
      -> context_features, vocabulary ids, history stats from examples of days < D
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from feature_eng import schema as S
from feature_eng.features import (HISTORY_COLUMNS, HistorySummary, context_features, fill_history_stats,
                                  history_stats, history_summaries, history_windows, priors_frame)
from feature_eng.labels import ENGAGEMENT_COUNT_COLUMNS, attach_labels, attributed_engagement, day_impressions
from feature_eng.literal import string_pairs
from feature_eng.params import ExtractParams
from feature_eng.quality import ReconciliationError, reconcile, status_figures
from feature_eng.validation import classification_keys, classify
from feature_eng.vocabulary import apply_vocabulary, new_vocabulary_entries, vocabulary_values

# above this many keys (orphan/repeated ids, users/items with history) a join shuffles instead of broadcasting
BROADCAST_KEYS_MAX = 1_000_000
# Status counts, labels and quarantine each read the classified lines. Kept (stored once) on small passes,
# where planning and running the classification joins again costs more (-10% CPU on a test day's
# extract); recomputed on large ones, where storing every line costs more (+12% at 5M lines, no
# gain at 1M): bench/etl_throughput.py, docs/measurements/test_suite.md.
KEEP_CLASSIFIED_MAX_LINES = 500_000


class Materialize(Protocol):
    """How a DataFrame read by several Spark jobs is computed only once."""

    def checkpoint(self, df: DataFrame) -> DataFrame: ...


class Recompute:
    """No materialisation: every job recomputes (small DataFrames, unit tests)."""

    def checkpoint(self, df: DataFrame) -> DataFrame:
        return df


@dataclass(frozen=True)
class PassInputs:
    """Everything the extract of consecutive days reads, already opened by the caller."""

    days: tuple[str, ...]       # YYYY-MM-DD, consecutive, in order
    lines: DataFrame            # validation.parse_partition rows with `day`: the day each is read for
    lines_read: Mapping[str, int]   # lines in each day's own partition, counted from the files
    items: DataFrame            # features.parse_items
    users: DataFrame            # features.parse_users
    vocabulary: DataFrame       # the vocabulary table at one pinned version
    history: DataFrame          # examples rows (HISTORY_COLUMNS) of the days before days[0]; later dt are ignored
    partition_figures: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # per day: neighbours read


@dataclass(frozen=True)
class PassOutputs:
    """What the caller writes for the pass's days (docs/DATA.md), all checked and counted. When a
    day does not reconcile, `days` stops before it (the outputs hold only the days before) and
    `error` says why: the caller writes those days, then raises it."""

    days: tuple[str, ...]
    examples: DataFrame         # EXAMPLES_SCHEMA rows of dt in days
    quarantine: DataFrame       # QUARANTINE_SCHEMA rows of dt in days
    new_vocabulary: DataFrame   # VOCABULARY_SCHEMA rows to add (ids after the pinned version's)
    figures: dict[str, dict[str, float]]   # per day: data-quality figures, reconciled; final_figures adds labels
    error: ReconciliationError | None = None

    @property
    def new_vocabulary_values(self) -> int:
        return int(sum(figures["vocabulary_new_values"] for figures in self.figures.values()))


def quarantine_rows(classified: DataFrame) -> DataFrame:
    """The lines of each day's own partition that are quarantined for that day."""
    return classified.where((F.col("dt") == F.col(S.EXTRACT_DAY)) & (F.col("status") == "quarantined")).select(
        F.col("dt"), F.col("source_file"), F.col("value").alias("raw_line"), F.col("reason"),
        F.col("event_id"), F.col("event_type"),
    )


def labelled_impressions(classified: DataFrame, keys: DataFrame, items: DataFrame, users: DataFrame,
                         params: ExtractParams, materialize: Materialize = Recompute(),
                         broadcast_keys: bool = True) -> DataFrame:
    """Each day's impressions with dims, labels, context features and engagement counts (no ids
    yet). `keys`: `classification_keys` of the lines `classified` comes from."""
    accepted = classified.where(F.col("status") == "accepted")
    # read twice (engagement join, labels join): kept, so its joins run once
    impressions = materialize.checkpoint(
        day_impressions(accepted, keys, broadcast_keys)
        .join(F.broadcast(items), "item_id", "inner")  # unknown items were quarantined
        .join(F.broadcast(users), "user_id", "left")   # unknown users keep OOV dims
    )
    engagement = attributed_engagement(impressions, accepted, params.attribution_window_hours)
    return context_features(attach_labels(impressions, engagement))


def new_vocabulary(labelled: DataFrame, vocabulary: DataFrame) -> DataFrame:
    """Entries to append for values first seen in the days (`vocabulary`: one pinned version)."""
    return new_vocabulary_entries(vocabulary, vocabulary_values(labelled))


def examples_from(labelled: DataFrame, vocabulary: DataFrame, history: DataFrame, days: list[str],
                  params: ExtractParams, materialize: Materialize = Recompute(),
                  ) -> tuple[DataFrame, dict[str, HistorySummary]]:
    """The days' rows of the examples table (EXAMPLES_SCHEMA), and each day's history summary.

    `vocabulary`: the pinned version plus the days' new entries. `history`: examples rows of
    the days before `days[0]` (rows of later dt are ignored: the days' own rows come from
    `labelled`). A day's statistics use only dt in `params.history_range(day)` (days strictly
    before it, earlier days of `days` included), so no statistic can see the day itself or
    later (point-in-time by construction).
    """
    spark = labelled.sparkSession
    with_ids = materialize.checkpoint(apply_vocabulary(labelled, vocabulary))
    own = with_ids.select(*(F.col(S.EXTRACT_DAY if c == "dt" else c).alias(c) for c in HISTORY_COLUMNS))
    history = history.where(F.col("dt") < days[0]).select(*HISTORY_COLUMNS).unionByName(own)
    summaries = history_summaries(history, days, params.stats_window_days)
    windows = string_pairs(spark, history_windows(days, params.stats_window_days), "dt", S.EXTRACT_DAY)
    priors = priors_frame(spark, summaries)
    examples = with_ids.join(F.broadcast(priors), S.EXTRACT_DAY)
    for key, prefix in (("user_idx", "user"), ("item_idx", "item")):
        stats = history_stats(history, key, prefix, windows, priors, params.smoothing_weight,
                              params.stats_window_days)
        if sum(summary.keys[key] for summary in summaries.values()) <= BROADCAST_KEYS_MAX:
            stats = F.broadcast(stats)  # else a shuffle join (the examples are shuffled by key)
        examples = fill_history_stats(examples.join(stats, [S.EXTRACT_DAY, key], "left"), prefix)
    examples = examples.withColumn("dt", F.col(S.EXTRACT_DAY)).select(
        *(F.col(c.name).cast(c.dtype).alias(c.name) for c in S.EXAMPLE_COLUMNS))
    return examples, summaries


def _day_sizes(classified: DataFrame, labelled: DataFrame, new_entries: DataFrame) -> dict[str, dict]:
    """Per day: statuses of its own partition's lines, labelled impressions, their engagement
    counts and new vocabulary values: ONE Spark job (a union of narrow rows, grouped)."""
    engagement = list(ENGAGEMENT_COUNT_COLUMNS.values())
    zero = F.lit(0).cast("long")

    def part(df: DataFrame, day, what, reason=None, counts=None) -> DataFrame:
        return df.select(day.alias("_day"), what.alias("what"),
                         (reason if reason is not None else F.lit(None).cast("string")).alias("reason"),
                         *(((F.col(c) if counts else zero).cast("long")).alias(c) for c in engagement))

    day = F.col(S.EXTRACT_DAY)
    union = (part(classified.where(F.col("dt") == day), day, F.col("status"), F.col("reason"))
             .unionByName(part(labelled, day, F.lit("labelled"), counts=True))
             .unionByName(part(new_entries, F.col("first_seen_dt"), F.lit("new_vocabulary"))))
    rows = union.groupBy("_day", "what", "reason").agg(
        F.count(F.lit(1)).alias("n"), *(F.sum(c).alias(c) for c in engagement)).collect()  # a few dozen a day
    sizes = {}
    for day_name in sorted({r["_day"] for r in rows}):
        day_rows = [r for r in rows if r["_day"] == day_name]
        statuses = [{"status": r["what"], "reason": r["reason"], "count": r["n"]} for r in day_rows
                    if r["what"] not in ("labelled", "new_vocabulary")]
        extra = {r["what"]: r for r in day_rows if r["what"] in ("labelled", "new_vocabulary")}
        labelled_row = extra.get("labelled")
        sizes[day_name] = {
            "statuses": status_figures(statuses),
            "labelled": labelled_row["n"] if labelled_row else 0,
            "new_values": extra["new_vocabulary"]["n"] if "new_vocabulary" in extra else 0,
            "engagement": {name: float((labelled_row[column] if labelled_row else 0) or 0)
                           for name, column in ENGAGEMENT_COUNT_COLUMNS.items()},
        }
    return sizes


def label_aggregates(days: list[str]) -> list:
    """Label rates and cold shares of each day's examples (named `<day>|<figure>`): aggregate
    columns, computed while the examples are written (DataFrame.observe) instead of by a job of
    their own. One set per day, each over that day's rows only (avg and count skip nulls)."""
    figures = {
        "examples": F.lit(1),
        "label_rate:play": F.col("play"),
        "label_mean:watch_ratio": F.col("watch_ratio"),
        "label_rate:share": F.col("share"),
        "label_rate:comment": F.col("comment"),
        "cold_user_share": (F.col("user_hist_daily_impressions_log") == 0).cast("int"),
        "cold_item_share": (F.col("item_hist_daily_impressions_log") == 0).cast("int"),
    }
    return [(F.count if name == "examples" else F.avg)(F.when(F.col("dt") == day, value)).alias(f"{day}|{name}")
            for day in days for name, value in figures.items()]


def extract_days(inputs: PassInputs, params: ExtractParams, materialize: Materialize = Recompute()) -> PassOutputs:
    """Classify, reconcile, label and featurise the pass's days. A day whose lines do not add
    up ends the pass before it: the outputs hold the days before it and the error (nothing of
    that day or later is to be written)."""
    days = list(inputs.days)
    keys = materialize.checkpoint(classification_keys(inputs.lines))
    broadcast_keys = keys.count() <= BROADCAST_KEYS_MAX
    classified = classify(inputs.lines, keys, broadcast_keys)
    if sum(inputs.lines_read.values()) <= KEEP_CLASSIFIED_MAX_LINES:
        classified = materialize.checkpoint(classified)
    labelled = materialize.checkpoint(labelled_impressions(classified, keys, inputs.items, inputs.users, params,
                                                           materialize, broadcast_keys))
    new_entries = materialize.checkpoint(new_vocabulary(labelled, inputs.vocabulary))
    sizes = _day_sizes(classified, labelled, new_entries)
    empty = {"statuses": status_figures([]), "labelled": 0, "new_values": 0,
             "engagement": dict.fromkeys(ENGAGEMENT_COUNT_COLUMNS, 0.0)}
    error = None
    for index, day in enumerate(days):
        try:
            reconcile(day, inputs.lines_read[day], sizes.get(day, empty)["statuses"])
        except ReconciliationError as err:
            error, days = err, days[:index]
            break
    if not days:
        raise error
    if len(days) < len(inputs.days):
        last = F.lit(days[-1])
        labelled = labelled.where(F.col(S.EXTRACT_DAY) <= last)
        new_entries = new_entries.where(F.col("first_seen_dt") <= last)
        classified = classified.where(F.col(S.EXTRACT_DAY) <= last)
    examples, summaries = examples_from(labelled, inputs.vocabulary.unionByName(new_entries), inputs.history, days,
                                        params, materialize)
    figures: dict[str, dict[str, float]] = {}
    for day in days:
        size, summary = sizes.get(day, empty), summaries[day]
        figures[day] = {
            "lines_read": inputs.lines_read[day], **size["statuses"], **size["engagement"],
            **inputs.partition_figures.get(day, {}), "labelled_impressions": size["labelled"],
            "history_days_available": summary.days, "vocabulary_new_values": size["new_values"],
            # 1 from the first day whose whole statistics window holds examples (docs/DATA.md)
            "history_window_full": int(summary.days == params.stats_window_days),
            **{f"prior:{k}": v for k, v in summary.priors.items()},
        }
    return PassOutputs(days=tuple(days), examples=examples, quarantine=quarantine_rows(classified),
                       new_vocabulary=new_entries, figures=figures, error=error)


def final_figures(outputs: PassOutputs, labels: Mapping[str, float | None]) -> dict[str, dict[str, float]]:
    """Each day's figures plus `label_aggregates` of its examples as written (`labels`: the
    observed values, named `<day>|<figure>`); every labelled impression must have been written."""
    result = {}
    for day, day_figures in outputs.figures.items():
        observed = {name.split("|", 1)[1]: value for name, value in labels.items() if name.startswith(f"{day}|")}
        figures = {**day_figures, **{k: float(v) for k, v in observed.items() if v is not None}}
        labelled = figures.pop("labelled_impressions")
        if figures.get("examples", 0.0) != labelled:
            raise ReconciliationError(f"{day}: {labelled:.0f} labelled impressions but {figures.get('examples', 0):.0f} "
                                      "examples written; the day's data-quality record is not written: extract it again")
        result[day] = figures
    return result
