"""Snapshots: the Delta log reader gives exactly Spark's file list at a pinned version, and a
run records (and reads) the version it resolved even when the table moves on."""

from __future__ import annotations

import pandas as pd
import pytest

from conftest import TRAIN_DAYS, VALIDATION_DAY, date_args, record
import training_tables as synth
from ple_runtime.snapshot import (SnapshotError, latest_delta_version, resolve_delta_snapshot,
                               resolve_parquet_snapshot, resolve_with_spark)


def test_log_reader_matches_spark_at_a_version_with_checkpoints_and_removes(spark, tmp_path):
    table = str(tmp_path / "t")
    rows = lambda seed, day: synth.make_rows(300, seed, start_id=seed * 1000, dt=day)  # noqa: E731
    synth.write_delta(spark, rows(1, "2026-02-01"), table, files_per_day=2)
    spark.sql(f"ALTER TABLE delta.`{table}` SET TBLPROPERTIES (delta.checkpointInterval = 2)")
    for seed, day in [(2, "2026-02-02"), (3, "2026-02-03"), (4, "2026-02-02")]:
        synth.write_delta(spark, rows(seed, day), table, files_per_day=2, mode="append")
    # a remove: rewrite one day (replaceWhere) after the checkpoints
    synth.write_delta(spark, rows(5, "2026-02-01"), table, files_per_day=2, replace_where="dt = '2026-02-01'")
    latest = latest_delta_version(table)
    assert any(p.name.endswith(".checkpoint.parquet") for p in (tmp_path / "t" / "_delta_log").iterdir())
    for version in range(latest + 1):
        ours = resolve_delta_snapshot(table, version)
        assert sorted(ours.paths) == resolve_with_spark(spark, table, version), version
    window = resolve_delta_snapshot(table, latest, {"dt": {"min": "2026-02-02", "max": "2026-02-03"}})
    assert sorted(window.paths) == resolve_with_spark(spark, table, latest, "dt >= '2026-02-02' AND dt <= '2026-02-03'")
    assert window.num_records == spark.read.format("delta").load(table).where("dt >= '2026-02-02'").count()
    with pytest.raises(SnapshotError, match="does not exist"):
        resolve_delta_snapshot(table, latest + 5)


def test_pinned_version_survives_a_new_commit(spark, tmp_path):
    table = str(tmp_path / "t")
    synth.write_delta(spark, synth.make_rows(200, 1, dt="2026-03-01"), table, files_per_day=2)
    before = resolve_delta_snapshot(table)
    synth.write_delta(spark, synth.make_rows(200, 2, start_id=10**6, dt="2026-03-01"), table, 2, mode="append")
    again = resolve_delta_snapshot(table, before.version)
    assert again.paths == before.paths and again.file_list_hash == before.file_list_hash
    assert resolve_delta_snapshot(table).version == before.version + 1
    assert len(resolve_delta_snapshot(table).files) > len(before.files)


def test_parquet_folder_snapshot_lists_files_and_hive_partitions(tmp_path):
    frame = synth.make_rows(100, 1)
    synth.write_parquet_folder(frame, tmp_path / "p" / "dt=2026-01-01", files=2)
    synth.write_parquet_folder(frame, tmp_path / "p" / "dt=2026-01-02", files=1)
    (tmp_path / "p" / "_SUCCESS").write_text("")
    snapshot = resolve_parquet_snapshot(str(tmp_path / "p"), {"dt": "2026-01-01"})
    assert len(snapshot.files) == 2 and snapshot.version is None
    assert {f.partition_values["dt"] for f in snapshot.files} == {"2026-01-01"}


def test_run_reads_and_records_the_version_resolved_before_a_new_commit(lake, spark, tmp_path):
    """Resolve (plan), then the table gets a commit, then train: the run reads the OLD snapshot."""
    from jobs.train import main  # noqa: F401  (same entry point as `ple train`)
    from ple_runtime.config import parse_job_config
    from training.config import TrainConfig
    from training.plan import prepare_plan
    from training.trainer import train_worker

    table = str(tmp_path / "examples")
    frames = [synth.make_rows(600, i, start_id=i * 10**6, dt=day) for i, day in enumerate([*TRAIN_DAYS, VALIDATION_DAY])]
    synth.write_delta(spark, pd.concat(frames, ignore_index=True), table, files_per_day=2)
    args = date_args(lake)
    args[args.index("--table") + 1] = table
    config = parse_job_config(TrainConfig, [
        *args, "--out", str(tmp_path / "out"), "--epochs", "1", "--batch-size", "100", "--no-progress",
        "--vocab-sizes", "{user_idx: 41}", "--set", "model_params.expert_hidden=[8]",
        "--set", "model_params.tower_hidden=[8]"], prog="ple train")
    plan = prepare_plan(config)
    pinned = plan.train_snapshot.version
    synth.write_delta(spark, synth.make_rows(5000, 9, start_id=9 * 10**6, dt=TRAIN_DAYS[0]), table, 2, mode="append")
    assert latest_delta_version(table) == pinned + 1

    train_worker(plan, "single", "single")
    result = record(tmp_path / "out")
    assert result["delta_version"] == pinned
    assert result["train_snapshot"]["num_records"] == 3 * 600          # not the 5000 appended rows
    assert sum(result["rows_per_shard"]) == 3 * 600
    assert result["train_snapshot"]["file_list_hash"] == resolve_delta_snapshot(
        table, pinned, {"dt": {"min": TRAIN_DAYS[0], "max": TRAIN_DAYS[-1]}}).file_list_hash
    assert result["vocab"]["sources"]["user_idx"] == "--vocab-sizes"
