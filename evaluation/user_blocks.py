"""GAUC and NDCG@k a block of users at a time: the per-row work of those metrics bounded by a block.

`ple_model.metrics.group_auc` / `ndcg_at_k` on the whole day hold ~100 B a row of sorts and float64
copies while they run (measured with tracemalloc: 106 B a row at 1M rows). Both are per-user figures,
so the rows are grouped by user once (`user_blocks`: a user code and the rows in user order, 8 B a row)
and the same functions run on blocks of whole users of at most `max_rows` rows. Each user's rows reach
them in table order, as on the whole day, so every per-user figure is the same sum in the same order;
the day's figure is then the same average of the per-user ones (the same numbers as one call on the
whole day).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import numpy as np

from ple_model.metrics import GroupAUC, GroupNDCG, group_auc, ndcg_at_k, ranking_score

DEFAULT_BLOCK_ROWS = 1 << 18


@dataclass
class UserBlocks:
    codes: np.ndarray               # per row: the user's code, 0..users-1 in the order of the user ids
    order: np.ndarray               # row numbers sorted by user (stable: a user's rows in table order)
    bounds: list[tuple[int, int]]   # [start, stop) into order: whole users, <= max_rows rows unless one user has more
    users: int

    def rows(self) -> Iterator[np.ndarray]:
        for start, stop in self.bounds:
            yield self.order[start:stop]


def user_blocks(users: np.ndarray, max_rows: int = DEFAULT_BLOCK_ROWS) -> UserBlocks:
    """Codes as np.unique(users, return_inverse=True) gives them, with less held at once (~21 B a row)."""
    users = np.asarray(users).reshape(-1)
    order = np.argsort(users, kind="stable")
    ordered = users[order]
    starts = np.empty(users.size, dtype=bool)
    starts[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=starts[1:])
    del ordered
    index = np.int32 if users.size < 2 ** 31 else np.int64
    sorted_codes = np.cumsum(starts, dtype=index)
    sorted_codes -= 1
    codes = np.empty(users.size, dtype=index)
    codes[order] = sorted_codes
    count = int(sorted_codes[-1]) + 1 if users.size else 0
    ends = np.flatnonzero(np.append(starts[1:], True)) + 1 if users.size else np.zeros(0, dtype=np.int64)
    bounds, start = [], 0
    while start < users.size:
        fitting = int(np.searchsorted(ends, start + max_rows, side="right")) - 1
        stop = int(ends[fitting]) if fitting >= 0 and ends[fitting] > start else \
            int(ends[np.searchsorted(ends, start, side="right")])
        bounds.append((start, stop))
        start = stop
    return UserBlocks(codes, order.astype(index), bounds, count)


def blocked_group_auc(blocks: UserBlocks, label: np.ndarray, score: np.ndarray, in_space: np.ndarray) -> GroupAUC:
    """`group_auc(label[in_space], score[in_space], users[in_space])`, per user indexed by user code (users
    without a row in the sample space: weight 0, AUC NaN)."""
    auc, weight = np.full(blocks.users, math.nan), np.zeros(blocks.users)
    present = np.zeros(blocks.users, dtype=bool)
    for rows in blocks.rows():
        rows = rows[in_space[rows]]
        if rows.size == 0:
            continue
        codes = blocks.codes[rows]
        result = group_auc(label[rows], score[rows], codes)
        found = np.unique(codes)
        present[found], auc[found], weight[found] = True, result.auc, result.weight
    valid = np.isfinite(auc)
    value = float((weight[valid] * auc[valid]).sum() / weight.sum()) if valid.any() else math.nan
    return GroupAUC(value, int(valid.sum()), int((present & ~valid).sum()), int(weight.sum()), auc, weight)


def blocked_ndcg(blocks: UserBlocks, spec: Any, predictions: Mapping[str, np.ndarray], weights: Mapping[str, float],
                 utility: np.ndarray, k: int) -> GroupNDCG:
    """`ndcg_at_k(users, ranking_score(spec, predictions, weights), utility, k)`, per user indexed by user code."""
    ndcg, valid = np.full(blocks.users, math.nan), np.zeros(blocks.users)
    for rows in blocks.rows():
        score = ranking_score(spec, {task: values[rows] for task, values in predictions.items()}, weights)
        codes = blocks.codes[rows]
        result = ndcg_at_k(codes, score, utility[rows], k)
        found = np.unique(codes)
        ndcg[found], valid[found] = result.ndcg, result.valid
    averaged = valid > 0
    value = float(ndcg[averaged].mean()) if averaged.any() else math.nan
    return GroupNDCG(value, k, int(averaged.sum()), int((~averaged).sum()), ndcg, valid)
