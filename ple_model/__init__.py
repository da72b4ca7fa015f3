"""Pure-PyTorch multi-task models around PLE (Tang et al., RecSys 2020). No Spark imports.

    spec = ple_model.ModelSpec.from_yaml(path)
    model = ple_model.build_model("ple", spec, num_levels=2, specific_experts=1, shared_experts=1)
    features, labels, masks = ple_model.model_inputs(table_columns, spec).to_tensors()  # the sample-space rule
    outputs = model(features)                         # {task: (batch,) logits / values}
    task_losses = ple_model.losses.masked_task_losses(spec, outputs, labels, masks)
    loss = ple_model.weighting.build_weighting("decay", spec).combine(task_losses, epoch=epoch)
    metrics = ple_model.metrics.evaluate_tasks(spec, predictions, labels, masks)
    ple_model.save_model(path, model, spec, "ple", model.hyperparameters); ple_model.load_model(path)

See docs/MODEL.md.
"""

from contextlib import nullcontext

import torch

from . import losses, metrics, synthetic, weighting
from .input_layer import FeatureInput, embedding_tables, set_sparse_gradients
from .model_file import LoadedModel, load_model, read_model_file, save_model
from .model_inputs import ModelInputs, model_inputs
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
    "FeatureInput", "FeatureSpec", "GateLayout", "LoadedModel", "MODEL_NAMES", "ModelInputs", "ModelSpec",
    "MultiTaskModel", "SpecError", "TaskSpec", "autocast", "build_model", "embedding_tables", "load_model",
    "losses", "metrics", "model_hyperparameters", "model_inputs", "read_model_file", "save_model",
    "set_sparse_gradients", "synthetic", "weighting",
]
