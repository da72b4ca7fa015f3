"""evaluation.model_health on arrays: calibration per task and prediction drift (PSI)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evaluation.model_health import prediction_drift, prediction_histogram, psi, task_health
from ple_model import ModelSpec


def test_calibration_and_drift_per_task():
    spec = ModelSpec.model_validate({"features": [{"name": "x", "type": "numeric"}],
                                     "tasks": [{"name": "play", "type": "binary"},
                                               {"name": "watch", "type": "regression", "mask": "play"}]})
    rng = np.random.default_rng(0)
    labels = {"play": (rng.random(4000) < 0.3).astype(float), "watch": rng.random(4000)}
    masks = {"play": np.ones(4000), "watch": labels["play"]}
    same = {"play": rng.random(4000) * 0.6, "watch": rng.random(4000)}
    health = task_health(spec, same, labels, masks)
    assert health["play"]["calibration"] == pytest.approx(same["play"].mean() / labels["play"].mean())
    assert health["watch"]["rows"] == int(labels["play"].sum())  # inside the task's sample space only
    shifted = task_health(spec, {"play": same["play"] + 0.3, "watch": same["watch"]}, labels, masks)
    drift = prediction_drift(shifted, health)
    assert drift["play"] > 0.25 and drift["watch"] == 0.0  # a shift of 0.3 is large; the same array none
    assert psi(prediction_histogram(same["play"]), prediction_histogram(same["play"])) == 0.0
    assert math.isnan(psi([], prediction_histogram(same["play"])))
