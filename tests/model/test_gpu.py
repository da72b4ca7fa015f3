"""On a CUDA device the models compute what they compute on CPU (GPU machines only)."""

import copy

import pytest
import torch

from ple_model import build_model, losses

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device; this machine has none"),
]


@pytest.mark.parametrize("name", ["ple", "cgc", "mmoe"])
def test_forward_and_gradients_match_cpu(name, easy_problem):
    spec, features, labels, masks = easy_problem
    torch.manual_seed(0)
    cpu_model = build_model(name, spec, expert_hidden=[16], tower_hidden=[16, 8])
    gpu_model = copy.deepcopy(cpu_model).cuda()

    def step(model, device):
        on = {k: v.to(device) for k, v in features.items()}
        outputs = model(on)
        task_losses = losses.masked_task_losses(
            spec, outputs, {k: v.to(device) for k, v in labels.items()}, {k: v.to(device) for k, v in masks.items()})
        sum(task_losses.values()).backward()
        return {k: v.detach().cpu() for k, v in outputs.items()}

    cpu_out, gpu_out = step(cpu_model, "cpu"), step(gpu_model, "cuda")
    for task in cpu_out:
        torch.testing.assert_close(gpu_out[task], cpu_out[task], rtol=1e-4, atol=1e-4)
    for (param_name, cpu_param), gpu_param in zip(cpu_model.named_parameters(), gpu_model.parameters()):
        torch.testing.assert_close(gpu_param.grad.cpu(), cpu_param.grad, rtol=1e-3, atol=1e-4, msg=param_name)
