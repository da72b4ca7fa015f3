"""`ple extract` on the hand-written scenario: labels, quarantine, reconciliation,
idempotency, point-in-time statistics and stable vocabulary ids.

One module-scoped run (extract PREV, then DAY twice, then DAY again after editing
its raw lines) keeps the whole module to a handful of Spark jobs.
"""

from __future__ import annotations

import shutil

import pytest
from pyspark.sql import functions as F

from feature_eng import schema as S
from jobs import extract
from ple_runtime.lake import Lake
from tests.extraction import scenario as sc


def _run(data_dir, *dates) -> None:
    for day in dates:
        assert extract.main(["--data-dir", str(data_dir), "--date", day]) == 0


def _rows(spark, path, day=None, order="impression_id"):
    df = spark.read.format("delta").load(path)
    if day:
        df = df.where(F.col("dt") == day)
    return [r.asDict() for r in df.orderBy(order).collect()]


@pytest.fixture(scope="module")
def runs(spark, tmp_path_factory):
    data = tmp_path_factory.mktemp("scenario")
    sc.write_scenario(data / "raw")
    lake = Lake(str(data))
    _run(data, sc.PREV, sc.DAY)
    first = {
        "examples": _rows(spark, lake.examples, sc.DAY),
        "prev_examples": _rows(spark, lake.examples, sc.PREV),
        "quarantine": _rows(spark, lake.quarantine, sc.DAY, order="raw_line"),
        "dq": {r["metric"]: r["value"] for r in _rows(spark, lake.data_quality, sc.DAY, order="metric")},
        "vocabulary": _rows(spark, lake.vocabulary, order=["vocabulary", "value"]),
        "examples_count": spark.read.format("delta").load(lake.examples).count(),
        "quarantine_count": spark.read.format("delta").load(lake.quarantine).count(),
    }
    _run(data, sc.DAY)  # a rerun of the same day
    second = {
        "examples": _rows(spark, lake.examples, sc.DAY),
        "quarantine": _rows(spark, lake.quarantine, sc.DAY, order="raw_line"),
        "vocabulary": _rows(spark, lake.vocabulary, order=["vocabulary", "value"]),
        "examples_count": spark.read.format("delta").load(lake.examples).count(),
        "quarantine_count": spark.read.format("delta").load(lake.quarantine).count(),
        "dq_count": spark.read.format("delta").load(lake.data_quality).where(F.col("dt") == sc.DAY).count(),
        "dq_first_count": len(first["dq"]),
    }
    # Change DAY's own events (and NEXT's): a new play of imp-c inside the window, a new user.
    day_dir = data / "raw" / "events" / f"dt={sc.DAY}"
    sc.write_lines(day_dir / "part-2.json", [
        sc.play("extra1", "imp-c", "2026-03-02T08:10:00Z", "u1", "v3", 60000),
        sc.imp("extra2", "imp-new", "2026-03-02T13:00:00Z", "u9", "v1"),
    ])
    sc.write_lines(data / "raw" / "events" / f"dt={sc.NEXT}" / "part-9.json",
                   [sc.imp("extra3", "imp-next", "2026-03-03T10:00:00Z", "u1", "v2")])
    # PREV read DAY's partition as its next day: with DAY's changed, both are extracted again, in order
    assert extract.main(["--data-dir", str(data), "--start", sc.PREV, "--end", sc.DAY]) == 0
    third = {"examples": _rows(spark, lake.examples, sc.DAY),
             "vocabulary": _rows(spark, lake.vocabulary, order=["vocabulary", "value"])}
    yield {"first": first, "second": second, "third": third, "data": data}
    shutil.rmtree(data, ignore_errors=True)


def test_labels_of_the_day(runs):
    examples = {r["impression_id"]: r for r in runs["first"]["examples"]}
    assert set(examples) == set(sc.EXPECTED_DAY_LABELS)
    for impression_id, (play, ratio, share, comment) in sc.EXPECTED_DAY_LABELS.items():
        row = examples[impression_id]
        assert (row["play"], row["share"], row["comment"]) == (play, share, comment), impression_id
        if ratio is None:
            assert row["watch_ratio"] is None, impression_id
        else:
            assert row["watch_ratio"] == pytest.approx(ratio, abs=1e-6), impression_id
    assert examples["imp-a"]["watch_ms"] == 50000
    assert examples["imp-c"]["watch_ms"] == 0  # its play came after the window
    assert all(r["dt"] == sc.DAY for r in examples.values())


def test_late_impressions_and_engagement_land_on_their_own_day(runs):
    prev = {r["impression_id"]: r for r in runs["first"]["prev_examples"]}
    assert set(prev) == set(sc.EXPECTED_PREV_LABELS)
    for impression_id, (play, ratio, share, comment) in sc.EXPECTED_PREV_LABELS.items():
        row = prev[impression_id]
        assert (row["play"], row["share"], row["comment"]) == (play, share, comment), impression_id
        assert (row["watch_ratio"] is None) == (ratio is None)
        if ratio is not None:
            assert row["watch_ratio"] == pytest.approx(ratio)


def test_watch_ratio_is_null_exactly_outside_its_mask(runs):
    for row in runs["first"]["examples"] + runs["first"]["prev_examples"]:
        assert (row["watch_ratio"] is None) == (row["play"] == 0)
        if row["watch_ratio"] is not None:
            assert 0.0 <= row["watch_ratio"] <= 1.0


def test_every_bad_line_is_quarantined_with_its_reason(runs):
    quarantine = runs["first"]["quarantine"]
    got = sorted((r["raw_line"], r["reason"]) for r in quarantine)
    assert got == sorted(sc.DAY_BAD)
    assert all(r["dt"] == sc.DAY and r["source_file"].endswith("part-1.json") for r in quarantine)


def test_counts_reconcile(runs):
    dq = runs["first"]["dq"]
    assert dq["lines_read"] == sc.day_lines_read()
    assert dq["duplicates"] == sc.DAY_DUPLICATES
    assert dq["quarantined"] == len(sc.DAY_BAD)
    assert dq["accepted"] + dq["quarantined"] + dq["duplicates"] == dq["lines_read"]
    assert dq["quarantined:malformed_json"] == 2
    assert dq["examples"] == len(sc.EXPECTED_DAY_LABELS)
    assert dq["next_partition_read"] == 1 and dq["previous_partition_read"] == 1
    assert dq["engagement_attributed_from_next_partition"] == 1  # imp-b's play
    assert dq["engagement_outside_window"] == 1                  # imp-c's play at +7 h


def test_rerun_is_idempotent(runs):
    first, second = runs["first"], runs["second"]
    assert second["examples"] == first["examples"]
    assert second["quarantine"] == first["quarantine"]
    assert second["vocabulary"] == first["vocabulary"]
    assert second["examples_count"] == first["examples_count"]
    assert second["quarantine_count"] == first["quarantine_count"]
    assert second["dq_count"] == second["dq_first_count"]
    ids = [r["impression_id"] for r in second["examples"]]
    assert len(ids) == len(set(ids))


def test_history_features_come_only_from_earlier_days(runs):
    first = {r["impression_id"]: r for r in runs["first"]["examples"]}
    third = {r["impression_id"]: r for r in runs["third"]["examples"]}
    # the edit changed DAY's labels and rows ...
    assert third["imp-c"]["play"] == 1 and first["imp-c"]["play"] == 0
    assert "imp-new" in third
    # ... but not one history statistic of the rows that were already there
    for impression_id, row in first.items():
        for column in S.HIST_STAT_COLUMNS:
            assert third[impression_id][column] == row[column], (impression_id, column)


def test_history_statistics_values(runs):
    """u1 had 2 impressions on PREV (1 played, ratio 1.0); priors are PREV's global rates. PREV is
    the one day of DAY's 7-day window that the lake holds: counts are per that 1 day, and the
    prior weighs 1/7 of its 20 pseudo-impressions (20 over a full window), so a 1-day window is
    shrunk as much as a full one."""
    rows = {r["impression_id"]: r for r in runs["first"]["examples"]}
    prev = runs["first"]["prev_examples"]
    w = 20.0 * 1 / 7
    prior_play = sum(r["play"] for r in prev) / len(prev)
    prior_ratio = sum(r["watch_ratio"] for r in prev if r["watch_ratio"] is not None) / sum(r["play"] for r in prev)
    u1 = rows["imp-a"]
    assert u1["user_hist_play_rate"] == pytest.approx((1 + w * prior_play) / (2 + w), rel=1e-5)
    assert u1["user_hist_watch_ratio"] == pytest.approx((1.0 + w * prior_ratio) / (1 + w), rel=1e-5)
    # 2 impressions per day present, not 2 / 7 (a count must not shrink or grow with the lake's age)
    dq = runs["first"]["dq"]
    assert (dq["history_days_available"], dq["history_window_full"]) == (1, 0)
    assert u1["user_hist_daily_impressions_log"] == pytest.approx(__import__("math").log1p(2), rel=1e-5)
    # u3 has no history: cold, exactly the prior
    u3 = rows["imp-d"]
    assert u3["user_hist_daily_impressions_log"] == 0.0
    assert u3["user_hist_play_rate"] == pytest.approx(prior_play, rel=1e-5)


def test_vocabulary_ids_are_stable_and_unique(runs):
    first, third = runs["first"]["vocabulary"], runs["third"]["vocabulary"]
    by_key = {(r["vocabulary"], r["value"]): r["id"] for r in third}
    for row in first:  # nothing given before changed afterwards
        assert by_key[(row["vocabulary"], row["value"])] == row["id"]
    for name in S.VOCABULARIES:
        ids = sorted(r["id"] for r in third if r["vocabulary"] == name)
        assert ids == list(range(1, len(ids) + 1)), name  # dense, from 1; 0 is OOV
    assert ("user_id", "u9") in by_key and ("user_id", "u9") not in {(r["vocabulary"], r["value"]) for r in first}
    # the same user has the same id on both days
    prev_u1 = {r["user_idx"] for r in runs["first"]["prev_examples"] if r["user_id"] == "u1"}
    day_u1 = {r["user_idx"] for r in runs["first"]["examples"] if r["user_id"] == "u1"}
    assert prev_u1 == day_u1 == {by_key[("user_id", "u1")]}
    # unknown user: its dims are OOV
    u3 = next(r for r in runs["first"]["examples"] if r["user_id"] == "u3")
    assert u3["age_bucket_idx"] == u3["gender_idx"] == u3["region_idx"] == S.OOV_ID


def test_context_features(runs):
    rows = {r["impression_id"]: r for r in runs["first"]["examples"]}
    assert rows["imp-a"]["hour"] == 10 and rows["imp-c"]["hour"] == 8
    assert rows["imp-a"]["day_of_week"] == 0  # 2026-03-02 is a Monday
    assert rows["imp-a"]["position_bucket"] == 4
    assert rows["imp-c"]["position_bucket"] == S.POSITION_BUCKETS - 1  # position 40
    assert rows["imp-b"]["duration_bucket"] == 1   # 10 s
    assert rows["imp-c"]["duration_bucket"] == 4   # 120 s
    assert rows["imp-a"]["item_age_log"] > 0


def test_examples_table_matches_schema(spark, runs):
    table = spark.read.format("delta").load(Lake(str(runs["data"])).examples)
    assert [(f.name, f.dataType) for f in table.schema.fields] == \
        [(f.name, f.dataType) for f in S.EXAMPLES_SCHEMA.fields]
