import numpy as np
import pytest

from ple_model import synthetic


def test_correlated_tasks_are_seeded_and_follow_the_correlation_knob():
    x, y = synthetic.correlated_regression_tasks(4000, correlation=1.0, dim=16, seed=1)
    x2, y2 = synthetic.correlated_regression_tasks(4000, correlation=1.0, dim=16, seed=1)
    assert x.shape == (4000, 16) and y.shape == (4000, 2) and x.dtype == np.float32
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    # p = 1: w1 == w2, labels differ only by the two noises (variance 0.01 each).
    assert np.var(y[:, 0] - y[:, 1]) == pytest.approx(0.02, rel=0.15)
    _, y_low = synthetic.correlated_regression_tasks(4000, correlation=0.0, dim=16, seed=1)
    _, y_mid = synthetic.correlated_regression_tasks(4000, correlation=0.5, dim=16, seed=1)
    label_correlation = [abs(np.corrcoef(labels.T)[0, 1]) for labels in (y_low, y_mid, y)]
    assert label_correlation[0] < label_correlation[1] < label_correlation[2]
    with pytest.raises(ValueError, match="correlation must be in"):
        synthetic.correlated_regression_tasks(10, correlation=1.5)


def test_binary_regression_helper_and_spec():
    _, y = synthetic.correlated_regression_tasks(1000, correlation=0.5, dim=8, seed=0)
    mixed = synthetic.to_binary_and_regression(y)
    assert set(np.unique(mixed[:, 0])) == {0.0, 1.0} and mixed[:, 0].mean() == pytest.approx(0.5, abs=0.01)
    assert np.array_equal(mixed[:, 1], y[:, 1])
    spec = synthetic.correlated_tasks_spec(8, ("binary", "regression"))
    assert spec.input_dim == 8 and [t.type for t in spec.tasks] == ["binary", "regression"]
    features = synthetic.correlated_tasks_features(np.zeros((3, 8), dtype=np.float32))
    assert list(features) == [f"x{i}" for i in range(8)]


def test_easy_problem_has_a_masked_regression_task():
    spec, columns = synthetic.easy_multitask_problem(500, seed=0)
    play, watch = columns["play"], columns["watch_ratio"]
    assert np.isnan(watch[play == 0]).all() and not np.isnan(watch[play == 1]).any()
    assert spec.task("watch_ratio").mask == "play"
    assert 0.2 < play.mean() < 0.8
