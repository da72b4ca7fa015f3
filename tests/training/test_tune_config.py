"""`ple tune`'s settings and sampling without training: keys checked up front, conditional weighting
parameters, layer-size choices, the best settings as `ple train` reads them."""

from __future__ import annotations

import optuna
import pytest

from ple_runtime.config import ConfigError, validate_config
from training.tune import Distribution, TuneConfig, best_settings, sample_settings


def test_bad_search_keys_and_budgets_fail_naming_the_key(tmp_path):
    for search, message in [({"model_params.num_experts": {"type": "int", "low": 1, "high": 3}}, "num_experts"),
                            ({"weighting_params.nope.x": {"type": "float", "low": 0, "high": 1}}, "nope.x"),
                            ({"epochs": {"type": "int", "low": 1, "high": 3}}, "fixed by the study"),
                            ({"lr": {"type": "float", "low": 0.1, "high": 0.01}}, "low < high")]:
        with pytest.raises(ConfigError, match=message):
            validate_config(TuneConfig, {"out": str(tmp_path), "search": search})
    with pytest.raises(ConfigError, match="give a budget"):
        validate_config(TuneConfig, {"out": str(tmp_path), "trials": None})
    mmoe = validate_config(TuneConfig, {"out": str(tmp_path), "train": {"model": "mmoe"}})
    assert "model_params.num_experts" in mmoe.search and "model_params.num_levels" not in mmoe.search


def test_weighting_parameters_are_sampled_only_with_their_weighting():
    search = {"weighting": Distribution(type="categorical", choices=["static", "dwa"]),
              "weighting_params.dwa.temperature": Distribution(type="float", low=0.5, high=4.0),
              "model_params.tower_hidden": Distribution(type="categorical", choices=[[8], [16, 8]])}
    dwa = sample_settings(optuna.trial.FixedTrial({"weighting": "dwa", "weighting_params.dwa.temperature": 3.0,
                                                   "model_params.tower_hidden": "[16, 8]"}), search, "decay")
    assert dwa == {"weighting": "dwa", "weighting_params": {"temperature": 3.0},
                   "model_params": {"tower_hidden": [16, 8]}}
    static = sample_settings(optuna.trial.FixedTrial({"weighting": "static", "model_params.tower_hidden": "[8]"}),
                             search, "dwa")
    assert static["weighting_params"] == {}   # the base's dwa parameters do not follow it to static
    # Not searching the weighting: its parameters are searched for the base's weighting.
    only_params = {"weighting_params.dwa.temperature": search["weighting_params.dwa.temperature"]}
    assert sample_settings(optuna.trial.FixedTrial({"weighting_params.dwa.temperature": 1.5}), only_params,
                           "dwa") == {"weighting_params": {"temperature": 1.5}}
    base = {"model": "ple", "epochs": 3, "model_params": {"expert_hidden": [8], "tower_hidden": [4]},
            "table": "/data", "weighting": "decay"}
    assert best_settings(base, dwa) == {"model": "ple", "epochs": 3, "weighting": "dwa",
                                        "weighting_params": {"temperature": 3.0},
                                        "model_params": {"expert_hidden": [8], "tower_hidden": [16, 8]}}
