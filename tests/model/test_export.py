import importlib.util

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


@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxruntime", "onnxscript")),
                    reason="onnx, onnxscript and onnxruntime are needed to export PLE and run the exported graph")
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
