"""publishing.gate.check_gate on hand-written metrics: every way a candidate passes or fails."""

from __future__ import annotations

import math

import pytest

from publishing.gate import Floors, GateEvidence, Tolerances, check_gate
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


# --- floors: what every candidate must clear, the first model of a registry included -----------------

def _evidence(play_low=0.70, play_high=0.80, share_low=0.70, share_high=0.80, prior=0.6):
    return GateEvidence(auc_intervals={"play": {"low": play_low, "high": play_high},
                                       "share": {"low": share_low, "high": share_high}},
                        prior_logloss={"play": prior, "share": prior})


def test_a_first_model_whose_auc_interval_contains_chance_is_refused(spec):
    result = check_gate(spec, _metrics(share_auc=0.5059), None, Tolerances(),
                        evidence=_evidence(share_low=0.4960, share_high=0.5158), floors=Floors())
    assert not result.passed
    assert [(f.task, f.metric, f.reason) for f in result.failures] == [("share", "auc", "auc_contains_chance")]
    assert "[0.4960, 0.5158] contains 0.5" in result.failures[0].message()
    # the same model with an interval clear of 0.5 passes; so does a gate without floors (as before)
    assert check_gate(spec, _metrics(), None, Tolerances(), evidence=_evidence(), floors=Floors()).passed
    assert check_gate(spec, _metrics(share_auc=0.5059), None, Tolerances(),
                      evidence=_evidence(share_low=0.4960, share_high=0.5158)).passed


def test_worse_than_the_base_rate_and_outside_the_calibration_band_are_refused(spec):
    candidate = _metrics(play_logloss=0.7)
    candidate["share"]["calibration"] = 3.0
    candidate["watch"]["calibration"] = 1.1
    result = check_gate(spec, candidate, None, Tolerances(), evidence=_evidence(prior=0.65),
                        floors=Floors(prior_logloss_tolerance=0.01))
    assert sorted((f.task, f.reason) for f in result.failures) == [
        ("play", "worse_than_prior"), ("share", "calibration_outside_band")]
    assert "outside the band [0.5, 2]" in next(f.message() for f in result.failures if f.task == "share")
    narrow = Floors(calibration_band=None, calibration_tasks={"watch": (0.95, 1.05)}, prior_logloss_tolerance=None)
    assert [(f.task, f.reason) for f in check_gate(spec, candidate, None, Tolerances(), evidence=_evidence(),
                                                   floors=narrow).failures] == [("watch", "calibration_outside_band")]


def test_production_comparison_uses_the_paired_interval(spec):
    tolerances = Tolerances(default={"auc": 0.01, "logloss": 0.01, "mse": 0.01})
    worse = _metrics(play_auc=0.73)  # 0.02 worse than production: beyond the tolerance as a point
    noisy = GateEvidence(production={"play": {"auc": {"low": -0.05, "high": 0.01, "method": "delong"}}})
    assert check_gate(spec, worse, _metrics(), tolerances, evidence=noisy).passed  # could be no worse at all
    sure = GateEvidence(production={"play": {"auc": {"low": -0.03, "high": -0.015, "method": "delong"}}})
    result = check_gate(spec, worse, _metrics(), tolerances, evidence=sure)
    assert [(f.task, f.metric, f.reason) for f in result.failures] == [("play", "auc", "worse_than_production")]
    assert "interval [-0.030000, -0.015000] (delong) lies below -0.01" in result.failures[0].message()


def test_confidently_worse_than_the_single_task_baseline_is_refused(spec):
    evidence = GateEvidence(single_task={"play": {"metric": "auc", "low": -0.08, "high": -0.03},
                                         "share": {"metric": "auc", "low": -0.08, "high": 0.02}})
    result = check_gate(spec, _metrics(), None, Tolerances(), evidence=evidence, floors=Floors())
    assert [(f.task, f.reason) for f in result.failures] == [("play", "worse_than_single_task")]
