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


def _auc(label, score):
    from sklearn.metrics import roc_auc_score

    return roc_auc_score(label, score)


def _strictly_increasing(calibrator):
    x, y = calibrator.knots_x.numpy(), calibrator.knots_y.numpy()
    return bool(np.all(np.diff(x) > 0) and np.all(np.diff(y) > 0))


@pytest.mark.parametrize("max_knots", [256, 8])
def test_isotonic_map_keeps_the_models_order(spec, max_knots):
    """PAV's own map (sklearn's predict) is flat inside each block: on fresh rows it ties scores the model
    ordered and moves AUC by more than 1e-4. The stored map is strictly increasing (knots too, thinned or not),
    so AUC moves by less than 1e-4, and it stays as calibrated as PAV's."""
    from sklearn.isotonic import IsotonicRegression

    rng = np.random.default_rng(1)
    predictions, labels = _sample(rng, 5_000)
    masks = {"comment": np.ones(5_000), "watch": np.ones(5_000)}
    calibration = fit_calibration(spec, predictions, labels, masks, method="isotonic", max_knots=max_knots)
    assert all(_strictly_increasing(c) for c in calibration.calibrators.values())
    assert calibration.calibrators["comment"].knots_x.numel() <= max(max_knots + 2, 8)
    fresh, truth = _sample(rng, 40_000)
    pav = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(predictions["comment"], labels["comment"])
    before = _auc(truth["comment"], fresh["comment"])
    assert abs(_auc(truth["comment"], pav.predict(fresh["comment"])) - before) > 1e-4    # today's map ties
    calibrated = calibration.apply_numpy(fresh)
    assert abs(_auc(truth["comment"], calibrated["comment"]) - before) < 1e-4
    assert np.all(np.diff(calibrated["comment"][np.argsort(fresh["comment"], kind="stable")]) >= 0)
    assert len(np.unique(calibrated["comment"])) > 0.99 * len(np.unique(fresh["comment"].astype(np.float32)))
    if max_knots < 20:
        return   # thinned this far, chords between 8 knots miss the curve: only the order is promised
    # As calibrated as PAV's map: mean level and the calibration error on the fresh rows.
    assert calibrated["comment"].mean() == pytest.approx(pav.predict(fresh["comment"]).mean(), rel=0.03)
    ece = expected_calibration_error(calibration_curve(calibrated["comment"], truth["comment"]))
    assert ece < expected_calibration_error(calibration_curve(pav.predict(fresh["comment"]), truth["comment"])) + 1e-3
    probe = np.array([-1.0, 0.0, 2.0])    # outside the fitted range: clipped to the ends, inside [0, 1]
    ends = calibration.apply_numpy({"comment": probe})["comment"]
    assert ends[0] == ends[1] == calibration.calibrators["comment"].knots_y[0] and 0 <= ends.min() < ends[2] <= 1


def test_isotonic_map_breaks_ties_where_pav_is_flat(spec):
    """An end block at rate 0 (no positives among the lowest scores) and a model with no ranking power at all
    (one block): the map is still strictly increasing, within 1e-4 of the observed rates."""
    rng = np.random.default_rng(4)
    score = rng.random(2_000)
    label = ((score > 0.5) & (rng.random(2_000) < 0.5)).astype(float)      # rate 0 below 0.5
    flat = rng.random(2_000) < 0.2                                          # rate 0.2 whatever the score
    masks = {"comment": np.ones(2_000), "watch": np.ones(2_000)}
    for labels in ({"comment": label, "watch": score}, {"comment": flat.astype(float), "watch": np.full(2_000, 3.0)}):
        calibration = fit_calibration(spec, {"comment": score, "watch": score}, labels, masks, method="isotonic")
        assert all(_strictly_increasing(c) for c in calibration.calibrators.values())
        mapped = calibration.apply_numpy({"comment": score, "watch": score})
        # Distinct scores stay distinct (but for float32 rounding where the map is flatter than the identity).
        assert len(np.unique(mapped["comment"])) >= 0.995 * len(np.unique(score.astype(np.float32)))
        assert mapped["comment"].mean() == pytest.approx(labels["comment"].mean(), abs=1e-3)   # as PAV's blocks
        assert mapped["watch"].mean() == pytest.approx(labels["watch"].mean(), abs=1e-3)


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
    strictly increasing knots (x and y), and probabilities inside [0, 1]."""
    rng = np.random.default_rng(3)
    scores = rng.random(20_000)
    labels = (rng.random(20_000) < scores ** 0.5).astype(float)   # reaches rate 1 at the top
    calibration = fit_calibration(spec, {"comment": scores, "watch": scores}, {"comment": labels, "watch": scores},
                                  {"comment": np.ones(20_000), "watch": np.ones(20_000)}, method="isotonic",
                                  max_knots=100_000)
    assert _strictly_increasing(calibration.calibrators["comment"])
    assert calibration.calibrators["comment"].knots_x.numel() > 100
    probe = np.concatenate([np.linspace(-0.5, 1.5, 200_001), scores])
    values = calibration.apply_numpy({"comment": probe})["comment"]
    assert values.min() >= 0.0 and values.max() <= 1.0
    ordered = calibration.apply_numpy({"comment": np.sort(probe)})["comment"]
    assert np.all(np.diff(ordered) >= 0), "the map decreases between knots"


@pytest.mark.parametrize("labels", ["binary", "regression"])
def test_pav_on_pooled_points_gives_every_rows_level_from_the_rows_themselves(labels):
    """The fit sees points, not rows (ties pooled, and runs of neighbouring scores whose rows share one label
    pooled: `_points`): PAV's level for every row must be what scikit-learn's IsotonicRegression fitted on the
    rows themselves gives; and the thinning quantiles np.quantile's of the rows."""
    from sklearn.isotonic import IsotonicRegression, isotonic_regression

    from ple_model.calibration import _points

    rng = np.random.default_rng(5)
    scores = np.round(rng.beta(2, 8, 30_000), 4).astype(np.float32)   # many ties
    if labels == "binary":
        label = (rng.random(scores.size) < scores * 1.5).astype(np.uint8)
    else:
        label = np.round(np.clip(scores + rng.normal(0, 0.2, scores.size), 0, 1), 1).astype(np.float32)
    points = _points(scores, label, max_knots=64)
    assert points.rows.size < np.unique(scores).size, "equal-label runs were not pooled"
    assert points.rows.sum() == scores.size and np.all(points.first <= points.last)
    fitted = isotonic_regression(points.mean_label, sample_weight=points.rows, y_min=0.0, y_max=1.0)
    by_rows = IsotonicRegression(y_min=0.0, y_max=1.0).fit_transform(scores.astype(np.float64),
                                                                      label.astype(np.float64))
    order = np.argsort(scores, kind="stable")
    assert np.allclose(np.repeat(fitted, points.rows.astype(int)), by_rows[order], rtol=0, atol=1e-12)
    assert np.array_equal(points.quantiles, np.quantile(scores.astype(np.float64), np.linspace(0, 1, 64)))


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


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning", "ignore::DeprecationWarning")
def test_exports_apply_the_same_map_as_evaluation(tmp_path):
    """The serving exports (TorchScript, and ONNX by the default dynamo exporter) of a calibrated model give what
    evaluation's numpy path gives: an isotonic map, a Platt map and a linear one (one export, three tasks)."""
    import onnxruntime

    from publishing.export import PositionalModel, export_model, sample_inputs
    from ple_model import build_model

    spec = ModelSpec.model_validate({
        "features": [{"name": "x", "type": "numeric"}, {"name": "z", "type": "numeric"}],
        "tasks": [{"name": "comment", "type": "binary"}, {"name": "like", "type": "binary"},
                  {"name": "watch", "type": "regression"}]})
    torch.manual_seed(0)
    model = build_model("ple", spec, expert_hidden=[8], tower_hidden=[4]).eval()
    wrapper = PositionalModel(model, spec)
    with torch.no_grad():
        raw = {k: v.numpy() for k, v in wrapper.raw(*sample_inputs(spec, None, 3_000)).items()}
    rng = np.random.default_rng(5)
    labels = {"comment": (rng.random(3_000) < raw["comment"] ** 2).astype(float),
              "like": (rng.random(3_000) < raw["like"] / 2).astype(float), "watch": 2 * raw["watch"] + 1}
    isotonic, platt = (fit_calibration(spec, raw, labels, method=m) for m in ("isotonic", "platt"))
    calibration = Calibration("isotonic", {"comment": isotonic.calibrators["comment"],
                                           "like": platt.calibrators["like"], "watch": platt.calibrators["watch"]})
    assert [c.kind for c in calibration.calibrators.values()] == ["isotonic", "platt", "linear"]
    info = export_model(model, spec, tmp_path, exporter="dynamo", calibration=calibration)
    assert info["onnx"]["exporter"] == "dynamo"
    check = tuple(torch.cat([t, t[:50] + 1e-3]) for t in sample_inputs(spec, None, 500))    # near-equal rows too
    with torch.no_grad():
        raw_check = {k: v.numpy() for k, v in wrapper.raw(*check).items()}
        scripted = torch.jit.load(str(tmp_path / "model.torchscript.pt"))(*check)
    expected = calibration.apply_numpy(raw_check)
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_out = dict(zip(spec.task_names, session.run(spec.task_names, {i.name: t.numpy() for i, t in
                                                                       zip(session.get_inputs(), check)})))
    script_out = dict(zip(spec.task_names, [o.numpy() for o in scripted]))
    # Equal up to the raw scores' float rounding across runtimes (1e-6 here), which a steep piece of the map
    # magnifies: inside the map's values of raw -/+ 1e-6.
    low = calibration.apply_numpy({k: v - 1e-6 for k, v in raw_check.items()})
    high = calibration.apply_numpy({k: v + 1e-6 for k, v in raw_check.items()})
    for task in spec.task_names:
        lo, hi = np.minimum(low[task], high[task]) - 1e-6, np.maximum(low[task], high[task]) + 1e-6
        assert np.all((lo <= expected[task]) & (expected[task] <= hi))
        assert np.all((lo <= onnx_out[task]) & (onnx_out[task] <= hi)), task
        assert np.all((lo <= script_out[task]) & (script_out[task] <= hi)), task
    assert np.abs(expected["comment"] - raw_check["comment"]).max() > 1e-2     # the maps did change the outputs
