"""Day health: each extracted day compared with its trailing window of days (docs/DATA.md).

Two halves, on purpose:
- `day_profiles` (Spark): one aggregation over the written examples of a pass's days gives,
  per day, a histogram of every feature (numeric features in fixed-width bins, categorical
  ones by id; id-like features only as out-of-vocabulary / known / new) - a few hundred
  rows a day, stored in the data-quality table as `profile:<feature>:<bin>` counts so that
  later days compare with them without reading old examples again;
- `check_day` (plain Python): the day's figures against the window's, metric by metric, each
  check with its value, threshold and whether it is enforced (distance checks on a small day
  are reported, not enforced: sampling noise alone would exceed their threshold).

Distances follow TFDV / Vertex AI: population stability index for numeric features,
L-infinity (largest difference of a category's share) for categorical ones.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
from dataclasses import dataclass, replace

from pydantic import BaseModel, Field

from feature_eng import schema as S

PROFILE = "profile:"            # profile:<feature>:<bin> = examples of the day in that bin
NEW_VOCABULARY = "new_vocabulary:"  # pseudo-feature: 0 out of vocabulary, 1 known before the day, 2 new that day
ID_FEATURES = ("user_idx", "item_idx", "author_idx")  # too many values for a distribution: OOV/new only
UNKNOWN_IS_ZERO = frozenset(idx for _, idx in S.VOCABULARIES.values()) | {"position_bucket", "duration_bucket"}
NUMERIC_BINS = 40               # bins 0..NUMERIC_BINS-1 of a numeric feature; -1 below 0, the last one above
PSI_FLOOR = 1e-4                # a bin's share in PSI is at least this (an empty bin would make it infinite)
BREACHED, OVERRIDDEN = "day_health:breached", "day_health:overridden"


class DayHealthConfig(BaseModel):
    """Thresholds of the day-health checks (`--set day_health.<key>=...`); docs/DATA.md."""

    model_config = {"extra": "forbid"}

    enabled: bool = Field(True, description="compare each day with its trailing window; false: figures only")
    window_days: int = Field(7, ge=1, le=90, description="trailing window: the healthy days present among D-n..D-1")
    max_quarantine_rate: float = Field(0.2, gt=0, le=1, description="quarantined / lines read, whatever the window")
    max_quarantine_rate_increase: float = Field(0.05, gt=0, le=1,
                                                description="over the window's mean quarantine rate (absolute)")
    max_reason_rate_increase: float = Field(0.02, gt=0, le=1,
                                            description="one quarantine reason's rate over the window's (absolute)")
    min_volume_ratio: float = Field(0.3, gt=0, le=1, description="lines read and examples / the window's median")
    max_volume_ratio: float = Field(3.0, ge=1, description="lines read and examples / the window's median")
    max_label_change: float = Field(0.5, gt=0, description="relative change of a label rate or mean vs the window")
    label_z: float = Field(4.0, gt=0, description="...and only when it is this many standard errors away")
    max_psi: float = Field(0.25, gt=0, description="population stability index of a numeric feature")
    max_linf: float = Field(0.15, gt=0, le=1, description="L-infinity distance of a categorical feature")
    max_oov_rate_increase: float = Field(0.1, gt=0, le=1, description="out-of-vocabulary share over the window's")
    max_new_vocabulary_increase: float = Field(0.3, gt=0, le=1,
                                               description="share of rows with a value new that day, over the window's")
    min_lines_read: int = Field(200, ge=0, description="a day with fewer lines is too small to judge: every check "
                                                       "is reported, none enforced (hand-made test days)")
    min_examples_for_distance: int = Field(50_000, ge=0,
                                           description="below this many examples (day or window) distribution checks "
                                                       "are reported but not enforced (small days are noisy)")
    distance_exempt_features: list[str] = Field(["day_of_week"],
                                                description="features whose distribution changes by design")


@dataclass(frozen=True)
class Check:
    metric: str          # e.g. quarantine_rate, psi:item_age_log, label_change:play
    value: float
    threshold: float
    limit: str           # "max" or "min": the value must stay at or below / at or above the threshold
    enforced: bool       # False: reported only (small sample, or history not complete yet)

    @property
    def breached(self) -> bool:
        outside = self.value > self.threshold if self.limit == "max" else self.value < self.threshold
        return self.enforced and outside

    def describe(self) -> str:
        return f"{self.metric} = {self.value:.4g} ({self.limit} {self.threshold:g})"


# --- Spark: the per-day profile -----------------------------------------------------------------

def numeric_bin_width(feature: str) -> float:
    """Fixed bins, the same every day: log-scaled features in half units, rates and ratios in 0.05."""
    return 0.5 if feature.endswith("_log") else 0.05


def day_profiles(examples, new_id_floors: dict[tuple[str, str], int]):
    """(dt, metric, count) rows: every feature's histogram per day of `examples` (EXAMPLES_SCHEMA
    rows), ONE aggregation. `new_id_floors[(day, vocabulary)]`: the smallest id first seen on
    that day (ids are numbered in order of first day seen; absent: nothing new that day)."""
    from pyspark.sql import functions as F

    def floor_of(vocabulary: str):
        floors = [(day, floor) for (day, name), floor in new_id_floors.items() if name == vocabulary]
        expr = F.lit(None)
        for day, floor in floors:
            expr = F.when(F.col("dt") == day, F.lit(floor)).otherwise(expr)
        return expr

    pairs = []
    for column in S.EXAMPLE_COLUMNS:
        if column.role != S.FEATURE:
            continue
        value = F.col(column.name)
        if column.kind == "numeric":
            bins = F.least(F.greatest(F.floor(value / numeric_bin_width(column.name)), F.lit(-1)),
                           F.lit(NUMERIC_BINS - 1))
            pairs.append((column.name, bins))
        elif column.name not in ID_FEATURES:
            pairs.append((column.name, value))
        if column.vocabulary is not None:
            known = F.when(value == S.OOV_ID, 0).when(value >= F.coalesce(floor_of(column.vocabulary),
                                                                          F.lit(2**31 - 1)), 2).otherwise(1)
            pairs.append((NEW_VOCABULARY + column.name, known))
    stacked = F.inline(F.array(*(F.struct(F.lit(name).alias("feature"), bin_.cast("int").alias("bin"))
                                 for name, bin_ in pairs)))
    counts = examples.select("dt", stacked).groupBy("dt", "feature", "bin").count()
    return counts.select("dt", F.concat(F.lit(PROFILE), "feature", F.lit(":"), F.col("bin").cast("string"))
                         .alias("metric"), F.col("count").cast("double").alias("value"))


# --- plain Python: the comparison ------------------------------------------------------------------

def histograms(figures: dict[str, float]) -> dict[str, dict[int, float]]:
    """{feature: {bin: count}} from a day's `profile:` figures."""
    result: dict[str, dict[int, float]] = {}
    for key, value in figures.items():
        if key.startswith(PROFILE):
            feature, bin_ = key[len(PROFILE):].rsplit(":", 1)
            result.setdefault(feature, {})[int(bin_)] = value
    return result


def shares(histogram: dict[int, float]) -> dict[int, float]:
    total = sum(histogram.values())
    return {k: v / total for k, v in histogram.items()} if total else {}


def psi(expected: dict[int, float], actual: dict[int, float]) -> float:
    """Population stability index of two histograms (counts by bin)."""
    p, q = shares(expected), shares(actual)
    total = 0.0
    for key in sorted(set(p) | set(q)):  # one order: the same figures from memory or the table, to the bit
        a, b = max(q.get(key, 0.0), PSI_FLOOR), max(p.get(key, 0.0), PSI_FLOOR)
        total += (a - b) * math.log(a / b)
    return total


def linf(expected: dict[int, float], actual: dict[int, float]) -> float:
    """L-infinity distance: the largest difference of one category's share."""
    p, q = shares(expected), shares(actual)
    return max((abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in set(p) | set(q)), default=0.0)


def summed(histograms_of_days: list[dict[str, dict[int, float]]]) -> dict[str, dict[int, float]]:
    total: dict[str, dict[int, float]] = {}
    for day in histograms_of_days:
        for feature, histogram in day.items():
            target = total.setdefault(feature, {})
            for key, value in histogram.items():
                target[key] = target.get(key, 0.0) + value
    return total


def derived_figures(figures: dict[str, float]) -> dict[str, float]:
    """Rates a person reads (stored with the day): quarantine rate, OOV and new-value shares."""
    lines = figures.get("lines_read", 0.0)
    result = {"quarantine_rate": figures.get("quarantined", 0.0) / lines if lines else 0.0}
    for feature, histogram in histograms(figures).items():
        part = shares(histogram)
        if feature.startswith(NEW_VOCABULARY):
            result[f"new_vocabulary_share:{feature[len(NEW_VOCABULARY):]}"] = part.get(2, 0.0)
        elif feature in UNKNOWN_IS_ZERO:
            result[f"oov_rate:{feature}"] = part.get(0, 0.0)
    for feature in ID_FEATURES:
        part = shares(histograms(figures).get(NEW_VOCABULARY + feature, {}))
        if part:
            result[f"oov_rate:{feature}"] = part.get(0, 0.0)
    return result


def is_healthy(figures: dict[str, float]) -> bool:
    """A day counts in later days' windows unless it breached and was not overridden."""
    return not figures.get(BREACHED, 0.0) or bool(figures.get(OVERRIDDEN, 0.0))


def window_of(day: str, figures_by_day: dict[str, dict[str, float]], window_days: int) -> dict[str, dict[str, float]]:
    """The figures of the healthy days among day-window_days .. day-1 that are present (a day
    recorded before these checks existed gets its derived figures here)."""
    first = (dt.date.fromisoformat(day) - dt.timedelta(days=window_days)).isoformat()
    return {d: {**derived_figures(figures_by_day[d]), **figures_by_day[d]} for d in sorted(figures_by_day)
            if first <= d < day and is_healthy(figures_by_day[d])}


@dataclass(frozen=True)
class DayHealth:
    """The verdict on one day: its checks, the window it was compared with, whether it was accepted."""

    day: str
    checks: tuple[Check, ...]
    window: tuple[str, ...]
    accepted: bool       # --accept-day-health named this day

    @property
    def breaches(self) -> list[Check]:
        return [c for c in self.checks if c.breached]

    @property
    def stops(self) -> bool:
        return bool(self.breaches) and not self.accepted

    def figures(self) -> dict[str, float]:
        """What the data-quality table records: every check's value, the breach count, the override."""
        result = {f"health:{c.metric}": c.value for c in self.checks}
        result.update({"day_health:window_days": float(len(self.window)), BREACHED: float(len(self.breaches)),
                       OVERRIDDEN: float(bool(self.breaches) and self.accepted)})
        return result

    def report(self) -> str:
        window = f"{self.window[0]}..{self.window[-1]} ({len(self.window)} days)" if self.window else "none yet"
        lines = [f"day health {self.day}: window {window}; {len(self.checks)} checks, "
                 f"{sum(c.enforced for c in self.checks)} enforced, {len(self.breaches)} breached"
                 + (" (accepted by --accept-day-health)" if self.breaches and self.accepted else "")]
        lines += [f"  BREACH {c.describe()}" for c in self.breaches]
        return "\n".join(lines)

    def error_message(self) -> str:
        return (f"day health of {self.day} breached (window: {', '.join(self.window) or 'none'}):\n"
                + "\n".join(f"  {c.describe()}" for c in self.breaches)
                + f"\nThe day's examples are written but it is not complete (no data-quality record): later days "
                  f"and training wait for it. Fix the input and extract {self.day} again, raise a threshold "
                  f"(--set day_health.<name>=...; conf/extract.yaml), or accept the day as it is with "
                  f"--accept-day-health {self.day} (recorded in the data-quality table).")


def assess_day(day: str, figures: dict[str, float], earlier: dict[str, dict[str, float]], config: DayHealthConfig,
               stats_window_days: int, accepted_days) -> DayHealth:
    """`figures` (completed here with `derived_figures`) against the window of `earlier` days."""
    figures.update(derived_figures(figures))
    window = window_of(day, earlier, config.window_days)
    checks = check_day(figures, list(window.values()), config, stats_window_days) if config.enabled else []
    return DayHealth(day, tuple(checks), tuple(window), dt.date.fromisoformat(day) in set(accepted_days))


LABELS = ("label_rate:play", "label_mean:watch_ratio", "label_rate:share", "label_rate:comment")


def check_day(figures: dict[str, float], window: list[dict[str, float]], config: DayHealthConfig,
              stats_window_days: int) -> list[Check]:
    """Every check of one day (`figures`: its data-quality figures with `derived_figures`) against
    the figures of its window's days (possibly none: then only the absolute checks).
    `stats_window_days`: the history features' window (they are compared once it is full)."""
    checks = [Check("quarantine_rate", figures["quarantine_rate"], config.max_quarantine_rate, "max", True)]
    if window:
        checks += _volume_and_quarantine_checks(figures, window, config)
        examples = figures.get("examples", 0.0)
        window_examples = sum(day.get("examples", 0.0) for day in window)
        large = min(examples, window_examples) >= config.min_examples_for_distance
        checks += _label_checks(figures, window, config)
        checks += _distribution_checks(figures, window, config, large,
                                       _full_history(figures, window, stats_window_days))
    if figures.get("lines_read", 0.0) < config.min_lines_read:
        checks = [replace(check, enforced=False) for check in checks]
    return checks


def _volume_and_quarantine_checks(figures, window, config: DayHealthConfig) -> list[Check]:
    checks = []
    for metric in ("lines_read", "examples"):
        median = statistics.median(day.get(metric, 0.0) for day in window)
        if median > 0:
            ratio = figures.get(metric, 0.0) / median
            checks += [Check(f"{metric}_ratio", ratio, config.min_volume_ratio, "min", True),
                       Check(f"{metric}_ratio", ratio, config.max_volume_ratio, "max", True)]
    base = statistics.fmean(day["quarantine_rate"] for day in window)
    checks.append(Check("quarantine_rate_increase", figures["quarantine_rate"] - base,
                        config.max_quarantine_rate_increase, "max", True))
    reasons = {k for day in [figures, *window] for k in day if k.startswith("quarantined:")}
    for reason in sorted(reasons):
        def rate(day):
            return day.get(reason, 0.0) / day["lines_read"] if day.get("lines_read") else 0.0
        checks.append(Check(f"quarantine_rate_increase:{reason.split(':', 1)[1]}",
                            rate(figures) - statistics.fmean(rate(day) for day in window),
                            config.max_reason_rate_increase, "max", True))
    return checks


def _label_checks(figures, window, config: DayHealthConfig) -> list[Check]:
    """Relative change of each label's rate (mean for watch_ratio) against the window's
    example-weighted mean, enforced when it is also `label_z` standard errors (two-sample) away."""
    checks = []
    n = figures.get("examples", 0.0)
    for label in LABELS:
        days = [day for day in window if day.get(label) is not None and day.get("examples")]
        if label not in figures or not days:
            continue
        total = sum(day["examples"] for day in days)
        base = sum(day[label] * day["examples"] for day in days) / total
        if base <= 0:
            continue
        change = abs(figures[label] / base - 1.0)
        # two-sample standard error of the difference with the pooled rate (a bound for a mean in
        # [0, 1] too): the window's rate is an estimate as well, and a rare label (comment ~0.2%)
        # over a small window is a few events
        pooled = (figures[label] * n + base * total) / max(n + total, 1.0)
        error = math.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / max(n, 1.0) + 1 / total))
        significant = abs(figures[label] - base) >= config.label_z * error
        checks.append(Check(f"label_change:{label.split(':', 1)[1]}", change, config.max_label_change, "max",
                            significant))
    return checks


def _full_history(figures, window, stats_window_days: int) -> bool:
    return all(day.get("history_days_available", 0.0) >= stats_window_days for day in [figures, *window])


def _distribution_checks(figures, window, config: DayHealthConfig, large: bool, full_history: bool) -> list[Check]:
    """PSI / L-infinity of each feature, OOV and new-value shares, against the window's summed
    histograms. History features are enforced only once every day compared has a full history
    window (before that they grow by design)."""
    mine, theirs = histograms(figures), summed([histograms(day) for day in window])
    kinds = {c.name: c.kind for c in S.EXAMPLE_COLUMNS}
    checks = []
    for feature in sorted(set(mine) & set(theirs)):
        if feature.startswith(NEW_VOCABULARY) or feature in config.distance_exempt_features:
            continue
        enforced = large and (full_history or "_hist_" not in feature)
        if kinds.get(feature) == "numeric":
            checks.append(Check(f"psi:{feature}", psi(theirs[feature], mine[feature]), config.max_psi, "max",
                                enforced))
        else:
            checks.append(Check(f"linf:{feature}", linf(theirs[feature], mine[feature]), config.max_linf, "max",
                                enforced))
    for key in sorted(k for k in figures if k.startswith(("oov_rate:", "new_vocabulary_share:"))):
        days = [day[key] for day in window if key in day]
        if not days:
            continue
        threshold = config.max_oov_rate_increase if key.startswith("oov") else config.max_new_vocabulary_increase
        checks.append(Check(f"{key.split(':')[0]}_increase:{key.split(':', 1)[1]}",
                            figures[key] - statistics.fmean(days), threshold, "max", large))
    return checks
