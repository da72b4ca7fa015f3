"""evaluation.gate.check_gate on hand-written metrics: every way a candidate passes or fails."""

from __future__ import annotations

import math

import pytest

from evaluation.gate import Tolerances, check_gate
from ple_model import ModelSpec


@pytest.fixture
def spec():
    return ModelSpec.model_validate({
        "features": [{"name": "x", "type": "numeric"}],
        "tasks": [{"name": "play", "type": "binary"}, {"name": "watch", "type": "regression", "mask": "play"},
                  {"name": "share", "type": "binary"}],
    })


def _metrics(play_auc=0.75, play_logloss=0.5, watch_mse=0.25, share_auc=0.75, share_logloss=0.125):
    return {"play": {"auc": play_auc, "logloss": play_logloss}, "watch": {"mse": watch_mse},
            "share": {"auc": share_auc, "logloss": share_logloss}}


def test_no_production_only_needs_finite_metrics(spec):
    result = check_gate(spec, _metrics(), None, Tolerances())
    assert result.passed and not result.failures
    assert {(row["task"], row["metric"]) for row in result.checked} == {
        ("play", "auc"), ("play", "logloss"), ("watch", "mse"), ("share", "auc"), ("share", "logloss")}


def test_nan_and_one_class_auc_fail_as_not_finite(spec):
    # A one-class sample space gives AUC NaN (ple_model.metrics): the data cannot vouch for the model.
    result = check_gate(spec, _metrics(share_auc=math.nan, watch_mse=math.inf), _metrics(), Tolerances())
    assert not result.passed
    assert {(f.task, f.metric, f.reason) for f in result.failures} == {("share", "auc", "not_finite"),
                                                                       ("watch", "mse", "not_finite")}
    assert "share.auc is nan (not a finite number)" in [f.message() for f in result.failures]


def test_a_missing_metric_fails(spec):
    candidate = _metrics()
    del candidate["play"]["logloss"]
    candidate.pop("share")
    result = check_gate(spec, candidate, None, Tolerances())
    assert sorted((f.task, f.metric, f.reason) for f in result.failures) == [
        ("play", "logloss", "missing"), ("share", "auc", "missing"), ("share", "logloss", "missing")]
    assert "play.logloss is missing from the candidate's metrics" in [f.message() for f in result.failures]


def test_boundary_worse_by_equal_to_tolerance_passes_and_beyond_fails(spec):
    # Binary fractions, so worse_by is exactly the tolerance.
    tolerances = Tolerances(default={"auc": 0.125, "logloss": 0.0625, "mse": 0.03125})
    production = _metrics()
    at_boundary = _metrics(play_auc=0.625, play_logloss=0.5625, watch_mse=0.28125)
    result = check_gate(spec, at_boundary, production, tolerances)
    assert result.passed, [f.message() for f in result.failures]
    assert {r["worse_by"] for r in result.checked if r["task"] != "share"} == {0.125, 0.0625, 0.03125}
    beyond = _metrics(play_auc=0.625 - 2 ** -20, watch_mse=0.28125 + 2 ** -20)
    result = check_gate(spec, beyond, production, tolerances)
    assert sorted((f.task, f.metric) for f in result.failures) == [("play", "auc"), ("watch", "mse")]
    message = next(f.message() for f in result.failures if f.task == "play")
    assert message.startswith("play.auc is worse than production by 0.125001") and "tolerance 0.125" in message


def test_direction_aware_better_never_fails(spec):
    # Higher AUC and lower logloss/MSE than production: improvements, whatever the tolerance.
    better = _metrics(play_auc=0.9, play_logloss=0.1, watch_mse=0.01, share_auc=0.9, share_logloss=0.01)
    result = check_gate(spec, better, _metrics(), Tolerances(default={"auc": 0.0, "logloss": 0.0, "mse": 0.0}))
    assert result.passed and all(r["worse_by"] < 0 for r in result.checked)


def test_per_task_overrides_win_over_the_default(spec):
    tolerances = Tolerances(default={"auc": 0.001, "logloss": 0.001, "mse": 0.001}, tasks={"share": {"auc": 0.25}})
    candidate = _metrics(share_auc=0.5, play_auc=0.74)          # share 0.25 worse (allowed), play 0.01 worse
    result = check_gate(spec, candidate, _metrics(), tolerances)
    assert [(f.task, f.metric) for f in result.failures] == [("play", "auc")]
    assert tolerances.for_task("share", "auc") == 0.25 and tolerances.for_task("share", "logloss") == 0.001
    assert tolerances.for_task("play", "auc") == 0.001
    # A production metric that is not finite (e.g. its one-class AUC) compares nothing: only finiteness is checked.
    result = check_gate(spec, _metrics(play_auc=0.5), _metrics(play_auc=math.nan), tolerances)
    assert result.passed
    with pytest.raises(ValueError, match="must be >= 0"):
        Tolerances(tasks={"play": {"auc": -0.1}}).for_task("play", "auc")
