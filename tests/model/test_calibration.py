"""ple_model.calibration: post-hoc calibration maps a miscalibrated score back to observed rates."""

import numpy as np
import pytest
import torch

from ple_model import ModelSpec
from ple_model.calibration import Calibration, fit_calibration
from ple_model.metrics import calibration_curve, expected_calibration_error


@pytest.fixture
def spec():
    return ModelSpec.model_validate({
        "features": [{"name": "x", "type": "numeric"}],
        "tasks": [{"name": "comment", "type": "binary", "label": "comment"},
                  {"name": "watch", "type": "regression", "label": "watch", "mask": "comment"}],
    })


def _sample(rng, n):
    """True rates ~ Beta(1, 30) (a rare event, ~3%); the model predicts HALF of them (the issue's comment task);
    a regression value predicted as 0.8 * truth + 0.1."""
    rate = rng.beta(1, 30, n)
    label = (rng.random(n) < rate).astype(float)
    truth = rng.random(n)
    return {"comment": rate / 2, "watch": 0.8 * truth + 0.1}, {"comment": label, "watch": truth}


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_calibration_maps_a_miscalibrated_score_back(spec, method):
    rng = np.random.default_rng(0)
    predictions, labels = _sample(rng, 40_000)
    calibration = fit_calibration(spec, predictions, labels, {"comment": np.ones(40_000), "watch": np.ones(40_000)},
                                  method=method)
    # Judged on a fresh sample, not the one it was fitted on.
    fresh, truth = _sample(rng, 40_000)
    calibrated = calibration.apply_numpy(fresh)
    before = fresh["comment"].mean() / truth["comment"].mean()
    after = calibrated["comment"].mean() / truth["comment"].mean()
    assert before == pytest.approx(0.5, abs=0.05) and after == pytest.approx(1.0, abs=0.06)
    assert expected_calibration_error(calibration_curve(calibrated["comment"], truth["comment"])) < 0.004 < \
        expected_calibration_error(calibration_curve(fresh["comment"], truth["comment"]))
    # The regression task: back to the identity within noise.
    assert np.abs(calibrated["watch"] - truth["watch"]).max() < 0.02
    assert calibration.fit_report["comment"]["rows"] == 40_000


def test_isotonic_module_reproduces_sklearn(spec):
    from sklearn.isotonic import IsotonicRegression

    rng = np.random.default_rng(1)
    predictions, labels = _sample(rng, 5_000)
    reference = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(predictions["comment"],
                                                                               labels["comment"])
    calibration = fit_calibration(spec, predictions, labels, {"comment": np.ones(5_000), "watch": np.ones(5_000)},
                                  method="isotonic", max_knots=100_000)
    probe = np.concatenate([[-1.0, 0.0, 2.0], rng.random(1000) * 0.05])   # also outside the fitted range
    assert np.abs(calibration.apply_numpy({"comment": probe})["comment"] - reference.predict(probe)).max() < 1e-5
    # Thinned to at most max_knots knots: still monotone and close.
    thin = fit_calibration(spec, predictions, labels, {"comment": np.ones(5_000), "watch": np.ones(5_000)},
                           max_knots=8)
    assert thin.calibrators["comment"].knots_x.numel() <= 10
    values = thin.apply_numpy({"comment": np.sort(probe)})["comment"]
    assert np.all(np.diff(values) >= -1e-7)


def test_payload_round_trip_and_identity_fallbacks(spec):
    rng = np.random.default_rng(2)
    predictions, labels = _sample(rng, 3_000)
    masks = {"comment": np.ones(3_000), "watch": np.r_[np.ones(50), np.zeros(2_950)]}  # watch: 50 rows in space
    calibration = fit_calibration(spec, predictions, labels, masks, method="platt")
    payload = calibration.to_payload()
    saved = torch.load(_save(payload), weights_only=False)
    again = Calibration.from_payload(saved)
    probe = {"comment": rng.random(100) * 0.1, "watch": rng.random(100)}
    for task in probe:
        assert np.array_equal(again.apply_numpy(probe)[task], calibration.apply_numpy(probe)[task])
    assert again.fit_report["watch"]["kind"] == "identity" and "50 rows" in again.fit_report["watch"]["reason"]
    assert np.array_equal(again.apply_numpy(probe)["watch"], probe["watch"].astype(np.float32))
    one_class = fit_calibration(spec, predictions, {"comment": np.zeros(3_000), "watch": labels["watch"]}, masks)
    assert one_class.fit_report["comment"]["reason"].startswith("one class")
    with pytest.raises(ValueError, match="unknown calibration method"):
        fit_calibration(spec, predictions, labels, masks, method="beta")


def _save(payload):
    import io

    buffer = io.BytesIO()
    torch.save(payload, buffer)
    buffer.seek(0)
    return buffer


def test_isotonic_fit_on_float64_scores_that_round_to_one_float32(spec):
    """20,000 float64 scores, some equal once stored as float32 (the module's precision): the fit still gives
    strictly increasing knots, and probabilities inside [0, 1]."""
    rng = np.random.default_rng(3)
    scores = rng.random(20_000)
    labels = (rng.random(20_000) < scores ** 0.5).astype(float)   # reaches rate 1 at the top
    calibration = fit_calibration(spec, {"comment": scores, "watch": scores}, {"comment": labels, "watch": scores},
                                  {"comment": np.ones(20_000), "watch": np.ones(20_000)}, method="isotonic",
                                  max_knots=100_000)
    knots = calibration.calibrators["comment"]
    knots_x, knots_y = knots.knots_x.numpy(), knots.knots_y.numpy()
    assert knots.kind == "isotonic" and knots_x.size > 100
    assert np.all(np.diff(knots_x) > 0), "knots not strictly increasing in x"
    assert np.all(np.diff(knots_y) >= 0), "the map decreases somewhere"
    probe = np.concatenate([np.linspace(-0.5, 1.5, 200_001), scores])
    values = calibration.apply_numpy({"comment": probe})["comment"]
    assert values.min() >= 0.0 and values.max() <= 1.0
    ordered = calibration.apply_numpy({"comment": np.sort(probe)})["comment"]
    assert np.all(np.diff(ordered) >= 0), "the map decreases between knots"


def test_isotonic_map_never_leaves_its_knots_range():
    """Float32 rounding of the piecewise-linear sum once gave 1.0000001 for a probability (the metrics refuse
    it). Over many random monotone maps ending at 1.0, no input may map outside [y_first, y_last]."""
    from ple_model.calibration import TaskCalibrator

    rng = np.random.default_rng(0)
    probe = torch.tensor([-1.0, 0.0, 0.5, 0.999999, 1.0, 2.0])
    for _ in range(500):
        x = np.unique(rng.random(rng.integers(3, 60)).astype(np.float32))
        y = np.sort(rng.integers(0, 40, len(x)) / 40.0).astype(np.float32)
        y[0], y[-1] = 0.0, 1.0
        values = TaskCalibrator("isotonic", torch.from_numpy(x), torch.from_numpy(y))(probe)
        assert float(values.min()) >= 0.0 and float(values.max()) <= 1.0, (x.tolist(), y.tolist())
