import pytest
import torch

from ple_model import MODEL_NAMES, build_model

from .test_models import _batch, _many_task_spec, _small


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_torchscript_matches_eager(name):
    spec = _many_task_spec(3)
    model = build_model(name, spec, **_small(name)).eval()
    scripted = torch.jit.script(model)
    batch = _batch(5)
    expected = model(batch)
    actual = scripted(batch)
    for task in spec.task_names:
        torch.testing.assert_close(actual[task], expected[task])
    _, gates = scripted.forward_with_gates(batch)
    assert len(gates) == len(model.gate_layout)


class _TupleOutputs(torch.nn.Module):
    """ONNX outputs are positional: the task outputs in spec order. The dict input stays a dict."""

    def __init__(self, model, task_names):
        super().__init__()
        self.model, self.task_names = model, task_names

    def forward(self, features):
        outputs = self.model(features)
        return tuple(outputs[task] for task in self.task_names)


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning", "ignore::DeprecationWarning")
def test_ple_exports_to_onnx_with_a_dynamic_batch(tmp_path):
    import onnxruntime

    spec = _many_task_spec(3)
    model = build_model("ple", spec, num_levels=2, specific_experts=[1, 2, 1], shared_experts=2,
                        expert_hidden=[16], tower_hidden=[8]).eval()
    path = tmp_path / "ple.onnx"
    batch_dim = torch.export.Dim("batch")
    # torch.export-based exporter (the default since torch 2.9); the dict goes in as a keyword argument.
    torch.onnx.export(_TupleOutputs(model, spec.task_names), (), str(path), kwargs={"features": _batch(4)},
                      dynamo=True, output_names=spec.task_names,
                      dynamic_shapes={"features": {n: {0: batch_dim} for n in spec.feature_names}})
    session = onnxruntime.InferenceSession(str(path))
    assert [i.name for i in session.get_inputs()] == [f"features_{n}" for n in spec.feature_names]
    batch = _batch(11)
    batch["a"][:3] = torch.tensor([-5, 9, 1000])  # OOV ids must map to 0 inside the graph too
    results = session.run(None, {f"features_{n}": batch[n].numpy() for n in spec.feature_names})
    expected = model(batch)
    for task, result in zip(spec.task_names, results):
        assert result.shape == (11,)
        torch.testing.assert_close(torch.from_numpy(result), expected[task].detach(), rtol=1e-4, atol=1e-5)


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning", "ignore::DeprecationWarning")
def test_hashed_sparse_trained_model_exports_through_evaluation_and_hashes_alike(tmp_path):
    """The serving exports (publishing/export.py) of a model with a hashed open vocabulary (and per-task biases
    of the hashed id), trained with sparse gradients: TorchScript and ONNX reproduce PyTorch on raw 40-bit ids,
    so the hash runs inside the graphs."""
    import onnxruntime

    from publishing.export import export_model
    from ple_model import ModelSpec, set_sparse_gradients

    spec = ModelSpec.model_validate({
        "features": [{"name": "user_id", "type": "categorical", "hash_buckets": 5000, "embedding_dim": 4},
                     {"name": "tags", "type": "multi_categorical", "hash_buckets": 64, "embedding_dim": 2,
                      "max_len": 3},
                     {"name": "x", "type": "numeric"}],
        "tasks": [{"name": "play", "type": "binary"}, {"name": "watch", "type": "regression"}]})
    model = build_model("ple", spec, expert_hidden=[8], tower_hidden=[4], task_bias_features=["user_id"])
    set_sparse_gradients(model, True)
    generator = torch.Generator().manual_seed(1)
    features = {"user_id": torch.randint(1, 2**40, (300,), generator=generator),
                "tags": torch.randint(0, 2**40, (300, 3), generator=generator),
                "x": torch.randn(300, generator=generator)}
    sum(o.sum() for o in model(features).values()).backward()   # a sparse backward happened
    assert model.feature_input.categorical_groups[0].table.grad.is_sparse
    assert model.task_bias[0].table.grad.is_sparse   # the per-task user biases, hashed like the embedding
    with torch.no_grad():
        model.task_bias[0].table.normal_()   # trained-looking biases: the exports must add them too
    info = export_model(model, spec, tmp_path, features=features)
    assert max(info["onnx"]["max_abs_difference"].values()) <= 1e-5
    assert max(info["torchscript"]["max_abs_difference"].values()) <= 1e-5
    # And by hand on rows the check did not use: ids far beyond the 5000 buckets keep distinct embeddings.
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"))
    rows = {"user_id": torch.tensor([2**39 + 1, 2**39 + 2, 0]), "tags": torch.tensor([[0, 0, 0]] * 3),
            "x": torch.zeros(3)}
    play = session.run(None, {i.name: rows[n].numpy() for i, n in zip(session.get_inputs(), spec.feature_names)})[0]
    expected = torch.sigmoid(model.eval()(rows)["play"]).detach().numpy()
    assert abs(play - expected).max() < 1e-5 and len(set(play.round(6).tolist())) == 3
