"""`ple experiment`: models x seeds trained with `ple train`'s code, all scored on the same test-day rows."""

from __future__ import annotations

import json

import pytest

from evaluation_tables import DATES
from jobs.experiment import main as experiment_main


@pytest.mark.slow
def test_experiment_trains_models_by_seeds_and_writes_the_seesaw_table(lake_root, examples_problem, tmp_path,
                                                                       capsys):
    spec, _ = examples_problem
    spec_file = tmp_path / "spec.yaml"
    spec.to_yaml(spec_file)
    out = tmp_path / "experiment"
    common = ["--data-dir", str(lake_root), "--spec", str(spec_file), "--train-start", DATES[0],
              "--train-end", DATES[0], "--validation-date", DATES[1], "--test-date", DATES[2],
              "--models", "single_task", "ple", "--seeds", "0", "1", "--epochs", "2", "--batch-size", "64",
              "--lr", "0.01", "--set", "model_params.ple={expert_hidden: [16], tower_hidden: [16]}",
              "--set", "uncertainty.resamples=200", "--out", str(out)]
    assert experiment_main(common) == 0
    record = json.loads((out / "experiment.json").read_text())
    assert set(record["runs"]) == {"single_task/seed0", "single_task/seed1", "ple/seed0", "ple/seed1"}
    assert record["snapshot"]["date"] == DATES[2] and record["snapshot"]["rows"] == 500
    # Each run is a real `ple train` run (run record, model file) trained on its own seed.
    for key, run in record["runs"].items():
        train_record = json.loads((out / "runs" / key / "run_record.json").read_text())
        assert train_record["status"] == "completed" and train_record["config"]["seed"] == int(key[-1])
        assert run["run"]["path"].endswith(key)
    ple = record["models"]["ple"]
    assert ple["seeds"] == [0, 1] and ple["parameters"] > 0
    play = ple["figures"]["play.auc"]
    assert play["n"] == 2 and play["sd"] is not None and 0.6 < play["mean"] <= 1
    # The gain of each seed against the single-task run of the SAME seed, with its paired interval...
    seed0 = record["runs"]["ple/seed0"]["gain"]["play.auc"]
    assert seed0["method"] == "delong" and seed0["low"] <= seed0["improvement"] <= seed0["high"]
    single0 = record["runs"]["single_task/seed0"]["tasks"]["play"]["auc"]
    assert seed0["improvement"] == pytest.approx(record["runs"]["ple/seed0"]["tasks"]["play"]["auc"] - single0)
    # ...and across seeds: the mean gain with a t interval over the two seeds.
    across = ple["gains"]["play.auc"]
    assert across["seeds"] == 2 and across["across_seeds"]["low"] <= across["mean"] <= across["across_seeds"]["high"]
    _assert_intervals_match_independent_computations(record, out / "runs")
    assert ple["gates"] and {"own", "shared", "normalized_entropy"} <= set(ple["gates"][0]["play"])
    markdown = (out / "seesaw.md").read_text()
    assert "| ple (" in markdown and "gain over single_task" in markdown and "play AUC" in markdown
    assert "Seesaw table" in (out / "report.html").read_text()
    capsys.readouterr()
    # A re-run reuses the finished runs (same settings) and scores them again.
    assert experiment_main([*common, "--train-only"]) == 0
    assert capsys.readouterr().out.count("reused") == 4


def _assert_intervals_match_independent_computations(record, runs):
    """The paired DeLong interval of seed 0's gain from the two runs' predictions on the test day, computed here
    (tests/delong_reference.py), and the across-seeds interval as mean +- t(0.975, 1) * sd / sqrt(2)."""
    import numpy as np
    from scipy.stats import t as student_t
    from sklearn.metrics import roc_auc_score

    from evaluation_tables import day_frame, problem
    from ple_model import model_inputs
    from ple_model.calibration import read_calibration
    from ple_model.model_file import load_model
    from ple_model.prediction import predict
    from tests.delong_reference import delong_difference_half_width

    _, columns = problem()
    scores = {}
    for model in ("ple", "single_task"):
        loaded = load_model(runs / model / "seed0")
        features, labels, _ = model_inputs(day_frame(columns, 2, DATES[2]), loaded.spec)
        predictions = predict(loaded.model, loaded.spec, features)[0]
        calibration = read_calibration(str(runs / model / "seed0" / "model.pt"))  # `ple train` fits one: served so
        scores[model] = (calibration.apply_numpy(predictions) if calibration else predictions)["play"]
    label = labels["play"]
    seed0 = record["runs"]["ple/seed0"]["gain"]["play.auc"]
    assert seed0["improvement"] == pytest.approx(roc_auc_score(label, scores["ple"])
                                                 - roc_auc_score(label, scores["single_task"]), abs=1e-9)
    half = delong_difference_half_width(label, scores["ple"], scores["single_task"])
    assert (seed0["low"], seed0["high"]) == pytest.approx((seed0["improvement"] - half, seed0["improvement"] + half),
                                                          abs=1e-9)
    gains = [record["runs"][f"ple/seed{seed}"]["gain"]["play.auc"]["improvement"] for seed in (0, 1)]
    across = record["models"]["ple"]["gains"]["play.auc"]
    half = student_t.ppf(0.975, 1) * np.std(gains, ddof=1) / np.sqrt(2)
    assert across["mean"] == pytest.approx(np.mean(gains))
    assert (across["across_seeds"]["low"], across["across_seeds"]["high"]) == pytest.approx(
        (np.mean(gains) - half, np.mean(gains) + half), rel=1e-6)
