"""Embeddings at scale: hashed open vocabularies and sparse (touched-rows) gradients."""

import math

import numpy as np
import pytest
import torch

from ple_model import FeatureInput, ModelSpec, SpecError, build_model, embedding_tables, set_sparse_gradients
from ple_model.input_layer import HASH_PRIME, hash_buckets_of, hash_constants


def _spec(buckets=1000, tag_buckets=None):
    return ModelSpec.model_validate({
        "features": [
            {"name": "user_id", "type": "categorical", "hash_buckets": buckets, "embedding_dim": 4},
            {"name": "hour", "type": "categorical", "vocab_size": 24, "embedding_dim": 4},
            {"name": "tags", "type": "multi_categorical", "embedding_dim": 2, "max_len": 3,
             **({"hash_buckets": tag_buckets} if tag_buckets else {"vocab_size": 7})},
            {"name": "ctr", "type": "numeric"},
        ],
        "tasks": [{"name": "play", "type": "binary"}, {"name": "watch", "type": "regression"}],
    })


def _expected_bucket(x: int, name: str, buckets: int) -> int:
    """The hash by hand, with Python's unbounded ints (an independent derivation)."""
    if x == 0:
        return 0
    a, b, c = hash_constants(name)
    r = x % HASH_PRIME
    return 1 + ((a * r * r + b * r + c) % HASH_PRIME) % (buckets - 1)


def test_hash_matches_the_formula_by_hand_zero_stays_zero():
    ids = [0, 1, 2, 12345, -7, 2**40 + 3, 2**62 + 11, HASH_PRIME, HASH_PRIME + 5]
    a, b, c = (torch.tensor(v) for v in hash_constants("user_id"))
    got = hash_buckets_of(torch.tensor(ids), a, b, c, torch.tensor(1000)).tolist()
    assert got == [_expected_bucket(x, "user_id", 1000) for x in ids]
    assert got[0] == 0 and all(1 <= g < 1000 for g in got[1:])


@pytest.mark.parametrize("kind", ["consecutive", "random 64-bit"])
def test_buckets_fill_like_random_assignment(kind):
    # Vocabulary indices are consecutive: a linear hash with one fixed multiplier maps them onto a
    # lattice (measured: 89% of buckets empty here); the quadratic hash must spread them like chance.
    n, buckets = 20000, 10001
    ids = torch.arange(1, n + 1) if kind == "consecutive" else \
        torch.from_numpy(np.random.default_rng(0).integers(1, 2**62, n))
    a, b, c = (torch.tensor(v) for v in hash_constants("user_id"))
    counts = torch.bincount(hash_buckets_of(ids, a, b, c, torch.tensor(buckets)), minlength=buckets)[1:]
    m = buckets - 1
    expected_empty = m * (1 - 1 / m) ** n                 # 1353 for random assignment
    expected_colliding = 1 - (1 - 1 / m) ** (n - 1)       # share of ids that share their bucket: 0.865
    colliding = float((counts[counts > 1].sum()) / n)
    assert abs(int((counts == 0).sum()) - expected_empty) < 0.1 * expected_empty
    assert abs(colliding - expected_colliding) < 0.01


def test_spec_hash_buckets_size_the_table_and_refuse_a_vocabulary():
    spec = _spec(500)
    assert spec.features[0].vocab_size == 500 and spec.features[0].hash_buckets == 500
    with pytest.raises(ValueError, match="hash_buckets 500 and vocab_size 9 disagree"):
        ModelSpec.model_validate({"features": [{"name": "u", "type": "categorical", "hash_buckets": 500,
                                                "vocab_size": 9, "embedding_dim": 2}],
                                  "tasks": [{"name": "y", "type": "binary"}]})
    with pytest.raises(ValueError, match="hash_buckets must be >= 2"):
        _spec(1)
    with pytest.raises(SpecError, match="is hashed into 500 buckets"):
        spec.with_vocab_sizes({"user_id": 10})


def test_hashed_ids_keep_their_identity_where_plain_ids_fall_to_oov():
    spec = _spec(1000, tag_buckets=50)
    layer = FeatureInput(spec)
    big = [10**12 + 1, 10**12 + 2, 0]
    features = {"user_id": torch.tensor(big), "hour": torch.tensor([1, 1, 1]),
                "tags": torch.tensor([[10**9, 0, 0], [10**9, 5 * 10**9, 0], [0, 0, 0]]), "ctr": torch.zeros(3)}
    out = layer(features)
    table = layer.categorical_groups[0].table   # user_id rows 0..999, hour rows 1000..1023
    expected_rows = [_expected_bucket(x, "user_id", 1000) for x in big]
    torch.testing.assert_close(out[:, :4], table[expected_rows])
    assert expected_rows[0] != expected_rows[1] and expected_rows[2] == 0
    tags = layer.multi_categorical[0].table
    t1, t2 = (_expected_bucket(x, "tags", 50) for x in (10**9, 5 * 10**9))
    torch.testing.assert_close(out[0, 8:10], tags[t1])
    torch.testing.assert_close(out[1, 8:10], (tags[t1] + tags[t2]) / 2)
    torch.testing.assert_close(out[2, 8:10], torch.zeros(2))   # all padding


def _batch(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"user_id": torch.randint(1, 10**9, (n,), generator=g), "hour": torch.randint(0, 24, (n,), generator=g),
            "tags": torch.randint(0, 7, (n, 3), generator=g), "ctr": torch.randn(n, generator=g)}


@pytest.mark.parametrize("name", ["ple", "single_task", "mmoe"])
def test_sparse_gradients_hold_only_touched_rows_and_equal_the_dense_ones(name):
    spec = _spec(1000)
    sizes = {"bottom_hidden": [8], "tower_hidden": [4]} if name == "single_task" else \
        {"expert_hidden": [8], "tower_hidden": [4]}
    torch.manual_seed(0)
    dense = build_model(name, spec, **sizes)
    sparse = build_model(name, spec, **sizes)
    sparse.load_state_dict(dense.state_dict())
    set_sparse_gradients(sparse, True)
    batch = _batch()
    for model in (dense, sparse):
        sum(o.square().sum() for o in model(batch).values()).backward()
    for (table_name, table), (_, sparse_table) in zip(embedding_tables(dense), embedding_tables(sparse)):
        grad = sparse_table.grad
        assert grad.is_sparse, table_name
        touched = set(grad.coalesce().indices()[0].tolist())
        assert len(touched) <= min(16 * 3, table.shape[0])
        if table.shape[0] > 16 * 3:  # the 1024-row user/hour table: most rows untouched
            assert len(touched) < table.shape[0] // 10
        torch.testing.assert_close(grad.to_dense(), table.grad, msg=table_name)
        untouched = sorted(set(range(table.shape[0])) - touched)
        assert float(table.grad[untouched].abs().sum()) == 0.0


def test_rowwise_adagrad_by_hand_and_untouched_rows_stay():
    from training.optim import RowWiseAdagrad

    table = torch.nn.Parameter(torch.arange(12, dtype=torch.float32).reshape(4, 3))
    before = table.detach().clone()
    optimizer = RowWiseAdagrad([table], lr=0.5, eps=1e-8)
    grad_values = torch.tensor([[1.0, 2.0, 2.0], [0.0, 3.0, 0.0]])
    table.grad = torch.sparse_coo_tensor(torch.tensor([[1, 3]]), grad_values, (4, 3), check_invariants=True)
    optimizer.step()
    # row-wise Adagrad: G_r += mean(g_r^2); w_r -= lr * g_r / (sqrt(G_r) + eps)
    for row, g in zip((1, 3), grad_values):
        accumulated = float(g.square().mean())
        torch.testing.assert_close(table.detach()[row], before[row] - 0.5 * g / (math.sqrt(accumulated) + 1e-8))
    assert torch.equal(table.detach()[[0, 2]], before[[0, 2]])
    assert optimizer.state[table]["sum"].shape == (4,)      # one accumulator per row, not per entry
