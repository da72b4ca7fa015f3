import math

import numpy as np
import pytest
import torch

from ple_model import ModelSpec
from ple_model.metrics import evaluate_tasks, gate_usage, mtl_gain, predictions_from_outputs
from ple_model.models import GateLayout


@pytest.fixture
def spec():
    return ModelSpec.model_validate({
        "features": [{"name": "x", "type": "numeric"}],
        "tasks": [{"name": "play", "type": "binary", "label": "play"},
                  {"name": "vcr", "type": "regression", "label": "vcr", "mask": "play"},
                  {"name": "share", "type": "binary", "label": "share", "mask": "play"}],
    })


def test_metrics_by_hand_inside_the_sample_space(spec):
    predictions = {"play": np.array([0.9, 0.2, 0.6, 0.4]), "vcr": torch.tensor([0.5, 9.0, 0.2, 9.0]),
                   "share": [0.7, 0.5, 0.3, 0.5]}
    labels = {"play": [1, 0, 0, 1], "vcr": [0.7, np.nan, 0.0, np.nan], "share": [1, 0, 0, 1]}
    masks = {"vcr": [1, 0, 1, 0], "share": [1, 0, 1, 0]}
    metrics = evaluate_tasks(spec, predictions, labels, masks)
    play = metrics["play"]
    # pairs (pos, neg): (0.9 > 0.2), (0.9 > 0.6), (0.4 > 0.2), (0.4 < 0.6) -> 3/4
    assert play["auc"] == pytest.approx(0.75)
    assert play["logloss"] == pytest.approx(-(math.log(0.9) + math.log(0.8) + math.log(0.4) + math.log(0.4)) / 4)
    assert play["mean_prediction"] == pytest.approx(0.525) and play["observed_rate"] == 0.5
    assert play["calibration"] == pytest.approx(1.05)
    assert play["count"] == 4 and play["positives"] == 2
    vcr = metrics["vcr"]
    assert vcr["count"] == 2 and vcr["mse"] == pytest.approx(((0.5 - 0.7) ** 2 + 0.2 ** 2) / 2)
    assert vcr["mae"] == pytest.approx(0.2)
    # share inside its space (rows 0, 2): one positive, one negative, ranked right.
    assert metrics["share"]["auc"] == 1.0 and metrics["share"]["count"] == 2


def test_auc_with_one_class_is_nan_with_a_reason(spec):
    metrics = evaluate_tasks(spec, {"play": [0.3, 0.6]}, {"play": [1, 1]})
    assert math.isnan(metrics["play"]["auc"])
    assert "only one class" in metrics["play"]["auc_undefined_reason"]
    assert metrics["play"]["logloss"] == pytest.approx(-(math.log(0.3) + math.log(0.6)) / 2)
    empty = evaluate_tasks(spec, {"share": [0.3]}, {"share": [1]}, {"share": [0]})
    assert math.isnan(empty["share"]["auc"]) and empty["share"]["count"] == 0


def test_binary_predictions_must_be_probabilities(spec):
    with pytest.raises(ValueError, match="apply predictions_from_outputs"):
        evaluate_tasks(spec, {"play": [2.3, -1.0]}, {"play": [1, 0]})
    converted = predictions_from_outputs(spec, {"play": torch.tensor([0.0]), "vcr": torch.tensor([2.5])})
    assert converted["play"][0] == pytest.approx(0.5) and converted["vcr"][0] == pytest.approx(2.5)


def test_mtl_gain_eq_11_reverses_lower_is_better(spec):
    mtl = {"play": {"auc": 0.70}, "vcr": {"mse": 0.10}}
    single = {"play": {"auc": 0.68}, "vcr": {"mse": 0.12}}
    gains = mtl_gain(mtl, single, spec)
    assert gains["play"] == pytest.approx(0.02)
    assert gains["vcr"] == pytest.approx(0.02)  # lower MSE is a positive gain


def test_gate_usage_means_and_entropy():
    layout = GateLayout(1, ["a", "shared"], ["a/0", "b/0", "shared/0"], [[0, 2], [0, 1, 2]])
    weights = torch.tensor([[[0.5, 0.0, 0.5], [1 / 3, 1 / 3, 1 / 3]],
                            [[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]]])
    (level,) = gate_usage([weights], [layout])
    assert level["a"]["mean_weight"] == pytest.approx({"a/0": 0.75, "shared/0": 0.25})
    assert level["a"]["entropy"] == pytest.approx(math.log(2) / 2)
    assert level["a"]["normalized_entropy"] == pytest.approx(0.5)
    assert level["shared"]["normalized_entropy"] == pytest.approx(1.0)
