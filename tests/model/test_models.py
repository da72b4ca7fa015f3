import pytest
import torch

from ple_model import MODEL_NAMES, ModelSpec, build_model
from ple_model.models import PLE

from .conftest import SMALL


def _many_task_spec(num_tasks):
    return ModelSpec.model_validate({
        "features": [{"name": "a", "type": "categorical", "vocab_size": 9, "embedding_dim": 4},
                     {"name": "x", "type": "numeric"}],
        "tasks": [{"name": f"t{k}", "type": "binary" if k % 2 == 0 else "regression", "label": f"y{k}"}
                  for k in range(num_tasks)],
    })


def _batch(n=6):
    generator = torch.Generator().manual_seed(0)
    return {"a": torch.randint(0, 9, (n,), generator=generator), "x": torch.randn(n, generator=generator)}


def _small(name):
    if name in ("single_task", "shared_bottom"):
        return {"bottom_hidden": [16], "tower_hidden": [16, 8]}
    if name == "cross_stitch":
        return {"column_hidden": [16, 12], "tower_hidden": [16, 8]}
    return dict(SMALL)


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("num_tasks", [1, 2, 5])
def test_every_model_returns_one_batch_vector_per_task(name, num_tasks):
    spec = _many_task_spec(num_tasks)
    outputs = build_model(name, spec, **_small(name))(_batch(6))
    assert list(outputs) == spec.task_names
    assert all(value.shape == (6,) and value.dtype == torch.float32 for value in outputs.values())


@pytest.mark.parametrize("num_levels, specific, shared", [
    (1, [1, 3, 2], 4), (2, [2, 0, 1], 1), (3, 2, 3), (2, {"t0": 3, "t1": 1, "t2": 2}, 0)])
def test_ple_shapes_with_expert_counts_unlike_the_task_count(num_levels, specific, shared):
    spec = _many_task_spec(3)
    model = build_model("ple", spec, num_levels=num_levels, specific_experts=specific, shared_experts=shared,
                        expert_hidden=[8, 6], tower_hidden=[5])
    outputs, gates = model.forward_with_gates(_batch(7))
    counts = list(specific.values()) if isinstance(specific, dict) else (
        specific if isinstance(specific, list) else [specific] * 3)
    num_experts = sum(counts) + shared
    assert len(gates) == num_levels
    for level, weights in enumerate(gates):
        has_shared_gate = level < num_levels - 1
        assert weights.shape == (7, 3 + has_shared_gate, num_experts)
        torch.testing.assert_close(weights.sum(-1), torch.ones(7, 3 + has_shared_gate))
    assert all(v.shape == (7,) for v in outputs.values())


def test_unknown_model_or_hyperparameter_lists_the_valid_ones():
    spec = _many_task_spec(2)
    with pytest.raises(ValueError, match="unknown model 'mmo'; valid models: \\['single_task'"):
        build_model("mmo", spec)
    with pytest.raises(ValueError, match="has no hyperparameters \\['num_expert'\\]; valid: .*'num_experts'"):
        build_model("mmoe", spec, num_expert=3)
    with pytest.raises(ValueError, match="specific_experts has 3 entries for 2 tasks"):
        build_model("ple", spec, specific_experts=[1, 1, 1])
    with pytest.raises(ValueError, match="has no experts"):
        build_model("cgc", spec, specific_experts=0, shared_experts=0)
    with pytest.raises(ValueError, match="tower_hidden must be a list of positive ints"):
        build_model("ple", spec, tower_hidden=[0])
    with pytest.raises(ValueError, match="single_task: unknown task 'nope'"):
        build_model("single_task", spec, task="nope")


def _reference_ple(model: PLE, features):
    """PLE straight from the paper's equations, one expert and one gate at a time, from the model's weights."""
    x = model.feature_input(features)
    num_tasks = len(model.task_names)
    inputs = [x] * (num_tasks + 1)  # task k reads inputs[k]; the shared experts/gate read inputs[-1]
    for level, layout in zip(model.levels, model.gate_layout):
        experts = []
        for e, name in enumerate(layout.expert_names):
            owner = name.split("/")[0]
            h = inputs[-1] if owner == "shared" else inputs[model.task_names.index(owner)]
            for layer in level.experts.layers:
                h = torch.relu(h @ layer.weight[e].T + layer.bias[e])
            experts.append(h)
        outputs, row = [], 0
        for g, gate_name in enumerate(layout.gate_names):
            allowed = layout.gate_experts[g]
            gate_input = inputs[-1] if gate_name == "shared" else inputs[g]
            weights = torch.softmax(gate_input @ level.gate_weight[row:row + len(allowed)].T, dim=-1)
            row += len(allowed)
            outputs.append(sum(weights[:, i:i + 1] * experts[e] for i, e in enumerate(allowed)))
        if gate_name == "shared":
            inputs = outputs
        else:
            inputs = outputs + [None]
    results = {}
    for k, task in enumerate(model.task_names):
        h = inputs[k]
        layers = model.towers.layers
        for i, layer in enumerate(layers):
            h = h @ layer.weight[k].T + layer.bias[k]
            if i < len(layers) - 1:
                h = torch.relu(h)
        results[task] = h.squeeze(-1)
    return results


@pytest.mark.parametrize("num_levels, specific, shared", [(1, [1, 2, 3], 2), (2, [2, 1, 0], 1), (3, 1, 2)])
def test_batched_ple_equals_the_paper_equations_expert_by_expert(num_levels, specific, shared):
    torch.manual_seed(0)
    spec = _many_task_spec(3)
    model = build_model("ple", spec, num_levels=num_levels, specific_experts=specific, shared_experts=shared,
                        expert_hidden=[8, 6], tower_hidden=[5, 4])
    batch = _batch(9)
    expected = _reference_ple(model, batch)
    actual = model(batch)
    for task in spec.task_names:
        torch.testing.assert_close(actual[task], expected[task], rtol=1e-5, atol=1e-5)


def _expert_grad_norms(model, level_index, loss):
    model.zero_grad()
    loss.backward(retain_graph=True)
    level = model.levels[level_index]
    grads = level.experts.layers[0].weight.grad  # (E, out, in)
    names = model.gate_layout[level_index].expert_names
    return {name: float(grads[e].abs().sum()) for e, name in enumerate(names)}


def test_cgc_task_loss_reaches_only_its_own_and_the_shared_experts():
    spec = _many_task_spec(3)
    model = build_model("cgc", spec, specific_experts=2, shared_experts=1, **SMALL)
    outputs = model(_batch(16))
    grads = _expert_grad_norms(model, 0, outputs["t1"].sum())
    assert grads["t1/0"] > 0 and grads["t1/1"] > 0 and grads["shared/0"] > 0
    assert grads["t0/0"] == 0 and grads["t0/1"] == 0 and grads["t2/0"] == 0 and grads["t2/1"] == 0


def test_ple_shared_gate_at_every_level_but_the_last_and_it_mixes_all_experts():
    spec = _many_task_spec(3)
    model = build_model("ple", spec, num_levels=3, specific_experts=1, shared_experts=2, **SMALL)
    assert [layout.gate_names[-1] for layout in model.gate_layout] == ["shared", "shared", "t2"]
    last = model.gate_layout[-1]
    assert last.gate_names == spec.task_names  # no shared gate at the last level
    for layout in model.gate_layout[:-1]:
        assert layout.gate_experts[-1] == list(range(len(layout.expert_names)))  # shared gate: ALL experts
    for layout in model.gate_layout:  # task gates: own + shared only
        assert layout.gate_experts[0] == [0, 3, 4]
    outputs, gates = model.forward_with_gates(_batch(16))
    # Experts a task gate cannot see get exactly zero weight.
    assert torch.all(gates[0][:, 0, [1, 2]] == 0)
    # At the last level, t1's loss reaches only t1's and the shared experts ...
    grads = _expert_grad_norms(model, 2, outputs["t1"].sum())
    assert grads["t0/0"] == 0 and grads["t2/0"] == 0 and grads["t1/0"] > 0
    # ... but at level 1 it reaches t0's and t2's experts too: through level 1's
    # shared gate (which mixes all experts) into level 2's shared experts.
    grads = _expert_grad_norms(model, 0, outputs["t1"].sum())
    assert grads["t0/0"] > 0 and grads["t2/0"] > 0


def test_ple_level_two_reads_level_one_outputs_not_the_raw_input():
    spec = _many_task_spec(2)
    model = build_model("ple", spec, num_levels=2, specific_experts=1, shared_experts=1, **SMALL)
    seen = {}
    model.levels[0].register_forward_hook(lambda module, args, output: seen.update(level1_out=output[0]))
    model.levels[1].register_forward_hook(lambda module, args, output: seen.update(level2_in=args[0]))
    model.feature_input.register_forward_hook(lambda module, args, output: seen.update(embedding=output))
    model(_batch(5))
    # level 2's input: (batch, 2 tasks + shared, expert dim) == level 1's gate outputs
    assert seen["level2_in"].shape == (5, 3, 16)
    assert seen["level2_in"] is seen["level1_out"]
    assert seen["embedding"].shape == (5, 5)  # level 1 reads the embeddings (4 + 1 numeric)


def test_experts_start_different():
    model = build_model("ple", _many_task_spec(2), specific_experts=2, shared_experts=2, **SMALL)
    for level in model.levels:
        weights = level.experts.layers[0].weight.detach()
        for i in range(len(weights)):
            for j in range(i + 1, len(weights)):
                assert not torch.allclose(weights[i], weights[j])
    gate_rows = model.levels[0].gate_weight.detach()
    assert len({tuple(row.tolist()) for row in gate_rows}) == len(gate_rows)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_same_seed_same_model_and_outputs(name):
    spec = _many_task_spec(3)
    torch.manual_seed(123)
    first = build_model(name, spec, **_small(name))(_batch())
    torch.manual_seed(123)
    second = build_model(name, spec, **_small(name))(_batch())
    torch.manual_seed(124)
    other = build_model(name, spec, **_small(name))(_batch())
    for task in spec.task_names:
        assert torch.equal(first[task], second[task])
        assert not torch.equal(first[task], other[task])


def test_single_task_networks_are_independent():
    spec = _many_task_spec(3)
    model = build_model("single_task", spec, bottom_hidden=[8], tower_hidden=[4])
    outputs = model(_batch(8))
    outputs["t0"].sum().backward()
    assert model.task_inputs[1].categorical_groups[0].table.grad is None or \
        float(model.task_inputs[1].categorical_groups[0].table.grad.abs().sum()) == 0
    first_layer = model.task_networks.layers[0].weight.grad
    assert float(first_layer[0].abs().sum()) > 0 and float(first_layer[1:].abs().sum()) == 0
    only_one = build_model("single_task", spec, task="t1", bottom_hidden=[8], tower_hidden=[4])
    assert list(only_one(_batch(4))) == ["t1"]


def test_bf16_autocast_keeps_fp32_weights_and_outputs():
    import ple_model

    spec = _many_task_spec(2)
    model = build_model("ple", spec, **SMALL)
    inner_dtypes = []   # the experts/gates really compute in bf16 (a no-op autocast would leave fp32 here)
    hooks = [level.register_forward_hook(lambda module, args, out: inner_dtypes.append(out[0].dtype))
             for level in model.levels]
    with ple_model.autocast("bf16"):
        outputs = model(_batch(8))
    for hook in hooks:
        hook.remove()
    assert inner_dtypes == [torch.bfloat16] * len(model.levels)
    assert all(v.dtype == torch.float32 for v in outputs.values())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    reference = model(_batch(8))
    for task in spec.task_names:
        torch.testing.assert_close(outputs[task], reference[task], rtol=0.1, atol=0.05)
        assert not torch.equal(outputs[task], reference[task])   # bf16 rounding shows: it did run in bf16
