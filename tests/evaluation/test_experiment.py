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
    assert ple["gates"] and {"own", "shared", "normalized_entropy"} <= set(ple["gates"][0]["play"])
    markdown = (out / "seesaw.md").read_text()
    assert "| ple (" in markdown and "gain over single_task" in markdown and "play AUC" in markdown
    assert "Seesaw table" in (out / "report.html").read_text()
    capsys.readouterr()
    # A re-run reuses the finished runs (same settings) and scores them again.
    assert experiment_main([*common, "--train-only"]) == 0
    assert capsys.readouterr().out.count("reused") == 4
