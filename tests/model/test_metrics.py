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


# --- intervals --------------------------------------------------------------------------
# Coverage tests: synthetic data sets with a KNOWN population difference between two models
# scored on the same rows; the 95% interval must contain it in 95% of them, within 3 binomial
# standard deviations. An interval that ignored the pairing (errors of the two models correlate
# at 0.8 here) is too wide and covers 100% of these data sets (measured); a too narrow one covers
# well under 90%. Coverage alone is a weak check of the standard error (200 data sets accept one
# from 0.85x to 1.48x of the true one), so each test also compares the intervals' mean standard
# error with the spread of the estimate over the data sets (the true standard error, measured):
# within 3 standard errors of a sample standard deviation, 1 / sqrt(2 (N - 1)) relative.


def _coverage_bounds(data_sets: int) -> tuple[float, float]:
    spread = 3 * math.sqrt(0.95 * 0.05 / data_sets)
    return 0.95 - spread, 0.95 + spread


def _assert_standard_error_matches_the_spread(estimated_variances, estimates) -> None:
    ratio = math.sqrt(np.mean(estimated_variances)) / np.std(estimates, ddof=1)
    tolerance = 3 / math.sqrt(2 * (len(estimates) - 1))
    assert abs(ratio - 1) <= tolerance, (ratio, tolerance)


DATA_SETS = 200
COVERAGE_BOUNDS = _coverage_bounds(DATA_SETS)


def _correlated_noise(rng, n, rho):
    common = rng.normal(size=n)
    return (math.sqrt(rho) * common + math.sqrt(1 - rho) * rng.normal(size=n),
            math.sqrt(rho) * common + math.sqrt(1 - rho) * rng.normal(size=n))


def test_delong_interval_covers_a_known_auc_difference_at_the_stated_rate():
    from scipy.stats import norm

    from ple_model.metrics import delong_auc, normal_interval

    # Binormal scores: negatives N(0, 1), positives N(mu, 1) -> AUC = Phi(mu / sqrt(2)).
    mu_a, mu_b = 1.0, 0.8
    truth = norm.cdf(mu_a / math.sqrt(2)) - norm.cdf(mu_b / math.sqrt(2))
    rng = np.random.default_rng(13)
    data_sets = 1000  # DeLong is cheap: 1000 data sets put the standard error within +-7%
    covered, differences, variances = 0, [], []
    for _ in range(data_sets):
        label = rng.random(600) < 0.3
        noise_a, noise_b = _correlated_noise(rng, label.size, 0.8)
        aucs, covariance = delong_auc(label, np.stack([mu_a * label + noise_a, mu_b * label + noise_b]))
        variance = covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1]
        low, high = normal_interval(aucs[0] - aucs[1], variance)
        covered += low <= truth <= high
        differences.append(aucs[0] - aucs[1])
        variances.append(variance)
    low_bound, high_bound = _coverage_bounds(data_sets)
    assert low_bound <= covered / data_sets <= high_bound, covered
    _assert_standard_error_matches_the_spread(variances, differences)
    assert abs(np.mean(differences) - truth) < 4 * np.std(differences) / math.sqrt(data_sets)  # unbiased


def test_paired_bootstrap_covers_a_known_mse_difference_at_the_stated_rate():
    from ple_model.metrics import bootstrap_ratio_samples, percentile_interval

    # Predictions = label + noise with variances 0.5 and 0.6 -> squared errors with means 0.5 and 0.6,
    # an MSE difference of -0.1 (the label itself cancels out of the errors).
    rng = np.random.default_rng(7)
    covered, differences, variances = 0, [], []
    n = 1000
    for index in range(DATA_SETS):
        noise_a, noise_b = _correlated_noise(rng, n, 0.8)
        errors = np.stack([(math.sqrt(0.5) * noise_a) ** 2, (math.sqrt(0.6) * noise_b) ** 2], axis=1)
        samples = bootstrap_ratio_samples(errors, np.ones((n, 1)), resamples=400, seed=index,
                                          denominator_index=[0, 0])
        low, high = percentile_interval(samples[:, 0] - samples[:, 1])
        covered += low <= -0.1 <= high
        differences.append(errors[:, 0].mean() - errors[:, 1].mean())
        variances.append(((high - low) / (2 * 1.959964)) ** 2)   # the interval's own standard error
    assert COVERAGE_BOUNDS[0] <= covered / DATA_SETS <= COVERAGE_BOUNDS[1], covered
    _assert_standard_error_matches_the_spread(variances, differences)


def test_delong_auc_matches_sklearn_and_bootstrap_is_paired_by_seed():
    from sklearn.metrics import roc_auc_score

    from ple_model.metrics import bootstrap_counts, bootstrap_ratio_samples, delong_auc

    rng = np.random.default_rng(0)
    label = rng.random(500) < 0.4
    scores = np.stack([np.round(rng.normal(size=500) + label, 1), rng.normal(size=500) + 0.5 * label])  # with ties
    aucs, covariance = delong_auc(label, scores)
    assert aucs == pytest.approx([roc_auc_score(label, s) for s in scores], abs=1e-12)
    assert covariance.shape == (2, 2) and np.all(np.diag(covariance) > 0)
    with pytest.raises(ValueError, match="both classes"):
        delong_auc(np.ones(5), np.arange(5.0))
    # The same seed gives the same resampled rows, whatever the statistic and the chunking.
    first = np.concatenate(list(bootstrap_counts(50, 30, seed=3)))
    chunked = np.concatenate(list(bootstrap_counts(50, 30, seed=3, max_chunk_elements=200)))
    assert first.shape == (30, 50) and np.all(first.sum(axis=1) == 50)
    values = rng.random(50)
    alone = bootstrap_ratio_samples(values, np.ones(50), 30, seed=3)[:, 0]
    assert np.array_equal(first, chunked)
    assert alone == pytest.approx((first @ values) / 50)


def test_delong_variance_and_covariance_equal_the_definition():
    """Sun & Xu's midrank algorithm against DeLong et al.'s structural components computed pair by pair
    (tests/delong_reference.py): three correlated models with ties inside and across classes."""
    from ple_model.metrics import delong_auc
    from tests.delong_reference import delong_by_definition

    rng = np.random.default_rng(5)
    label = rng.random(120) < 0.35
    noise_a, noise_b = _correlated_noise(rng, label.size, 0.6)
    scores = np.stack([np.round(noise_a + label, 1), noise_b + 0.4 * label, np.round(rng.random(label.size), 1)])
    aucs, covariance = delong_auc(label, scores)
    expected_aucs, expected_covariance = delong_by_definition(label, scores)
    np.testing.assert_allclose(aucs, expected_aucs, rtol=0, atol=1e-12)
    np.testing.assert_allclose(covariance, expected_covariance, rtol=1e-10, atol=0)
    assert abs(expected_covariance[0, 1]) > 0.1 * np.sqrt(expected_covariance[0, 0] * expected_covariance[1, 1])
    # The smallest case by hand: positives {0.9, 0.4}, negatives {0.6, 0.2, 0.4}: psi rows (1, 1, 1), (0, 1, 0.5)
    # -> V10 = (1, 0.5), V01 = (0.5, 1, 0.75), AUC 0.75; var = var(V10) / 2 + var(V01) / 3.
    tiny_aucs, tiny_covariance = delong_auc(np.array([1, 0, 0, 1, 0]), np.array([0.9, 0.6, 0.2, 0.4, 0.4]))
    assert tiny_aucs[0] == pytest.approx(0.75)
    assert tiny_covariance[0, 0] == pytest.approx(np.var([1, 0.5], ddof=1) / 2 + np.var([0.5, 1, 0.75], ddof=1) / 3)



@pytest.mark.parametrize("chunk_rows", [1, 2, 7])
def test_delong_components_walked_in_chunks_equal_the_definition(chunk_rows):
    """The sorted rows are walked a chunk at a time, cut only between tie blocks: with chunks shorter than
    the tie blocks (scores on a 0.1 grid, 120 rows), every row's component and the AUC are the definition's."""
    from ple_model.metrics import structural_components
    from tests.delong_reference import delong_by_definition

    rng = np.random.default_rng(9)
    label = rng.random(120) < 0.35
    score = np.round(rng.random(120) + 0.3 * label, 1)
    positives, negatives = np.empty(label.sum()), np.empty((~label).sum())
    auc = structural_components(label, score, out=(positives, negatives), chunk_rows=chunk_rows)
    expected_aucs, expected_covariance = delong_by_definition(label, score[None, :])
    assert auc == pytest.approx(expected_aucs[0], abs=1e-12)
    variance = np.var(positives, ddof=1) / positives.size + np.var(negatives, ddof=1) / negatives.size
    assert variance == pytest.approx(expected_covariance[0, 0], rel=1e-10)
    whole = (np.empty(label.sum()), np.empty((~label).sum()))
    assert structural_components(label, score, out=whole) == auc
    assert np.array_equal(whole[0], positives) and np.array_equal(whole[1], negatives)

# --- GAUC, ranking, calibration error ----------------------------------------------------

def test_gauc_equals_auc_for_one_user_and_skips_one_class_users():
    from sklearn.metrics import roc_auc_score

    from ple_model.metrics import group_auc

    rng = np.random.default_rng(1)
    label = (rng.random(300) < 0.3).astype(float)
    score = np.round(rng.random(300) + 0.3 * label, 2)  # ties inside users too
    one_user = group_auc(label, score, np.zeros(300))
    assert one_user.value == pytest.approx(roc_auc_score(label, score), abs=1e-12)
    assert (one_user.users, one_user.users_skipped) == (1, 0)

    users = rng.integers(0, 20, 300)
    label[users == 3] = 0.0                      # user 3: negatives only
    label[users == 7] = 1.0                      # user 7: positives only
    result = group_auc(label, score, users)
    # By hand: per-user sklearn AUC, weighted by the user's rows, users with one class left out.
    kept = [u for u in range(20) if 0 < label[users == u].sum() < (users == u).sum()]
    expected = (sum((users == u).sum() * roc_auc_score(label[users == u], score[users == u]) for u in kept)
                / sum((users == u).sum() for u in kept))
    assert result.value == pytest.approx(expected, abs=1e-12)
    assert result.users == len(kept) and result.users_skipped == 20 - len(kept) and result.users_skipped >= 2
    assert result.rows == sum((users == u).sum() for u in kept)


def test_ndcg_matches_sklearn_per_user_and_breaks_ties_pessimistically():
    from sklearn.metrics import ndcg_score

    from ple_model.metrics import ndcg_at_k, ranking_score

    rng = np.random.default_rng(2)
    users = rng.integers(0, 15, 400)
    utility = rng.integers(0, 3, 400).astype(float) * (rng.random(400) < 0.4)
    score = rng.random(400)
    result = ndcg_at_k(users, score, utility, k=5)
    kept = [u for u in range(15) if utility[users == u].sum() > 0]
    expected = np.mean([ndcg_score([utility[users == u]], [score[users == u]], k=5) for u in kept])
    assert result.value == pytest.approx(expected, abs=1e-12)
    assert result.users == len(kept) and result.users + result.users_skipped == 15
    # A constant score cannot look good by row order: ties rank the worst rows first.
    ordered = np.array([3.0, 2.0, 1.0, 0.0])
    assert ndcg_at_k(np.zeros(4), np.zeros(4), ordered, k=2).value == pytest.approx(
        (0 + 1 / math.log2(3)) / (3 + 2 / math.log2(3)))
    # prod_k p_k^w_k, as a sum of logs; a regression value enters as itself (floored).
    spec = ModelSpec.model_validate({"features": [{"name": "x", "type": "numeric"}],
                                     "tasks": [{"name": "a", "type": "binary"}, {"name": "v", "type": "regression"}]})
    logs = ranking_score(spec, {"a": np.array([0.5, 0.2]), "v": np.array([0.8, -1.0])}, {"a": 2.0, "v": 1.0})
    assert np.exp(logs) == pytest.approx([0.5 ** 2 * 0.8, 0.2 ** 2 * 1e-6])
    with pytest.raises(ValueError, match="unknown tasks"):
        ranking_score(spec, {"a": np.ones(2)}, {"b": 1.0})


def test_expected_calibration_error_by_hand():
    from ple_model.metrics import calibration_curve, expected_calibration_error

    prediction = np.array([0.1, 0.1, 0.2, 0.2, 0.6, 0.8])
    label = np.array([0, 0, 1, 0, 1, 1])
    curve = calibration_curve(prediction, label, bins=3)   # bins of 2 rows, in prediction order
    assert curve["count"] == [2, 2, 2]
    # |0.1 - 0| , |0.2 - 0.5|, |0.7 - 1| each over a third of the rows
    assert expected_calibration_error(curve) == pytest.approx((0.1 + 0.3 + 0.3) / 3)


def test_logloss_mse_and_mae_equal_sklearns_across_chunks_and_at_the_clipped_ends(spec):
    from sklearn.metrics import log_loss, mean_absolute_error, mean_squared_error

    from ple_model.metrics import _log_loss

    rng = np.random.default_rng(3)
    prediction = rng.uniform(size=3000).astype(np.float32)
    prediction[:4] = [0.0, 1.0, 0.0, 1.0]            # clipped to 1e-7 / 1 - 1e-7, as sklearn's callers clip
    label = (rng.uniform(size=3000) < 0.3).astype(np.float32)
    label[:4] = [1, 0, 0, 1]
    clipped = np.clip(prediction.astype(np.float64), 1e-7, 1 - 1e-7)
    expected = log_loss(label, clipped, labels=[0, 1])
    assert _log_loss(label, prediction, rows=256) == pytest.approx(expected, rel=1e-12)   # 12 chunks
    assert _log_loss(label, prediction) == pytest.approx(expected, rel=1e-12)
    target = rng.normal(size=3000)
    metrics = evaluate_tasks(spec, {"play": prediction, "vcr": prediction, "share": prediction},
                             {"play": label, "vcr": target, "share": label}, {"vcr": np.ones(3000), "share": np.ones(3000)})
    assert metrics["vcr"]["mse"] == pytest.approx(mean_squared_error(target, prediction.astype(np.float64)), rel=1e-12)
    assert metrics["vcr"]["mae"] == pytest.approx(mean_absolute_error(target, prediction.astype(np.float64)), rel=1e-12)
