"""DeLong's AUC covariance by its definition (DeLong, DeLong & Clarke-Pearson 1988), for tests.

A second implementation to check ple_model.metrics.delong_auc (Sun & Xu's O(n log n) midrank
algorithm) against: every positive is compared with every negative, O(k * m * n), so only for
small samples. psi(x, y) = 1 if x > y, 1/2 on a tie, 0 otherwise;
V10[k, i] = mean over negatives j of psi(X[k, i], Y[k, j])   (positive i's structural component)
V01[k, j] = mean over positives i of psi(X[k, i], Y[k, j])   (negative j's)
AUC[k] = mean of V10[k]; S = cov(V10) / m + cov(V01) / n, both covariances with 1 / (count - 1).
"""

from __future__ import annotations

import numpy as np

Z_95 = 1.959963984540054  # the standard normal's 97.5% quantile


def delong_by_definition(label, scores) -> tuple[np.ndarray, np.ndarray]:
    """(AUCs (k,), covariance (k, k)) of k score vectors (k, n) or (n,) on the same rows."""
    positive = np.asarray(label).reshape(-1) > 0.5
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    x, y = scores[:, positive], scores[:, ~positive]
    psi = (x[:, :, None] > y[:, None, :]) + 0.5 * (x[:, :, None] == y[:, None, :])   # (k, m, n)
    v10, v01 = psi.mean(axis=2), psi.mean(axis=1)
    m, n = x.shape[1], y.shape[1]
    aucs = v10.mean(axis=1)
    d10, d01 = v10 - aucs[:, None], v01 - aucs[:, None]
    covariance = d10 @ d10.T / ((m - 1) * m) + d01 @ d01.T / ((n - 1) * n)
    return aucs, covariance


def delong_half_width(label, score) -> float:
    """Half-width of the 95% normal interval of one model's AUC."""
    _, covariance = delong_by_definition(label, score)
    return Z_95 * float(np.sqrt(covariance[0, 0]))


def delong_difference_half_width(label, score_a, score_b) -> float:
    """Half-width of the 95% normal interval of AUC(a) - AUC(b) on the same rows (paired)."""
    _, c = delong_by_definition(label, np.stack([score_a, score_b]))
    return Z_95 * float(np.sqrt(c[0, 0] + c[1, 1] - 2 * c[0, 1]))


def mean_half_width(values) -> float:
    """Half-width of the 95% normal interval of a mean of independent rows: an independent standard error
    that a percentile bootstrap's interval must approach."""
    values = np.asarray(values, dtype=np.float64)
    return Z_95 * float(values.std(ddof=1) / np.sqrt(values.size))
