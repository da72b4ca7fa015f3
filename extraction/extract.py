"""The extract stage (`ple extract --date D`, or `--start D1 --end D2`): raw event logs ->
validated, labelled examples in Delta.

Reads `<raw>/events/dt=D/` plus the partitions of D-1 and D+1 when present (late
engagement of D's impressions lands in D+1; D-1 is needed to tell a late engagement from
an orphan and to catch a retry delivered after midnight), the item and user snapshots, the
vocabulary table and the examples of the days before D (history statistics). Writes, for
dt = D only and replacing what a previous run wrote: <lake>/examples, <lake>/quarantine,
<lake>/data_quality; adds new values to <lake>/vocabulary. A range of days runs as one
Spark application, each raw partition parsed once, and consecutive days go through the
same Spark jobs (passes of up to `days_per_pass` days), each exactly as if extracted alone
and in order. Everything is checked before the first write; see docs/DATA.md.
"""

from __future__ import annotations

import datetime as dt
import math
import sys
import time
from functools import reduce

from pydantic import Field, model_validator

from feature_eng.health import DayHealthConfig
from feature_eng.params import ExtractParams, shift_day
from ple_runtime.config import JobConfig, Location
from ple_runtime.errors import DAY_UNHEALTHY, InputError, StageError
from ple_runtime.lake import Lake, default_data_dir


class DayHealthError(StageError):
    """A day breached its health thresholds (feature_eng/health.py); the days before it are complete.
    Retrying cannot help (the DAG does not retry it): fix the input or accept the day."""

    exit_code = DAY_UNHEALTHY


class ExtractConfig(JobConfig, ExtractParams):
    """Raw logs of one day (or a range of days, in order) -> examples, quarantine, data quality."""

    data_dir: Location = Field(default_factory=default_data_dir,
                               description="data root: <data>/raw is read, <data>/lake is written")
    raw_dir: Location | None = Field(None, description="raw logs folder (default: <data_dir>/raw)")
    date: dt.date | None = Field(None, description="the day to extract (YYYY-MM-DD)")
    start: dt.date | None = Field(None, description="first day of a range (with --end), extracted in order")
    end: dt.date | None = Field(None, description="last day of a range (inclusive)")
    require_next_day: bool = Field(False, description="fail when D+1's partition is absent or incomplete "
                                                      "(labels would miss late engagement)")
    allow_incomplete: bool = Field(False, description="read a day's partition even without its _SUCCESS marker "
                                                      "(logs written by hand or by a shipper that writes none)")
    allow_gap: bool = Field(False, description="extract D even when the lake holds earlier days but not D-1 "
                                               "(D's history features and new ids then differ from an in-order run)")
    days_per_pass: int = Field(8, ge=1, le=31, description="days of a range extracted by the same Spark jobs "
                                                           "(one pass; the per-job costs are paid once per pass)")
    day_health: DayHealthConfig = Field(default_factory=DayHealthConfig,
                                        description="thresholds of the checks of each day against its trailing days")
    accept_day_health: list[dt.date] = Field([], description="days to complete even when their health check "
                                                             "breaches (recorded in the data-quality table)")
    pass_max_raw_mb: int = Field(256, ge=1, description="a pass also ends before its days' raw files exceed this "
                                                        "many MB (memory: a pass keeps its partitions' lines)")
    raw_mb_per_shuffle_partition: float = Field(
        64.0, gt=0, description="a pass's shuffles get a partition per this many MB of its raw files, at least "
                                "spark.sql.shuffle.partitions: the labels' hashed joins hold one partition of "
                                "their smaller side in memory and cannot spill (a 20M-impression day's 4 did not fit)")
    row_group_mb: float = Field(8.0, gt=0, description="Parquet row groups of the examples end at about this "
                                                       "many MB (140-200k rows of the video schema) whatever a "
                                                       "day's size: training's reader holds a few row groups at "
                                                       "a time, so its memory does not grow with the day")

    @model_validator(mode="after")
    def _one_way_to_name_days(self):
        if (self.date is None) == (self.start is None and self.end is None):
            raise ValueError("give either --date or both --start and --end")
        if self.date is None and (self.start is None or self.end is None or self.start > self.end):
            raise ValueError("--start and --end must both be given, start <= end")
        return self

    def days(self) -> list[str]:
        if self.date is not None:
            return [self.date.isoformat()]
        n = (self.end - self.start).days + 1
        return [(self.start + dt.timedelta(days=i)).isoformat() for i in range(n)]


def run(config: ExtractConfig, spark=None) -> list[dict[str, float]]:
    """Extract every day of `config`, in order, in one Spark application; returns the data-quality
    figures of each day. Raises InputError (inputs, tables), ReconciliationError or DayHealthError;
    the days done before the one at fault are completed (quarantine and data quality written)."""
    from extraction.persistence import Checkpoints
    from extraction.raw_logs import ParsedPartitions, RawLogs
    from extraction.tables import LakeTables
    from feature_eng.extract_pass import PassInputs, extract_days
    from feature_eng.features import parse_items, parse_users
    from feature_eng.validation import parse_partition
    from ple_runtime.spark import get_spark

    spark = spark or get_spark("ple-extract")
    _require_utc(spark)
    lake = Lake(config.data_dir)
    tables, raw = LakeTables(spark, lake, int(config.row_group_mb * 2**20)), RawLogs(spark, config.raw_dir or lake.raw)
    days = config.days()
    plans, earlier = _check_inputs(config, tables, raw, days)
    results, quarantines, health_error = [], [], None
    with Checkpoints() as run_scope, _ShufflePartitions(spark, config.raw_mb_per_shuffle_partition) as shuffle:
        items = run_scope.persist(parse_items(raw.read_snapshot("items")))
        users = run_scope.persist(parse_users(raw.read_snapshot("users")))
        if items.count() == 0:
            raise InputError(f"the item snapshot under {raw.root}/items holds no valid item")
        parsed = ParsedPartitions(raw, plans, lambda lines, keep_raw: parse_partition(lines, items, config, keep_raw),
                                  run_scope.checkpoint, run_scope.release)
        try:
            for pass_days in passes(days, plans, config.days_per_pass, config.pass_max_raw_mb * 2**20):
                timer = _StepTimer(spark, pass_days, shuffle.size_for(_raw_bytes(plans, pass_days)))
                for day in pass_days:
                    _warn_incomplete(plans[day], day)
                lines, lines_read = parsed.lines_for(pass_days)
                timer("parse raw partitions")
                vocabulary, vocabulary_version = tables.pinned_vocabulary()
                inputs = PassInputs(tuple(pass_days), lines, lines_read, items, users, vocabulary,
                                    tables.history(pass_days[0], config),
                                    {day: plans[day].recorded_figures() for day in pass_days})
                with Checkpoints() as pass_scope:
                    outputs = extract_days(inputs, config, pass_scope)
                    timer("classify, reconcile, label, featurise")
                    figures = tables.write_examples(outputs)
                    quarantines.append(run_scope.checkpoint(outputs.quarantine, eager=True))
                    timer("write vocabulary and examples")
                    profiles = tables.day_profiles(list(outputs.days))
                    timer("day health profiles")
                health_error = _complete_days(outputs.days, figures, profiles, earlier, config, results,
                                             lambda day, f: _report(day, f, timer, vocabulary_version))
                if health_error is not None:
                    break
                if outputs.error is not None:
                    raise outputs.error
        finally:  # the days done, even when a later one failed: their data-quality record completes them
            if results or health_error is not None:
                _write_quality(tables, days[:len(results) + (health_error is not None)], quarantines, results)
    if health_error is not None:
        raise health_error
    return results


def _check_inputs(config: ExtractConfig, tables, raw, days: list[str]):
    """Before any work: the lake's schemas, the days' order, their raw partitions (each day's plan), and
    the data-quality figures of the health window before the first day (which must have read this
    copy of the first day's partition as its next day); (plans, earlier figures by day)."""
    from extraction.raw_logs import check_next_day_copy

    tables.check_schemas()
    tables.check_order(days[0], config.allow_gap)
    plans = raw.plan(days, config.require_next_day, config.allow_incomplete)
    day_before = shift_day(days[0], -1)
    earlier = tables.quality_figures(shift_day(days[0], -config.day_health.window_days), day_before)
    check_next_day_copy(plans[days[0]], earlier.get(day_before))
    return plans, earlier


def _write_quality(tables, days: list[str], quarantines: list, results: list[dict]) -> None:
    """Quarantine rows of `days`, data-quality records of the first len(results) of them (a last
    day that failed its health check gets its quarantine rows, the evidence, but no record)."""
    from pyspark.sql import DataFrame

    started = time.perf_counter()
    quarantine = reduce(DataFrame.unionByName, quarantines).where(f"dt <= '{days[-1]}'")
    tables.write_quality(days, quarantine, results)
    print(f"[extract] quarantine and data quality of {len(results)} day(s) written in "
          f"{time.perf_counter() - started:.1f}s; tables: "
          + ", ".join(f"{name} v{version}" for name, version in tables.versions().items()),
          file=sys.stderr, flush=True)


def _complete_days(days, figures, profiles, earlier: dict, config: ExtractConfig, results: list, report):
    """Each day's figures with its profile and health figures, in order, appended to `results`
    (and `earlier`, the next days' window) until a day whose health check stops it: its error."""
    for day in days:
        day_figures = {**figures[day], **profiles[day]}
        error = _check_health(day, day_figures, earlier, config)
        report(day, day_figures)
        if error is not None:
            return error
        results.append(day_figures)
        earlier[day] = day_figures
    return None


def _check_health(day: str, figures: dict[str, float], earlier: dict, config: ExtractConfig):
    """Completes `figures` with the day's health figures; a DayHealthError when the day stops."""
    from feature_eng.health import assess_day

    health = assess_day(day, figures, earlier, config.day_health, config.stats_window_days,
                        config.accept_day_health)
    figures.update(health.figures())
    print(health.report(), file=sys.stderr, flush=True)
    return DayHealthError(health.error_message()) if health.stops else None


UTC_ZONES = ("UTC", "Etc/UTC", "GMT", "Z", "+00:00")


def _require_utc(spark) -> None:
    """Days, hours and ISO times are computed in the session time zone, which must be UTC
    (the project's default; a spark-submit --conf can change it)."""
    zone = spark.conf.get("spark.sql.session.timeZone")
    if zone not in UTC_ZONES:
        raise InputError(f"spark.sql.session.timeZone is {zone!r}: ple extract computes UTC days and hours; "
                           "set it to UTC (--conf spark.sql.session.timeZone=UTC) or leave it unset")


def passes(days: list[str], plans, days_per_pass: int, max_raw_bytes: int) -> list[list[str]]:
    """Consecutive days cut into passes of at most `days_per_pass` days whose own partitions'
    files hold at most `max_raw_bytes` (a day larger than that is a pass of its own)."""
    result: list[list[str]] = []
    size = 0
    for day in days:
        day_bytes = _raw_bytes(plans, [day])
        if result and len(result[-1]) < days_per_pass and size + day_bytes <= max_raw_bytes:
            result[-1].append(day)
            size += day_bytes
        else:
            result.append([day])
            size = day_bytes
    return result


def _raw_bytes(plans, days: list[str]) -> int:
    """Bytes of the days' own raw partitions."""
    return sum(entry.size for day in days for entry in plans[day].day.files)


class _ShufflePartitions:
    """Each pass's `spark.sql.shuffle.partitions`: one per `raw_mb` MB of its raw files, at least the session's
    own setting, which is put back at the end (a session may be shared). The labels' hashed joins
    (feature_eng/labels.py) hold one shuffle partition of their smaller side in memory, where a sort-merge
    join would spill: the partitions must shrink as days grow (4 failed at 20M impressions a day, 914 MB of
    raw files, on a 10g driver)."""

    KEY = "spark.sql.shuffle.partitions"

    def __init__(self, spark, raw_mb: float):
        self.spark, self.raw_bytes_each, self.configured = spark, raw_mb * 2**20, spark.conf.get(self.KEY)

    def __enter__(self) -> "_ShufflePartitions":
        return self

    def size_for(self, raw_bytes: int) -> int:
        partitions = shuffle_partitions(raw_bytes, self.raw_bytes_each, int(self.configured))
        self.spark.conf.set(self.KEY, str(partitions))
        return partitions

    def __exit__(self, *exc) -> None:
        self.spark.conf.set(self.KEY, self.configured)


def shuffle_partitions(raw_bytes: int, raw_bytes_each: float, configured: int) -> int:
    return max(configured, math.ceil(raw_bytes / raw_bytes_each))


def _warn_incomplete(plan, day: str) -> None:
    from extraction.raw_logs import MARKER

    for partition in plan.incomplete():
        print(f"warning: {partition.folder} has no {MARKER} marker yet: read as it is; extract {day} again "
              "once it is complete (see the *_partition_complete data-quality figures)", file=sys.stderr)


class _StepTimer:
    """Prints how long each step of a pass took and how many Spark jobs it ran (stderr), for
    operators and the benchmark."""

    def __init__(self, spark, days: list[str], shuffle_partitions: int):
        self.tracker = spark.sparkContext.statusTracker()
        self.day = days[0] if len(days) == 1 else f"{days[0]}..{days[-1]}"
        self.days = len(days)
        self.last, self.jobs, self.steps = time.perf_counter(), self._job_count(), {}
        print(f"[extract {self.day}] {shuffle_partitions} shuffle partitions", file=sys.stderr, flush=True)

    def _job_count(self) -> int:
        return max(self.tracker.getJobIdsForGroup(None), default=-1) + 1  # job ids count up from 0

    def __call__(self, step: str) -> None:
        now, jobs = time.perf_counter(), self._job_count()
        self.steps[step] = now - self.last
        print(f"[extract {self.day}] {step}: {self.steps[step]:.1f}s, {jobs - self.jobs} Spark jobs",
              file=sys.stderr, flush=True)
        self.last, self.jobs = now, jobs


def _report(day: str, figures: dict[str, float], timer: _StepTimer, vocabulary_version) -> dict:
    """The day's summary table (stdout)."""
    from feature_eng.quality import format_summary

    shown = {k: v for k, v in figures.items() if not k.startswith(("profile:", "health:"))}
    print(format_summary(day, {**shown, "pass_seconds": round(sum(timer.steps.values()), 1),
                               "pass_days": timer.days}))
    print(f"vocabulary read at v{vocabulary_version}", flush=True)
    return figures
