"""PCGrad: gradient surgery for multi-task learning (Yu et al., NeurIPS 2020).

Each task's gradient g_i is, in a random order of the other tasks j, projected
onto the normal plane of g_j whenever the two conflict (g_i . g_j < 0):
g_i <- g_i - (g_i . g_j) / |g_j|^2 * g_j; the step's gradient is the sum of the
projected gradients. Task k's loss is scaled by its spec weight first.

Where the surgery applies (task_gradients.py says how it is found):
- the dense coordinates two or more tasks reach (shared experts, gates, the
  input layer's dense parts): projected, as LibMTL does on shared parameters;
- the dense coordinates only one task reaches (its tower): that task's own
  gradient, unchanged (no other task's gradient can conflict there);
- sparse embedding gradients: the plain weighted sum of the tasks' sparse
  gradients, so they stay sparse (the touched-rows exchange between workers and
  the sparse optimizers work unchanged). Projecting them would mean
  densifying, or aligning the touched rows of K sparse tensors, every step,
  and the conflict would be measured on rows each batch samples anew.

Several workers: each projects its own share of the global batch's per-task
gradients, then the world averages the projected gradients (Horovod or
torch.distributed, as any other gradient). That is PCGrad per worker: with one
worker it is exact; exchanging the K per-task gradients before projecting
would cost K times the gradient exchange of every other weighting.

Cost per step: K backward passes instead of one (torch.autograd.grad per task
over the same graph), plus O(K^2 D) dot products over the D shared
coordinates; bench/weighting_cost.py measures it.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from . import StaticWeighting, register_weighting
from .task_gradients import TaskGradients, check_tasks


def project_conflicting(gradients: Tensor, order: Sequence[Sequence[int]]) -> Tensor:
    """(K, D) task gradients -> (K, D) projected ones; order[i] = the other tasks, in the order task i meets them."""
    projected = gradients.clone()
    squared_norms = (gradients * gradients).sum(dim=1)
    for i, others in enumerate(order):
        for j in others:
            dot = torch.dot(projected[i], gradients[j])
            if dot < 0 and squared_norms[j] > 0:
                projected[i] -= dot / squared_norms[j] * gradients[j]
    return projected


@register_weighting("pcgrad")
class PCGradWeighting(StaticWeighting):
    def __init__(self, spec, seed: int | None = None):
        super().__init__(spec)
        # None: the process's torch RNG (the trainer seeds it per rank); a seed fixes the orders here.
        self._generator = torch.Generator().manual_seed(seed) if seed is not None else None

    def _orders(self, count: int) -> list[list[int]]:
        orders = []
        for i in range(count):
            others = [j for j in torch.randperm(count, generator=self._generator).tolist() if j != i]
            orders.append(others)
        return orders

    def backward(self, task_losses: Mapping[str, Tensor], epoch: int = 0,
                 shared_parameters: Sequence[nn.Parameter] | None = None) -> Tensor:
        check_tasks(task_losses, self.task_names)
        weights = self.weights(epoch)
        names = [n for n in self.task_names if n in task_losses]
        weighted = [weights[n] * task_losses[n] for n in names]
        grads = TaskGradients.of(weighted, shared_parameters or [])
        shared = grads.shared
        total = grads.dense.sum(dim=0)
        if len(names) > 1 and bool(shared.any()):
            total[shared] = project_conflicting(grads.dense[:, shared], self._orders(len(names))).sum(dim=0)
        grads.write(total, [1.0] * len(names))
        return torch.stack([w.detach() for w in weighted]).sum()
