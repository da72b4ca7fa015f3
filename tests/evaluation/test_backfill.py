"""`ple backfill`: a metrics row per date and task, skips, failures reported."""

from __future__ import annotations

import json

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
    assert all(r.auc is not None for r in rows if r.task != "watch_ratio")
    assert (tmp_path / "plots" / "backfill.png").stat().st_size > 1000
    assert 'src="data:image/png;base64,' in (tmp_path / "plots" / "backfill.html").read_text()
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
