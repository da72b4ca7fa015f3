"""`ple backfill`: a metrics row per date and task, skips, failures reported."""

from __future__ import annotations

import json
import math

from jobs.backfill import main as backfill_main


def test_backfill_three_days_then_skip_then_a_missing_date(spark, lake_root, trained_models, tmp_path, capsys):
    metrics_table = str(tmp_path / "backfill_metrics")
    common = ["--model", str(trained_models["ple"]), "--data-dir", str(lake_root), "--metrics-table", metrics_table,
              "--out", str(tmp_path / "plots")]
    assert backfill_main([*common, "--start", "2026-01-05", "--end", "2026-01-07"]) == 0
    rows = spark.read.format("delta").load(metrics_table).collect()
    per_task = {}
    for row in rows:
        per_task.setdefault(row.task, []).append(row.dt)
    assert {t: sorted(d) for t, d in per_task.items()} == {
        t: ["2026-01-05", "2026-01-06", "2026-01-07"] for t in ("play", "watch_ratio", "share")}
    # Each date on its own recorded snapshot (the fixture wrote one commit per day).
    assert {(r.dt, r.table_version) for r in rows} == {("2026-01-05", 0), ("2026-01-06", 1), ("2026-01-07", 2)}
    # Finite AUCs of a trained model (NaN or None would fail), inside their own DeLong intervals.
    binary = [r for r in rows if r.task != "watch_ratio"]
    assert all(r.auc is not None and math.isfinite(r.auc) and 0.6 < r.auc <= 1.0 for r in binary)
    assert all(r.auc_low < r.auc < r.auc_high and 0.6 < r.gauc <= 1.0 and r.gauc_users > 0 for r in binary)
    assert all(r.mse is not None and r.mse_low < r.mse < r.mse_high for r in rows if r.task == "watch_ratio")
    assert all(0 < r.ndcg <= 1 and r.ndcg_k == 10 and r.interval_level == 0.95 for r in rows)
    _assert_intervals_match_independent_computations(rows, trained_models["ple"])
    assert (tmp_path / "plots" / "backfill.png").stat().st_size > 1000
    assert 'src="data:image/png;base64,' in (tmp_path / "plots" / "backfill.html").read_text()
    capsys.readouterr()

    # A range whose every date is done (the DAG's summary task) is summarised without Spark: the
    # table read through its Delta log, the same rows in the report, no Spark job run.
    report = (tmp_path / "plots" / "backfill.html").read_text()
    (tmp_path / "plots" / "backfill.html").unlink()
    jobs_before = len(spark.sparkContext.statusTracker().getJobIdsForGroup(None))
    assert backfill_main(common + ["--start", "2026-01-05", "--end", "2026-01-07"]) == 0
    assert len(spark.sparkContext.statusTracker().getJobIdsForGroup(None)) == jobs_before
    assert (tmp_path / "plots" / "backfill.html").read_text() == report
    assert json.loads((tmp_path / "plots" / "backfill.json").read_text())["skipped"] == [
        "2026-01-05", "2026-01-06", "2026-01-07"]
    capsys.readouterr()

    # Done dates are skipped; a missing date fails without stopping the others, and is listed.
    assert backfill_main([*common, "--start", "2026-01-06", "--end", "2026-01-08"]) == 1
    captured = capsys.readouterr()
    assert "2026-01-06 already done" in captured.out and "2026-01-07 already done" in captured.out
    assert "failed dates: 2026-01-08" in captured.err and "no rows for dt=2026-01-08" in captured.err
    summary = json.loads((tmp_path / "plots" / "backfill.json").read_text())
    assert summary["skipped"] == ["2026-01-06", "2026-01-07"] and list(summary["failed"]) == ["2026-01-08"]
    assert spark.read.format("delta").load(metrics_table).count() == 9

    # --force re-evaluates in place (MERGE): still one row per (model, date, task).
    assert backfill_main([*common, "--start", "2026-01-05", "--end", "2026-01-05", "--force"]) == 0
    assert spark.read.format("delta").load(metrics_table).count() == 9


def _assert_intervals_match_independent_computations(rows, run_folder):
    """Every date's intervals from the same rows' predictions, computed here: DeLong's by its definition
    (tests/delong_reference.py), the MSE bootstrap's width against the standard error of a mean."""
    import numpy as np
    import pytest

    from evaluation_tables import DATES, day_frame, problem
    from ple_model import model_inputs
    from ple_model.model_file import load_model
    from ple_model.prediction import predict
    from tests.delong_reference import delong_half_width, mean_half_width

    loaded, (_, columns) = load_model(run_folder), problem()
    for index, date in enumerate(DATES):
        features, labels, masks = model_inputs(day_frame(columns, index, date), loaded.spec)
        predictions, _ = predict(loaded.model, loaded.spec, features)
        by_task = {r.task: r for r in rows if r.dt == date}
        for task in ("play", "share"):
            space = masks[task] > 0 if task in masks else np.ones(len(labels[task]), dtype=bool)
            half = delong_half_width(labels[task][space], predictions[task][space])
            row = by_task[task]
            assert (row.auc_low, row.auc_high) == pytest.approx((row.auc - half, row.auc + half), abs=1e-9), date
        played = masks["watch_ratio"] > 0
        squared = (predictions["watch_ratio"][played] - labels["watch_ratio"][played]) ** 2
        row = by_task["watch_ratio"]
        assert row.mse == pytest.approx(squared.mean(), rel=1e-5)
        assert (row.mse_high - row.mse_low) / (2 * mean_half_width(squared)) == pytest.approx(1, abs=0.2), date


def test_a_metrics_table_of_the_first_layout_is_migrated(spark, lake_root, trained_models, tmp_path):
    """A table written before the interval/GAUC/NDCG columns existed gets them (old rows read NULL)."""
    import datetime as dt

    from evaluation.backfill import BASE_DDL

    metrics_table = str(tmp_path / "old_metrics")
    old_row = ("sha256:000000000000", "old/model.pt", "2026-01-01", "play", "t", 0, "recorded", 0.7, 0.5, None,
               None, 1.0, 0.3, 0.3, 100, 30, dt.datetime(2026, 1, 2), "abc")
    spark.createDataFrame([old_row], BASE_DDL).write.format("delta").save(metrics_table)
    assert backfill_main(["--model", str(trained_models["ple"]), "--data-dir", str(lake_root), "--metrics-table",
                          metrics_table, "--out", str(tmp_path / "plots"), "--start", "2026-01-05",
                          "--end", "2026-01-05", "--set", "uncertainty.resamples=100"]) == 0
    table = spark.read.format("delta").load(metrics_table)
    assert {"auc_low", "gauc", "ndcg", "bootstrap_resamples"} <= set(table.columns)
    old = table.where("model_id = 'sha256:000000000000'").collect()
    assert len(old) == 1 and old[0].auc == 0.7 and old[0].gauc is None and old[0].ndcg is None
    new = table.where("dt = '2026-01-05'").collect()
    assert len(new) == 3 and all(r.bootstrap_resamples == 100 for r in new)
    assert all(r.gauc is not None for r in new if r.task != "watch_ratio")


def test_calibration_and_prediction_drift_against_the_validation_day(spark, lake_root, trained_models, tmp_path):
    from ple_model.model_file import load_model, save_model

    loaded = load_model(trained_models["ple"] / "model.pt")
    table = str(lake_root / "lake" / "examples")
    validated = {"table": table, "version": 0, "partitions": ['{"dt": "2026-01-05"}']}  # as training records it
    model_dir = tmp_path / "validated_on_0105"
    save_model(model_dir / "model.pt", loaded.model, loaded.spec, loaded.model_name, loaded.hyperparameters,
               metadata={**loaded.metadata, "validation_snapshot": validated})
    metrics_table = str(tmp_path / "metrics")
    assert backfill_main(["--model", str(model_dir), "--data-dir", str(lake_root), "--metrics-table", metrics_table,
                          "--out", str(tmp_path / "out"), "--start", "2026-01-05", "--end", "2026-01-06"]) == 0
    rows = {(r.dt, r.task): r for r in spark.read.format("delta").load(metrics_table).collect()}
    assert {r.drift_reference_dt for r in rows.values()} == {"2026-01-05"}
    # the validation day against itself: no drift at all; another day: some, finite
    assert all(rows[("2026-01-05", t)].prediction_psi == 0.0 for t in ("play", "share", "watch_ratio"))
    assert all(0 < rows[("2026-01-06", t)].prediction_psi < 1 for t in ("play", "share", "watch_ratio"))
    assert all(r.calibration_low < r.calibration < r.calibration_high for r in rows.values())
    html = (tmp_path / "out" / "backfill.html").read_text()
    assert "Calibration and prediction drift over time" in html and "(vs 2026-01-05)" in html
