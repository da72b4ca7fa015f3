"""Per-task gradients for the gradient-manipulating weightings (GradNorm, PCGrad).

`TaskGradients.of(losses, parameters)` runs one `torch.autograd.grad` per task
(K backward passes over the same graph instead of one) and splits the result:

- dense parameters: one row per task in a (K, D) matrix, D = their total size;
- sparse gradients (embedding tables with sparse=True, ple_model.input_layer):
  kept per task as sparse COO tensors, never densified (a table has far more
  rows than a batch touches).

`shared` marks the dense coordinates that at least two tasks' gradients reach:
what the tasks share. The models stack every task's tower (and task experts)
into one parameter tensor, so "shared parameters" cannot be told apart per
tensor; a coordinate only one task reaches is that task's own.

`write(dense_total, sparse_weights)` puts the step's gradient into `.grad`:
the training loop's world then averages it across workers exactly as after an
ordinary backward (Horovod's DistributedOptimizer exchanges, in synchronize(),
every gradient its backward hooks did not see; autograd.grad fires no hooks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import Tensor, nn


def check_tasks(task_losses: Mapping[str, Tensor], task_names: Sequence[str]) -> None:
    unknown = sorted(set(task_losses) - set(task_names))
    if unknown:
        raise KeyError(f"losses for unknown tasks {unknown}; tasks are {list(task_names)}")
    if not task_losses:
        raise ValueError("backward() got no task losses")


@dataclass
class TaskGradients:
    dense_parameters: list[nn.Parameter]
    dense: Tensor                        # (K, D): task k's gradient over the dense parameters, flattened
    sparse_parameters: list[nn.Parameter]
    sparse: list[list[Tensor | None]]    # [parameter][task]: sparse gradient or None (not reached)

    @classmethod
    def of(cls, losses: Sequence[Tensor], parameters: Sequence[nn.Parameter]) -> "TaskGradients":
        trained = [p for p in parameters if p.requires_grad]
        if not trained:
            raise ValueError("per-task gradients need the trained parameters; the training loop must pass "
                             "shared_parameters to weighting.backward()")
        per_task = [torch.autograd.grad(loss, trained, retain_graph=True, allow_unused=True) for loss in losses]
        # Parameters no task reaches (e.g. the weighting's own) keep .grad as it is.
        reached = [i for i in range(len(trained)) if any(g[i] is not None for g in per_task)]
        trained = [trained[i] for i in reached]
        per_task = [[g[i] for i in reached] for g in per_task]
        is_sparse = [any(g[i] is not None and g[i].is_sparse for g in per_task) for i in range(len(trained))]
        dense_parameters = [p for p, s in zip(trained, is_sparse) if not s]
        rows = []
        for grads in per_task:
            parts = [(g if g is not None else torch.zeros_like(p)).reshape(-1)
                     for p, g, s in zip(trained, grads, is_sparse) if not s]
            rows.append(torch.cat(parts) if parts else torch.zeros(0))
        sparse_parameters = [p for p, s in zip(trained, is_sparse) if s]
        sparse = [[grads[i] for grads in per_task] for i, s in enumerate(is_sparse) if s]
        return cls(dense_parameters, torch.stack(rows), sparse_parameters, sparse)

    @property
    def shared(self) -> Tensor:
        """Boolean (D,): coordinates reached by two or more tasks' gradients."""
        return (self.dense != 0).sum(dim=0) >= 2

    def write(self, dense_total: Tensor, sparse_weights: Sequence[float]) -> None:
        """`.grad` = dense_total (D,) for the dense parameters, sum_k weight_k * g_k for the sparse ones."""
        offset = 0
        for parameter in self.dense_parameters:
            count = parameter.numel()
            parameter.grad = dense_total[offset:offset + count].view_as(parameter).clone()
            offset += count
        for parameter, grads in zip(self.sparse_parameters, self.sparse):
            terms = [g * float(w) for g, w in zip(grads, sparse_weights) if g is not None]
            total = terms[0]
            for term in terms[1:]:
                total = total + term
            parameter.grad = total.coalesce()
