"""Pure-PyTorch multi-task models around PLE (Tang et al., RecSys 2020). No Spark imports.

    spec = ple_model.ModelSpec.from_yaml(path)
    model = ple_model.build_model("ple", spec, num_levels=2, specific_experts=1, shared_experts=1)
    outputs = model(features)                         # {task: (batch,) logits / values}
    task_losses = ple_model.losses.masked_task_losses(spec, outputs, labels, masks)
    loss = ple_model.weighting.build_weighting("decay", spec).combine(task_losses, epoch=epoch)
    metrics = ple_model.metrics.evaluate_tasks(spec, predictions, labels, masks)

See docs/MODEL.md.
"""

from contextlib import nullcontext

import torch

from . import losses, metrics, synthetic, weighting
from .inputs import FeatureInput
from .models import MODEL_NAMES, GateLayout, MultiTaskModel, build_model, model_hyperparameters
from .spec import FeatureSpec, ModelSpec, SpecError, TaskSpec


def autocast(precision: str = "fp32", device_type: str = "cpu"):
    """Context for the forward pass: "bf16" = torch.autocast(bfloat16) with fp32 master weights; "fp32" = no-op."""
    if precision == "fp32":
        return nullcontext()
    if precision == "bf16":
        return torch.autocast(device_type, dtype=torch.bfloat16)
    raise ValueError(f"unknown precision {precision!r}; valid: ['fp32', 'bf16']")


__all__ = [
    "FeatureInput", "FeatureSpec", "GateLayout", "MODEL_NAMES", "ModelSpec", "MultiTaskModel", "SpecError",
    "TaskSpec", "autocast", "build_model", "losses", "metrics", "model_hyperparameters", "synthetic", "weighting",
]
