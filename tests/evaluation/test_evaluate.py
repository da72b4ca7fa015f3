"""`ple evaluate`: report with plots, sample spaces, MTL gain, time travel, missing dates."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from jobs.evaluate import main as evaluate_main

from evaluation_tables import DATES, day_frame, write_days


def _img_count(html: str) -> int:
    return html.count('src="data:image/png;base64,')


def test_report_has_metrics_gain_and_plots(lake_root, trained_models, tmp_path, capsys):
    out = tmp_path / "report"
    rc = evaluate_main(["--model", str(trained_models["ple"]), "--date", DATES[1], "--data-dir", str(lake_root),
                        "--single-task-runs", str(trained_models["single_task"].parent),
                        "--compare", str(trained_models["mmoe"]), "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    record = json.loads((out / "metrics.json").read_text())
    tasks = record["model"]["tasks"]
    assert set(tasks) == {"play", "watch_ratio", "share"}
    # Sample spaces: watch_ratio is scored only on played rows.
    assert tasks["play"]["count"] == 500 and tasks["watch_ratio"]["count"] == tasks["play"]["positives"]
    assert 0.7 < tasks["play"]["auc"] <= 1.0 and tasks["watch_ratio"]["mse"] < 0.05
    assert len(tasks["share"]["calibration_curve"]["mean_prediction"]) == 10
    # Eq. 11 against the single-task baseline, for every task.
    gain = record["mtl_gain"]
    assert set(gain["gain"]) == {"play", "watch_ratio", "share"}
    assert gain["gain"]["play"] == tasks["play"]["auc"] - gain["single_task_metric"]["play"]
    assert gain["gain"]["watch_ratio"] == gain["single_task_metric"]["watch_ratio"] - tasks["watch_ratio"]["mse"]
    # Gate diagnostics: PLE has 2 levels; each task gate mixes its own + the shared expert.
    gates = record["model"]["gates"]
    assert len(gates) == 2 and set(gates[1]) == {"play", "watch_ratio", "share"}
    assert abs(sum(gates[0]["play"]["mean_weight"].values()) - 1) < 1e-5
    assert record["production"] is None and "no registry" in record["production_note"]
    assert record["snapshot"]["version"] == 1 and record["snapshot"]["chosen_by"] == "recorded"

    html = (out / "report.html").read_text()
    # seesaw + per-task bars + calibration + gate heatmaps of the two gated models (PLE, MMoE)
    assert _img_count(html) == 5
    for title in ("Seesaw", "Per-task metric by model", "Calibration", "Gates: expert use per task per level",
                  "MTL gain (Eq. 11)"):
        assert title in html
    assert "<script" not in html and 'src="http' not in html  # self-contained


def test_missing_date_fails_clearly(lake_root, trained_models, tmp_path, capsys):
    rc = evaluate_main(["--model", str(trained_models["ple"]), "--date", "2026-02-01", "--data-dir", str(lake_root),
                        "--out", str(tmp_path / "never")])
    err = capsys.readouterr().err
    assert rc == 1
    assert "no rows for dt=2026-02-01" in err and "3 dates exist (2026-01-05, 2026-01-06, 2026-01-07)" in err
    assert not (tmp_path / "never").exists()


def test_time_travel_reads_the_old_version(spark, examples_problem, trained_models, tmp_path, capsys):
    _, columns = examples_problem
    table = str(tmp_path / "examples")
    write_days(spark, table, [day_frame(columns, 0, DATES[0])])                        # v0
    time.sleep(1.2)  # commit timestamps (file mtimes) a clear step apart
    between = time.time()
    time.sleep(1.2)
    write_days(spark, table, [day_frame(columns, 3, DATES[0])], mode="overwrite",
               replace_date=DATES[0])                                                # v1: the day re-extracted
    write_days(spark, table, [day_frame(columns, 1, DATES[1])])                        # v2: another day

    def evaluate(*extra, name):
        out = tmp_path / name
        rc = evaluate_main(["--model", str(trained_models["ple"]), "--table", table, "--date", DATES[0],
                            "--data-dir", str(tmp_path), "--out", str(out), *extra])
        assert rc == 0, capsys.readouterr().err
        return json.loads((out / "metrics.json").read_text())

    old = evaluate("--version", "0", name="v0")
    old_spark = evaluate("--version", "0", "--reader", "spark", name="v0_spark")
    by_time = evaluate("--timestamp", time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(between)) + "Z", name="ts")
    recorded = evaluate(name="recorded")

    assert old["snapshot"]["version"] == 0 and old["snapshot"]["latest_version"] == 2
    assert by_time["snapshot"]["version"] == 0 and by_time["snapshot"]["chosen_by"] == "timestamp"
    # The default is the version at which this date was last written, not the latest.
    assert recorded["snapshot"]["version"] == 1 and recorded["snapshot"]["chosen_by"] == "recorded"
    assert old["model"]["tasks"]["play"]["auc"] == by_time["model"]["tasks"]["play"]["auc"]
    assert old["model"]["tasks"]["play"]["auc"] != recorded["model"]["tasks"]["play"]["auc"]
    assert old["model"]["tasks"]["play"]["positives"] == int(columns["play"][3000:3500].sum())
    # Spark time travel and the pyarrow log reader read the same rows.
    assert old_spark["snapshot"]["reader"] == "spark" and old["snapshot"]["reader"] == "arrow"
    for task in ("play", "watch_ratio", "share"):
        for metric in ("auc", "mse", "count"):
            if metric in old["model"]["tasks"][task]:
                assert np.isclose(old["model"]["tasks"][task][metric], old_spark["model"]["tasks"][task][metric])


def test_runs_under_spark_submit(lake_root, trained_models, tmp_path, venv_bin, subprocess_env):
    """The same job file under spark-submit, reading through Spark + Delta time travel."""
    import subprocess
    from pathlib import Path

    from ple_runtime.spark import delta_jars

    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "submitted"
    env = dict(subprocess_env, OMP_NUM_THREADS="1", PYSPARK_PYTHON=str(venv_bin / "python"))
    result = subprocess.run(
        [str(venv_bin / "spark-submit"), "--master", "local[1]", "--jars", ",".join(delta_jars()),
         "--conf", "spark.ui.enabled=false", str(repo / "jobs" / "evaluate.py"),
         "--model", str(trained_models["ple"]), "--date", DATES[2], "--data-dir", str(lake_root), "--version", "2",
         "--reader", "spark", "--no-with-production", "--out", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    record = json.loads((out / "metrics.json").read_text())
    assert record["snapshot"]["reader"] == "spark" and record["snapshot"]["version"] == 2
    assert record["snapshot"]["rows"] == 500


def test_report_shows_intervals_significance_gauc_ranking_and_calibration(lake_root, trained_models, tmp_path,
                                                                         capsys):
    out = tmp_path / "report"
    rc = evaluate_main(["--model", str(trained_models["ple"]), "--date", DATES[1], "--data-dir", str(lake_root),
                        "--single-task-runs", str(trained_models["single_task"].parent),
                        "--compare", str(trained_models["ple_bad"]), "--calibrate-on", DATES[0],
                        "--set", "uncertainty.resamples=300", "--set", "ranking.k=5", "--out", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0
    record = json.loads((out / "metrics.json").read_text())
    assert record["uncertainty"]["level"] == 0.95 and record["uncertainty"]["bootstrap_resamples"] == 300
    play, watch = record["model"]["tasks"]["play"], record["model"]["tasks"]["watch_ratio"]
    # Every compared figure has an interval around it; the method says which.
    assert play["intervals"]["auc"]["method"] == "delong"
    assert play["intervals"]["auc"]["low"] < play["auc"] < play["intervals"]["auc"]["high"]
    assert play["intervals"]["logloss"]["low"] < play["logloss"] < play["intervals"]["logloss"]["high"]
    assert watch["intervals"]["mse"]["low"] < watch["mse"] < watch["intervals"]["mse"]["high"]
    _assert_intervals_match_independent_computations(record, trained_models)
    assert play["intervals"]["gauc"]["method"] == "bootstrap over users"
    # GAUC: users with both classes averaged, the others counted.
    assert 0.6 < play["gauc"] <= 1 and play["gauc_users"] > 10
    assert play["gauc_users"] + play["gauc_users_skipped"] == len(
        set(day_frame(_columns(), 1, DATES[1])["user_idx"]))
    # MTL gain intervals, and a compared model far worse: its AUC loss to the candidate is significant.
    gain = record["mtl_gain"]
    assert set(gain["interval"]) == {"play", "watch_ratio", "share"}
    assert gain["interval"]["play"]["low"] <= gain["gain"]["play"] <= gain["interval"]["play"]["high"]
    assert all(i["significant"] == (i["low"] > 0 or i["high"] < 0) for i in gain["interval"].values())
    assert gain["ranking_gain"]["method"] == "paired bootstrap over users"
    bad = record["compare"][0]
    assert bad["tasks"]["play"]["auc"] < play["intervals"]["auc"]["low"]
    ranking = record["model"]["ranking"]
    assert ranking["k"] == 5 and 0 < ranking["interval"]["low"] <= ranking["ndcg"] <= ranking["interval"]["high"]
    assert ranking["ndcg"] > bad["ranking"]["ndcg"]
    # Calibration fitted on the day before, reported before/after.
    calibration = record["model"]["calibration"]
    assert calibration["source"] == "fitted" and calibration["fitted_on"]["date"] == DATES[0]
    assert set(calibration["tasks"]) == {"play", "watch_ratio", "share"}
    assert {"ece", "calibration", "logloss"} <= set(calibration["tasks"]["play"]["before"])
    # The CLI and the report show all of it.
    assert "gauc=" in printed and "MTL gain" in printed and "[" in printed and "NDCG@5=" in printed
    assert "calibration (isotonic, fitted)" in printed
    html = (out / "report.html").read_text()
    for text in ("95% interval", "Ranking score: NDCG@5 per user", "Post-hoc calibration: before / after",
                 "delong", "gauc"):
        assert text in html


def _predictions_on_day(run_folder, index: int, calibrate_on: int) -> tuple[dict, dict, dict]:
    """(predictions, labels, masks) of a saved model on day `index` of the test table, computed here, with an
    isotonic calibration fitted on day `calibrate_on` (`--calibrate-on`: the models are scored calibrated)."""
    from ple_model import model_inputs
    from ple_model.calibration import fit_calibration
    from ple_model.model_file import load_model
    from ple_model.prediction import predict

    loaded = load_model(run_folder)
    on_day = {}
    for day in (calibrate_on, index):
        features, labels, masks = model_inputs(day_frame(_columns(), day, DATES[day]), loaded.spec)
        on_day[day] = predict(loaded.model, loaded.spec, features)[0], labels, masks
    calibration = fit_calibration(loaded.spec, *on_day[calibrate_on], method="isotonic")
    predictions, labels, masks = on_day[index]
    return calibration.apply_numpy(predictions), labels, masks


def _assert_intervals_match_independent_computations(record, trained_models):
    """Each interval against a computation of its own here, on the same rows: the AUC's and the MTL gain's
    DeLong intervals from the pair-by-pair definition (tests/delong_reference.py), the bootstrap intervals'
    widths against the standard error of a mean (300 resamples: within 25%)."""
    from sklearn.metrics import roc_auc_score

    from tests.delong_reference import delong_difference_half_width, delong_half_width, mean_half_width

    predictions, labels, masks = _predictions_on_day(trained_models["ple"], 1, calibrate_on=0)
    play, watch = record["model"]["tasks"]["play"], record["model"]["tasks"]["watch_ratio"]
    label, score = labels["play"], predictions["play"]
    assert play["auc"] == pytest.approx(roc_auc_score(label, score), abs=1e-9)  # the rows and scores compared
    half = delong_half_width(label, score)
    assert play["intervals"]["auc"]["low"] == pytest.approx(play["auc"] - half, abs=1e-9)
    assert play["intervals"]["auc"]["high"] == pytest.approx(play["auc"] + half, abs=1e-9)

    clipped = np.clip(score, 1e-7, 1 - 1e-7)
    logloss_rows = -(label * np.log(clipped) + (1 - label) * np.log(1 - clipped))
    # (abs 1e-3: a calibrated probability of exactly 1 on a negative row is clipped in float32 there)
    assert play["logloss"] == pytest.approx(logloss_rows.mean(), abs=1e-3)
    width = play["intervals"]["logloss"]["high"] - play["intervals"]["logloss"]["low"]
    assert width / (2 * mean_half_width(logloss_rows)) == pytest.approx(1, abs=0.25)
    played = masks["watch_ratio"] > 0
    squared = (predictions["watch_ratio"][played] - labels["watch_ratio"][played]) ** 2
    assert watch["mse"] == pytest.approx(squared.mean(), rel=1e-5) and watch["count"] == played.sum()
    width = watch["intervals"]["mse"]["high"] - watch["intervals"]["mse"]["low"]
    assert width / (2 * mean_half_width(squared)) == pytest.approx(1, abs=0.25)

    # The MTL gain on play: the AUC difference to the single-task baseline, paired on the same rows.
    single, _, _ = _predictions_on_day(trained_models["single_task"], 1, calibrate_on=0)
    gain = record["mtl_gain"]["interval"]["play"]
    half = delong_difference_half_width(label, score, single["play"])
    assert record["mtl_gain"]["gain"]["play"] == pytest.approx(play["auc"] - roc_auc_score(label, single["play"]))
    assert (gain["low"], gain["high"]) == pytest.approx((record["mtl_gain"]["gain"]["play"] - half,
                                                        record["mtl_gain"]["gain"]["play"] + half), abs=1e-9)


def _columns():
    from evaluation_tables import problem

    return problem()[1]
