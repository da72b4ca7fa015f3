"""Per-task losses restricted to each task's sample space (paper Eq. 9).

loss_k = sum_i mask_k[i] * l_k(output_k[i], label_k[i]) / sum_i mask_k[i]

- binary: BCE with logits (outputs are logits); regression: squared error.
- A task whose space is empty in the batch contributes 0 (not NaN), and still
  carries a graph so backward() works.
- Labels outside the space may be anything, NaN included: they are replaced
  by 0 before the loss, because NaN * 0 in the backward pass would still be NaN.

Labels and masks are keyed by TASK name (ple_model.model_inputs builds them
from a batch of columns). A task without a `mask` column uses every row; a task
with one must have an entry in `masks` (a missing entry is an error).
"""

from __future__ import annotations

from typing import Dict, Mapping, Tuple

import torch
from torch import Tensor
from torch.nn import functional as F

from .spec import ModelSpec, TaskSpec


def _elementwise_loss(task_type: str, output: Tensor, label: Tensor) -> Tensor:
    if task_type == "binary":
        return F.binary_cross_entropy_with_logits(output, label, reduction="none")
    return F.mse_loss(output, label, reduction="none")


def masked_task_loss_sums(spec: ModelSpec, outputs: Mapping[str, Tensor], labels: Mapping[str, Tensor],
                          masks: Mapping[str, Tensor] | None = None) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
    """Per task: (sum of in-space losses, number of in-space rows).

    For distributed training: allreduce both and divide, to get Eq. 9 over the
    global batch instead of an average of per-worker means.
    """
    masks = masks or {}
    sums: Dict[str, Tensor] = {}
    counts: Dict[str, Tensor] = {}
    for task in spec.tasks:
        if task.name not in outputs:
            continue  # e.g. a single_task model built for one task
        output = outputs[task.name].float().reshape(-1)
        if task.name not in labels:
            raise KeyError(f"no labels for task {task.name!r}; got labels for {sorted(labels)}")
        label = torch.as_tensor(labels[task.name], device=output.device).float().reshape(-1)
        in_space = _in_space(task, masks, output.shape[0], output.device)
        label = torch.where(in_space, label, torch.zeros_like(label))
        losses = _elementwise_loss(task.type, output, label)
        sums[task.name] = torch.where(in_space, losses, torch.zeros_like(losses)).sum()
        counts[task.name] = in_space.sum()
    return sums, counts


def _in_space(task: TaskSpec, masks: Mapping[str, Tensor], rows: int, device: torch.device) -> Tensor:
    """The task's sample space over the batch's rows: its mask where it has one, else every row."""
    if task.mask is not None and task.name not in masks:
        raise KeyError(f"task {task.name!r} has a sample-space mask (column {task.mask!r}) "
                       f"but masks has no entry for it; got {sorted(masks)}")
    if task.name in masks:
        return torch.as_tensor(masks[task.name], device=device).reshape(-1) > 0
    return torch.ones(rows, dtype=torch.bool, device=device)


def sample_space_counts(spec: ModelSpec, masks: Mapping[str, Tensor], rows: int,
                        device: torch.device | str = "cpu") -> Tensor:
    """Per task of the spec, in its order: the batch's rows in the task's sample space (float32, on `device`).

    The same counts `masked_task_loss_sums` returns, from the masks alone: known before the forward,
    so a distributed step can sum them over workers while its forward runs."""
    device = torch.device(device)
    return torch.stack([_in_space(task, masks, rows, device).sum().to(torch.float32) for task in spec.tasks])


def masked_task_losses(spec: ModelSpec, outputs: Mapping[str, Tensor], labels: Mapping[str, Tensor],
                       masks: Mapping[str, Tensor] | None = None) -> Dict[str, Tensor]:
    """{task: scalar} Eq. 9 loss per task; 0 for a task with no rows in its space."""
    sums, counts = masked_task_loss_sums(spec, outputs, labels, masks)
    return {name: sums[name] / counts[name].clamp_min(1).to(sums[name].dtype) for name in sums}
