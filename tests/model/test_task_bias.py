"""Per-task id biases (`task_bias_features`): what each task's output gets, where gradients go, export."""

import pytest
import torch

from ple_model import MODEL_NAMES, ModelSpec, build_model, embedding_tables, set_sparse_gradients

from .test_models import _batch, _many_task_spec, _small


def _with_and_without_biases(name, spec):
    """(model with biases on `a`, the same network without them): identical weights everywhere else."""
    plain = build_model(name, spec, **_small(name)).eval()
    biased = build_model(name, spec, task_bias_features=["a"], **_small(name)).eval()
    missing, unexpected = biased.load_state_dict(plain.state_dict(), strict=False)
    assert unexpected == []
    assert sorted(missing) == ["task_bias.0.offsets", "task_bias.0.table", "task_bias.0.vocab_sizes"]
    return biased, plain


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_each_task_gets_its_own_bias_per_id_and_starts_at_zero(name):
    spec = _many_task_spec(3)
    biased, plain = _with_and_without_biases(name, spec)
    batch = _batch(8)
    before = biased(batch)
    for task in spec.task_names:   # zero-initialised: the biased model starts as the plain one
        torch.testing.assert_close(before[task], plain(batch)[task])
    user = int(batch["a"][0])
    with torch.no_grad():
        biased.task_bias[0].table[user, 1] = 2.5   # id `user` of feature a, task t1 (unhashed: row = id)
    after = biased(batch)
    hit = batch["a"] == user
    torch.testing.assert_close(after["t1"] - before["t1"], torch.where(hit, 2.5, 0.0))
    for task in ("t0", "t2"):
        torch.testing.assert_close(after[task], before[task])


def test_out_of_vocabulary_ids_share_the_bias_of_id_0():
    spec = _many_task_spec(2)
    model = build_model("ple", spec, task_bias_features=["a"], **_small("ple")).eval()
    with torch.no_grad():
        model.task_bias[0].table[0] = torch.tensor([1.0, -1.0])
    batch = {"a": torch.tensor([0, -3, 9, 1000]), "x": torch.zeros(4)}
    outputs = model(batch)
    for task in spec.task_names:
        assert torch.allclose(outputs[task], outputs[task][0].expand(4))


def test_a_task_s_loss_trains_only_its_bias_column_and_sparse_gradients_touch_only_the_batch_s_ids():
    spec = _many_task_spec(3)
    model = build_model("ple", spec, task_bias_features=["a"], **_small("ple"))
    set_sparse_gradients(model, True)
    assert "task_bias.0.table" in dict(embedding_tables(model))   # the embedding optimizer takes it too
    batch = {"a": torch.tensor([2, 2, 5]), "x": torch.randn(3)}
    model(batch)["t2"].sum().backward()
    grad = model.task_bias[0].table.grad
    assert grad.is_sparse
    dense = grad.to_dense()
    assert sorted(dense.abs().sum(dim=1).nonzero().flatten().tolist()) == [2, 5]
    assert dense[:, :2].abs().sum() == 0 and dense[2, 2] == 2.0 and dense[5, 2] == 1.0   # d(sum)/d(bias)


def test_biases_on_several_features_add_up():
    spec = ModelSpec.model_validate({
        "features": [{"name": "user", "type": "categorical", "vocab_size": 5, "embedding_dim": 4},
                     {"name": "item", "type": "categorical", "vocab_size": 7, "embedding_dim": 8},
                     {"name": "x", "type": "numeric"}],
        "tasks": [{"name": "play", "type": "binary"}, {"name": "watch", "type": "regression"}]})
    model = build_model("mmoe", spec, task_bias_features=["item", "user"], expert_hidden=[8],
                        tower_hidden=[4]).eval()
    batch = {"user": torch.tensor([1, 2]), "item": torch.tensor([3, 3]), "x": torch.zeros(2)}
    before = model(batch)
    bias = model.task_bias[0]
    assert bias.names == ["user", "item"]   # spec order: the table's layout does not depend on the list's order
    with torch.no_grad():
        bias.table[1] = torch.tensor([1.0, 10.0])        # user 1
        bias.table[5 + 3] = torch.tensor([0.5, 0.25])    # item 3 (after user's 5 rows)
    after = model(batch)
    torch.testing.assert_close(after["play"] - before["play"], torch.tensor([1.5, 0.5]))
    torch.testing.assert_close(after["watch"] - before["watch"], torch.tensor([10.25, 0.25]))


@pytest.mark.parametrize("features, message", [
    (["x"], r"task_bias_features \['x'\]: not categorical features of the spec; categorical features are \['a'\]"),
    (["nope"], r"\['nope'\]: not categorical"),
    (["a", "a"], "duplicates"),
    ("a", "must be a list of feature names"),
])
def test_bad_bias_features_are_refused_naming_them(features, message):
    with pytest.raises(ValueError, match=message):
        build_model("ple", _many_task_spec(2), task_bias_features=features, **_small("ple"))


def test_single_task_merge_takes_each_task_s_bias_column_from_its_own_source():
    spec = _many_task_spec(3)
    model = build_model("single_task", spec, task_bias_features=["a"], **_small("single_task"))
    other = build_model("single_task", spec, task_bias_features=["a"], **_small("single_task"))
    with torch.no_grad():
        other.task_bias[0].table.uniform_()
    merged = model.state_dict_with_tasks_from(other.state_dict(), ["t1"])["task_bias.0.table"]
    assert torch.equal(merged[:, 1], other.task_bias[0].table[:, 1])
    assert torch.equal(merged[:, [0, 2]], model.task_bias[0].table[:, [0, 2]])


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_torchscript_with_biases_matches_eager(name):
    spec = _many_task_spec(3)
    model = build_model(name, spec, task_bias_features=["a"], **_small(name)).eval()
    with torch.no_grad():
        model.task_bias[0].table.normal_()
    scripted = torch.jit.script(model)
    batch = _batch(5)
    for task in spec.task_names:
        torch.testing.assert_close(scripted(batch)[task], model(batch)[task])
