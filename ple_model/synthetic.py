"""Synthetic data (numpy, seeded).

1. `correlated_regression_tasks`: the MMoE (KDD 2018) generator the PLE paper
   uses to vary task correlation (PLE_PAPER.md):
     u1, u2 orthogonal unit vectors in R^d; w1 = c*u1;
     w2 = c*(p*u1 + sqrt(1-p^2)*u2);  x ~ N(0, I_d);
     y_i = w_i.x + sum_{j=1..m} sin(alpha_j * w_i.x + beta_j) + eps_i,
     alpha_j, beta_j ~ N(0, 1) fixed per data set, eps_i ~ N(0, 0.01).
   p is the cosine of w1 and w2 (the "task correlation"; the Pearson
   correlation of the labels is a nonlinear function of it).
2. `easy_multitask_problem`: a small, learnable recommendation-like problem
   with categorical, multi_categorical and numeric features, two binary tasks
   and one regression task with a sample-space mask (watch ratio only for
   played rows, NaN elsewhere), for tests and throughput checks.
"""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np
import torch

from .spec import ModelSpec


def correlated_regression_tasks(n_samples: int, correlation: float, dim: int = 512, scale: float = 1.0,
                                num_sin: int = 10, noise_variance: float = 0.01,
                                seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Returns x (n_samples, dim) float32 and y (n_samples, 2) float32."""
    if not -1.0 <= correlation <= 1.0:
        raise ValueError(f"correlation must be in [-1, 1], got {correlation}")
    if dim < 2:
        raise ValueError("dim must be >= 2 (two orthogonal vectors are needed)")
    rng = np.random.default_rng(seed)
    # Two orthonormal columns from the QR decomposition of a Gaussian matrix.
    basis, _ = np.linalg.qr(rng.standard_normal((dim, 2)))
    u1, u2 = basis[:, 0], basis[:, 1]
    w1 = scale * u1
    w2 = scale * (correlation * u1 + np.sqrt(1.0 - correlation ** 2) * u2)
    alphas = rng.standard_normal(num_sin)
    betas = rng.standard_normal(num_sin)
    x = rng.standard_normal((n_samples, dim))
    labels = []
    for w in (w1, w2):
        projection = x @ w
        signal = projection + np.sin(np.outer(projection, alphas) + betas).sum(axis=1)
        labels.append(signal + rng.normal(0.0, np.sqrt(noise_variance), n_samples))
    return x.astype(np.float32), np.stack(labels, axis=1).astype(np.float32)


def correlated_tasks_spec(dim: int, task_types: Tuple[str, str] = ("regression", "regression")) -> ModelSpec:
    """Spec for correlated_regression_tasks: numeric features x0..x{dim-1}, tasks task1, task2."""
    return ModelSpec.model_validate({
        "features": [{"name": f"x{i}", "type": "numeric"} for i in range(dim)],
        "tasks": [{"name": f"task{i + 1}", "type": kind, "label": f"task{i + 1}"} for i, kind in enumerate(task_types)],
    })


def correlated_tasks_features(x: np.ndarray) -> Dict[str, torch.Tensor]:
    """x (n, dim) -> {"x0": (n,), ...} as torch views of one tensor (no copies)."""
    matrix = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return {f"x{i}": matrix[:, i] for i in range(matrix.shape[1])}


def to_binary_and_regression(y: np.ndarray) -> np.ndarray:
    """Task 1 -> binary (above its median), task 2 stays regression (spec: ("binary", "regression"))."""
    out = y.astype(np.float32).copy()
    out[:, 0] = (y[:, 0] > np.median(y[:, 0])).astype(np.float32)
    return out


EASY_SPEC = {
    "features": [
        {"name": "user_idx", "type": "categorical", "vocab_size": 40, "embedding_dim": 8},
        {"name": "item_idx", "type": "categorical", "vocab_size": 60, "embedding_dim": 8},
        {"name": "hour", "type": "categorical", "vocab_size": 24, "embedding_dim": 4},
        {"name": "tag_idx", "type": "multi_categorical", "vocab_size": 12, "embedding_dim": 4, "max_len": 3},
        {"name": "user_ctr", "type": "numeric"},
        {"name": "item_quality", "type": "numeric"},
    ],
    "tasks": [
        {"name": "play", "type": "binary", "label": "play"},
        {"name": "watch_ratio", "type": "regression", "label": "watch_ratio", "mask": "play"},
        {"name": "share", "type": "binary", "label": "share"},
    ],
}


def easy_multitask_problem(n_samples: int, seed: int = 0) -> Tuple[ModelSpec, Dict[str, np.ndarray]]:
    """A learnable 3-task problem. Returns (spec, columns keyed by column name).

    play ~ Bernoulli(sigmoid(user + item + tags + 2*user_ctr)); watch_ratio is
    defined only where play == 1 (NaN elsewhere) and depends on item and
    item_quality; share ~ Bernoulli(sigmoid(item + 1.5*item_quality - 1)).
    The Bayes AUC of play and share is about 0.85-0.9 (strong signals), so a
    model that learns anything clears 0.7 quickly.
    """
    spec = ModelSpec.model_validate(EASY_SPEC)
    rng = np.random.default_rng(seed)
    user_effect = rng.normal(0, 1.0, 40)
    item_effect = rng.normal(0, 1.0, 60)
    tag_effect = rng.normal(0, 0.7, 12)
    tag_effect[0] = 0.0  # padding
    user = rng.integers(1, 40, n_samples)
    item = rng.integers(1, 60, n_samples)
    hour = rng.integers(0, 24, n_samples)
    tags = rng.integers(0, 12, (n_samples, 3))
    user_ctr = rng.normal(0, 1, n_samples).astype(np.float32)
    item_quality = rng.normal(0, 1, n_samples).astype(np.float32)
    tag_mean = np.where(tags > 0, tag_effect[tags], 0).sum(1) / np.maximum((tags > 0).sum(1), 1)
    play_logit = user_effect[user] + item_effect[item] + tag_mean + 2.0 * user_ctr
    play = (rng.random(n_samples) < 1 / (1 + np.exp(-play_logit))).astype(np.float32)
    watch = 1 / (1 + np.exp(-(item_effect[item] + item_quality))) + rng.normal(0, 0.05, n_samples)
    watch = np.where(play > 0, watch, np.nan).astype(np.float32)
    share_logit = item_effect[item] + 1.5 * item_quality - 1.0
    share = (rng.random(n_samples) < 1 / (1 + np.exp(-share_logit))).astype(np.float32)
    columns = {
        "user_idx": user.astype(np.int64), "item_idx": item.astype(np.int64), "hour": hour.astype(np.int64),
        "tag_idx": tags.astype(np.int64), "user_ctr": user_ctr, "item_quality": item_quality,
        "play": play, "watch_ratio": watch, "share": share,
    }
    return spec, columns


def to_tensors(columns: Dict[str, np.ndarray]) -> Dict[str, torch.Tensor]:
    return {name: torch.from_numpy(np.ascontiguousarray(values)) for name, values in columns.items()}
