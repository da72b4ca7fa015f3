"""A range of days in one Spark application writes exactly what day-by-day runs write; each
raw partition is parsed once; re-extracting a day leaves later days alone; days run in order."""

from __future__ import annotations

import shutil

import pytest
from pyspark.sql import functions as F

from extraction.extract import passes, shuffle_partitions
from jobs import extract
from jobs import generate as generate_job
from ple_runtime.lake import Lake

DAYS = ["2026-01-05", "2026-01-06", "2026-01-07"]
TABLES = ("examples", "quarantine", "data_quality", "vocabulary")


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    data = tmp_path_factory.mktemp("generated")
    assert generate_job.main(["--data-dir", str(data), "--users", "150", "--items", "60", "--days", str(len(DAYS)),
                              "--impressions-per-day", "800", "--start-date", DAYS[0], "--fault-rate", "0.004"]) == 0
    return data / "raw"


def _lake_with(raw, tmp_path_factory, name):
    data = tmp_path_factory.mktemp(name)
    shutil.copytree(raw, data / "raw")
    return data


def _table_rows(spark, data, name, day=None, copied_from=None):
    """Rows sorted; the data dir in a path (quarantine's source_file) replaced by <data>, and so is
    the folder a copied lake came from (rows written before the copy name it)."""
    return _rows_per_day(spark, data, name, None if day is None else [day], copied_from)[day]


def _rows_per_day(spark, data, name, days, copied_from=None) -> dict:
    """_table_rows of each of `days` (None: of the whole table, under the key None), from one read."""
    df = spark.read.format("delta").load(getattr(Lake(str(data)), name))
    if days is not None:
        df = df.where(F.col("dt").isin(days))
    folders = [str(data)] + ([str(copied_from)] if copied_from else [])

    def neutral(value):
        for folder in folders:
            value = value.replace(folder, "<data>")
        return value

    per_day = {day: [] for day in (days if days is not None else [None])}
    for row in df.collect():
        per_day[row["dt"] if days is not None else None].append(
            tuple(neutral(v) if isinstance(v, str) else v for v in row))
    return {day: sorted(rows) for day, rows in per_day.items()}


@pytest.fixture(scope="module")
def lakes(spark, raw, tmp_path_factory):
    """The same days extracted two ways: in one run of passes of 2 + 1 days (the first pass's second
    day reads its history from the pass, the third day from the lake the first pass wrote), and one
    day at a time. (One pass of all three days adds no path to these: tests/airflow's lake is one.)"""
    ranged = _lake_with(raw, tmp_path_factory, "ranged")
    configured = spark.conf.get("spark.sql.shuffle.partitions")
    # its passes with more than the session's one shuffle partition (one per 20 KB of raw files: 4 and 2 for
    # its passes of ~34 KB a day), as a large day's: the same rows (test_a_range_writes_exactly_...)
    figures = extract.run(extract.ExtractConfig(data_dir=str(ranged), start=DAYS[0], end=DAYS[-1], days_per_pass=2,
                                                raw_mb_per_shuffle_partition=0.02))
    assert spark.conf.get("spark.sql.shuffle.partitions") == configured   # the shared session's own, back
    daily = _lake_with(raw, tmp_path_factory, "daily")
    for day in DAYS:
        assert extract.main(["--data-dir", str(daily), "--date", day]) == 0
        if day == DAYS[0]:  # the lake after its first day, for the order check (copied again by that test)
            first_day_only = tmp_path_factory.mktemp("first_day_only") / "data"
            shutil.copytree(daily, first_day_only)
    return ranged, daily, figures, first_day_only


def test_a_range_writes_exactly_what_day_by_day_runs_write(spark, lakes):
    ranged, daily, figures, _ = lakes
    ranged_rows = {name: _table_rows(spark, ranged, name) for name in TABLES}  # each table read once
    assert len(figures) == len(DAYS)
    assert [(f["lines_read"], f["examples"]) for f in figures] == [
        (dq[(day, "lines_read")], dq[(day, "examples")])
        for dq in [{(r[0], r[1]): r[2] for r in ranged_rows["data_quality"]}] for day in DAYS]
    for name in TABLES:
        assert len(ranged_rows[name]) > 0, name
        assert ranged_rows[name] == _table_rows(spark, daily, name), name
    # the later days did use earlier days' history, and new ids (the comparison is not vacuous)
    history_days = {r[0]: r[2] for r in ranged_rows["data_quality"] if r[1] == "history_days_available"}
    assert history_days == {DAYS[0]: 0, DAYS[1]: 1, DAYS[2]: 2}
    first_seen = {r[3] for r in ranged_rows["vocabulary"]}
    assert len(first_seen) > 1, first_seen


def test_passes_cut_a_range_by_days_and_raw_size(raw, spark):
    from extraction.raw_logs import RawLogs

    plans = RawLogs(spark, str(raw)).plan(DAYS, require_next_day=False, allow_incomplete=False)
    day_bytes = [sum(e.size for e in plans[day].day.files) for day in DAYS]
    assert passes(DAYS, plans, 8, 2**40) == [DAYS]
    assert passes(DAYS, plans, 2, 2**40) == [DAYS[:2], DAYS[2:]]
    assert passes(DAYS, plans, 8, day_bytes[0] + day_bytes[1]) == [DAYS[:2], DAYS[2:]]
    assert passes(DAYS, plans, 8, 1) == [[day] for day in DAYS]  # a day larger than the cap: alone


def test_a_day_that_does_not_add_up_ends_the_pass_before_it(spark, raw):
    """Reconciliation is per day: a pass stops before the first day whose lines do not add up,
    and its outputs hold only the days before (the job writes them, then fails)."""
    from extraction.persistence import Checkpoints
    from extraction.raw_logs import ParsedPartitions, RawLogs
    from feature_eng.extract_pass import PassInputs, extract_days
    from feature_eng.features import HISTORY_COLUMNS, parse_items, parse_users
    from feature_eng.quality import ReconciliationError
    from feature_eng.schema import EXAMPLES_SCHEMA, VOCABULARY_SCHEMA
    from feature_eng.validation import parse_partition

    logs = RawLogs(spark, str(raw))
    plans = logs.plan(DAYS, require_next_day=False, allow_incomplete=False)
    config = extract.ExtractConfig(data_dir=str(raw.parent), start=DAYS[0], end=DAYS[-1])
    with Checkpoints() as scope:
        items, users = parse_items(logs.read_snapshot("items")), parse_users(logs.read_snapshot("users"))
        parsed = ParsedPartitions(logs, plans, lambda lines, keep: parse_partition(lines, items, config, keep),
                                  scope.checkpoint, scope.release)
        lines, lines_read = parsed.lines_for(DAYS)
        lines_read = {**lines_read, DAYS[1]: lines_read[DAYS[1]] + 1}  # one line more than the day accounts for
        inputs = PassInputs(tuple(DAYS), lines, lines_read, items, users,
                            spark.createDataFrame([], VOCABULARY_SCHEMA),
                            spark.createDataFrame([], EXAMPLES_SCHEMA).select(*HISTORY_COLUMNS))
        outputs = extract_days(inputs, config, scope)
        assert outputs.days == (DAYS[0],) and list(outputs.figures) == [DAYS[0]]
        assert isinstance(outputs.error, ReconciliationError) and DAYS[1] in str(outputs.error)
        assert {r["dt"] for r in outputs.examples.select("dt").distinct().collect()} == {DAYS[0]}
        assert {r["first_seen_dt"] for r in outputs.new_vocabulary.collect()} == {DAYS[0]}
        assert {r["dt"] for r in outputs.quarantine.select("dt").distinct().collect()} <= {DAYS[0]}


def test_reextracting_a_day_leaves_later_days_unchanged(spark, lakes, tmp_path):
    # A copy: the module's lakes stay as extracted for the other tests, whatever the order they run in.
    daily, original = tmp_path / "daily", lakes[1]
    shutil.copytree(original, daily)
    before = {name: _rows_per_day(spark, daily, name, DAYS[1:], original) for name in TABLES[:3]}
    vocabulary = _table_rows(spark, daily, "vocabulary", copied_from=original)
    assert extract.main(["--data-dir", str(daily), "--date", DAYS[1]]) == 0
    for name in TABLES[:3]:
        after_per_day = _rows_per_day(spark, daily, name, DAYS[1:], original)
        for day in DAYS[1:]:
            after = after_per_day[day]
            if name == "data_quality" and day == DAYS[1]:
                # the rerun adds no vocabulary value (the first run did): the only figure that moves
                moved = {r[1]: r[2] for r in set(after) ^ set(before[name][day])}
                assert set(moved) == {"vocabulary_new_values"}, moved
                assert dict((r[1], r[2]) for r in after)["vocabulary_new_values"] == 0
                continue
            # the day itself is identical too: its history window (days before it) ignores later days
            assert after == before[name][day], (name, day)
    assert _table_rows(spark, daily, "vocabulary", copied_from=original) == vocabulary


def test_each_partition_is_parsed_once_and_dropped_when_no_day_needs_it(spark, raw):
    from extraction.persistence import Checkpoints
    from extraction.raw_logs import ParsedPartitions, RawLogs

    logs = RawLogs(spark, str(raw))
    plans = logs.plan(DAYS[1:], require_next_day=False, allow_incomplete=False)
    parsed_days, released = [], []

    def parse(lines, keep_raw):
        parsed_days.extend(r["dt"] for r in lines.select("dt").distinct().collect())
        return lines

    with Checkpoints() as scope:
        partitions = ParsedPartitions(logs, plans, parse, scope.checkpoint, lambda df: released.append(
            sorted(r["dt"] for r in df.select("dt").distinct().collect())))
        for day in DAYS[1:]:
            lines, lines_read = partitions.lines_for([day])
            assert lines_read[day] == lines.where(F.col("dt") == day).count() > 0
            assert sorted({r["dt"] for r in lines.select("dt").distinct().collect()}) == [
                d for d in DAYS if abs(DAYS.index(d) - DAYS.index(day)) <= 1]
            assert {r["day"] for r in lines.select("day").distinct().collect()} == {day}
    assert sorted(parsed_days) == DAYS  # D1-1 .. D2+1 (D2 + 1 is not there), each once
    # parsed together for the first day; once the second day no longer reads D-1, that frame goes
    # (the partitions still needed were kept as a copy of their own)
    assert released == [DAYS]

    # several days at once: a partition's lines are there once for each day that reads it
    with Checkpoints() as scope:
        lines, lines_read = ParsedPartitions(logs, plans, parse, scope.checkpoint, lambda df: None).lines_for(DAYS[1:])
        per_day = {(r["dt"], r["day"]): r["count"] for r in lines.groupBy("dt", "day").count().collect()}
    assert per_day[(DAYS[2], DAYS[1])] == per_day[(DAYS[2], DAYS[2])] == lines_read[DAYS[2]] > 0
    assert (DAYS[0], DAYS[1]) in per_day and (DAYS[0], DAYS[2]) not in per_day


def test_days_run_in_order_unless_a_gap_is_allowed(spark, lakes, tmp_path, capsys):
    data = tmp_path / "gap"   # a copy of a lake that holds the first day only
    shutil.copytree(lakes[3], data)
    capsys.readouterr()
    assert extract.main(["--data-dir", str(data), "--date", DAYS[2]]) == 1
    err = capsys.readouterr().err
    assert f"not {DAYS[1]}" in err and "--allow-gap" in err
    assert _table_rows(spark, data, "examples", DAYS[2]) == []  # nothing written
    assert extract.main(["--data-dir", str(data), "--date", DAYS[2], "--allow-gap"]) == 0
    assert _table_rows(spark, data, "examples", DAYS[2]) != []
    # (re-extracting an earlier day is in order: test_reextracting_a_day_leaves_later_days_unchanged)


def test_a_pass_gets_a_shuffle_partition_per_raw_mb_and_never_fewer_than_the_session():
    mb = 2**20
    assert shuffle_partitions(914 * mb, 64 * mb, 4) == 15   # a 20M-impression day's raw files
    assert shuffle_partitions(174 * mb, 64 * mb, 4) == 4    # a 5M-event day: the session's 4
    assert shuffle_partitions(10 * mb, 64 * mb, 200) == 200  # a cluster's setting is never lowered
