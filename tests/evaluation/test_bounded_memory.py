"""Evaluation's per-row work in bounded pieces: the row bootstrap over blocks of rows and the calibration
applied in chunks of rows give what the whole-day computations give (docs/measurements/memory.md)."""

from __future__ import annotations

import numpy as np
import torch

from ple_model.calibration import Calibration, TaskCalibrator
from ple_model.metrics import (bootstrap_block_counts, bootstrap_ratio_samples, bootstrap_ratio_samples_by_block,
                               percentile_interval)


def test_block_counts_are_n_out_of_n_resamples_and_repeat_for_a_seed():
    units, resamples = 1000, 400
    blocks = list(bootstrap_block_counts(units, resamples, seed=5, block_units=64))
    assert [(start, stop) for start, stop, _ in blocks][-1] == (960, 1000)
    counts = np.concatenate([c for _, _, c in blocks], axis=1)
    assert counts.shape == (resamples, units) and (counts.sum(axis=1) == units).all()
    # multinomial(n, 1/n): mean count 1, variance 1 - 1/n, for rows of the first and the last block alike
    assert abs(counts.mean() - 1) < 1e-12 and abs(counts.var() - (1 - 1 / units)) < 0.02
    assert abs(counts[:, :64].mean() - 1) < 0.02 and abs(counts[:, -40:].mean() - 1) < 0.03
    again = np.concatenate([c for _, _, c in bootstrap_block_counts(units, resamples, seed=5, block_units=64)], axis=1)
    other = np.concatenate([c for _, _, c in bootstrap_block_counts(units, resamples, seed=6, block_units=64)], axis=1)
    assert np.array_equal(counts, again) and not np.array_equal(counts, other)


def test_block_bootstrap_is_the_ratio_of_the_resampled_sums_and_agrees_with_the_whole_matrix_one():
    rng = np.random.default_rng(0)
    units, resamples = 3000, 1000
    in_space = (rng.random(units) < 0.7).astype(np.float64)
    losses = np.stack([rng.exponential(0.5, units), rng.exponential(0.6, units)], axis=1) * in_space[:, None]
    denominators = in_space[:, None]
    max_elements = resamples * 128   # blocks of 128 rows
    samples, numerator_totals, denominator_totals = bootstrap_ratio_samples_by_block(
        lambda start, stop: (losses[start:stop], denominators[start:stop]), units, resamples, seed=1,
        denominator_index=[0, 0], max_block_elements=max_elements)
    counts = np.concatenate([c for _, _, c in bootstrap_block_counts(units, resamples, 1, 128)], axis=1)
    direct = (counts @ losses) / (counts @ denominators)
    np.testing.assert_allclose(samples, direct, rtol=1e-12)
    np.testing.assert_allclose(numerator_totals / denominator_totals[0], losses.sum(0) / in_space.sum(), rtol=1e-12)
    # Same method, another random stream: the intervals agree with the whole-matrix bootstrap's within the
    # Monte Carlo error of 1000 resamples (~2% of the width per end; 10% allowed).
    whole = bootstrap_ratio_samples(losses, denominators, resamples, seed=1, denominator_index=[0, 0])
    for column in range(2):
        low, high = percentile_interval(samples[:, column])
        whole_low, whole_high = percentile_interval(whole[:, column])
        width = whole_high - whole_low
        assert abs(low - whole_low) < 0.1 * width and abs(high - whole_high) < 0.1 * width
    paired = percentile_interval(samples[:, 1] - samples[:, 0])
    whole_paired = percentile_interval(whole[:, 1] - whole[:, 0])
    assert abs(paired[0] - whole_paired[0]) < 0.1 * (whole_paired[1] - whole_paired[0])


def test_calibration_in_chunks_of_rows_equals_one_call_on_all_rows():
    knots_x = torch.linspace(0.01, 0.99, 200)
    knots_y = torch.sqrt(knots_x)
    calibration = Calibration("isotonic", {"play": TaskCalibrator("isotonic", knots_x, knots_y)})
    values = np.random.default_rng(2).random(5000).astype(np.float32)
    with torch.no_grad():
        whole = calibration.calibrate("play", torch.from_numpy(values)).numpy()
    chunked = calibration.apply_numpy({"play": values, "other": values}, rows_per_chunk=777)
    assert np.array_equal(chunked["play"], whole) and chunked["play"].dtype == np.float32
    assert np.array_equal(chunked["other"], values)   # a task without a calibrator passes through


def test_per_user_figures_by_blocks_of_users_equal_the_whole_day_ones():
    from ple_model import ModelSpec
    from ple_model.metrics import group_auc, ndcg_at_k, ranking_score

    from evaluation.user_blocks import blocked_group_auc, blocked_ndcg, user_blocks

    rng = np.random.default_rng(3)
    rows = 4000
    users = rng.integers(10_000, 10_300, rows) * 7          # ids need not be dense; a user's rows are scattered
    users[:300] = 5                                          # one user larger than a block
    label = (rng.random(rows) < 0.3).astype(np.float32)
    score = np.round(rng.random(rows), 2).astype(np.float32)  # ties
    in_space = rng.random(rows) < 0.8
    in_space[users == 70_007] = False                         # users without a row in the sample space
    blocks = user_blocks(users, max_rows=97)
    _, expected_codes = np.unique(users, return_inverse=True)
    assert np.array_equal(blocks.codes, expected_codes) and len(blocks.bounds) > 30
    assert max(stop - start for start, stop in blocks.bounds) == (users == 5).sum()

    whole = group_auc(label[in_space], score[in_space], users[in_space])
    blocked = blocked_group_auc(blocks, label, score, in_space)
    present = np.unique(expected_codes[in_space])
    assert blocked.value == whole.value and (blocked.users, blocked.users_skipped) == (whole.users, whole.users_skipped)
    assert np.array_equal(blocked.auc[present], whole.auc, equal_nan=True)
    assert np.array_equal(blocked.weight[present], whole.weight) and blocked.weight.sum() == whole.weight.sum()

    spec = ModelSpec.model_validate({"features": [{"name": "x", "type": "numeric"}], "tasks": [{"name": "play", "type": "binary", "label": "play"},
                                               {"name": "watch", "type": "regression", "label": "watch"}]})
    predictions = {"play": score, "watch": rng.random(rows).astype(np.float32)}
    utility = label + (rng.random(rows) < 0.1)
    weights = {"play": 1.0, "watch": 0.5}
    whole_ndcg = ndcg_at_k(users, ranking_score(spec, predictions, weights), utility, k=5)
    blocked_ndcg_result = blocked_ndcg(blocks, spec, predictions, weights, utility, k=5)
    assert blocked_ndcg_result.value == whole_ndcg.value and blocked_ndcg_result.users == whole_ndcg.users
    assert np.array_equal(blocked_ndcg_result.ndcg, whole_ndcg.ndcg, equal_nan=True)


def test_auc_and_logloss_from_one_sort_and_chunks_are_sklearns():
    from sklearn.metrics import log_loss, roc_auc_score

    from ple_model.metrics import _binary_metrics, delong_auc

    rng = np.random.default_rng(4)
    rows = 3000
    score = np.round(rng.random(rows), 3)                       # ties
    label = (rng.random(rows) < score).astype(np.float64)
    figures = _binary_metrics(score, label, rows)
    assert abs(figures["auc"] - roc_auc_score(label, score)) < 1e-15
    assert abs(figures["logloss"] - log_loss(label, np.clip(score, 1e-7, 1 - 1e-7))) < 1e-15
    aucs, _ = delong_auc(label, np.stack([score, score[::-1]]).astype(np.float32))
    assert abs(aucs[0] - figures["auc"]) < 1e-15 and abs(aucs[1] - roc_auc_score(label, score[::-1])) < 1e-15
