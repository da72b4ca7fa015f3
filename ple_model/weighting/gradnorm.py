"""GradNorm: gradient normalization for adaptive loss balancing (Chen et al., ICML 2018).

Learned task weights w_k (K * softmax of free logits, as LibMTL keeps them, so
they stay positive and sum to K without the paper's renormalisation after each
step). Each step, on the shared parameters W:

    G_k   = |w_k * grad_W L_k|            (the weighted gradient norm of task k)
    r_k   = (L_k / L_k(0)) / mean_j (L_j / L_j(0))   (relative inverse training rate)
    L_gn  = sum_k | G_k - const(mean_j G_j * r_k ** alpha) |

The weights get grad L_gn only; the network gets sum_k w_k * grad L_k. L_k(0)
are the losses of the first step. alpha (default 1.5, the paper's choice for
its multitask benchmarks) sets how hard the tasks that train slower are pushed.

W = the dense coordinates two or more tasks reach (task_gradients.py), i.e. all
shared layers, not only the last one (the paper picks the last shared layer
only to save compute; here the K per-task backward passes are paid anyway).
Sparse embedding gradients take part in the network's step (weighted sum) but
not in G_k. Cost per step: K backward passes instead of one, plus K norms over
D shared coordinates (bench/weighting_cost.py). With several workers each
computes L_gn on its share of the batch; the weights' gradients are averaged
like every other gradient, so the weights stay identical on every rank.
"""

from __future__ import annotations

from typing import Dict, Mapping, Sequence

import torch
from torch import Tensor, nn

from . import TaskWeighting, register_weighting
from .task_gradients import TaskGradients, check_tasks


@register_weighting("gradnorm")
class GradNormWeighting(TaskWeighting):
    def __init__(self, spec, alpha: float = 1.5):
        super().__init__(spec)
        if alpha < 0:
            raise ValueError(f"gradnorm alpha must be >= 0, got {alpha}")
        self.alpha = float(alpha)
        self.logits = nn.Parameter(torch.zeros(len(self.task_names)))
        # L_k(0): the first step's losses (NaN until then); checkpointed with the weights.
        self.register_buffer("initial_losses", torch.full((len(self.task_names),), float("nan")))

    def weight_vector(self) -> Tensor:
        return len(self.task_names) * torch.softmax(self.logits, dim=0)

    def weights(self, epoch: int) -> Dict[str, Tensor]:
        vector = self.weight_vector()
        return {name: vector[i] for i, name in enumerate(self.task_names)}

    def backward(self, task_losses: Mapping[str, Tensor], epoch: int = 0,
                 shared_parameters: Sequence[nn.Parameter] | None = None) -> Tensor:
        check_tasks(task_losses, self.task_names)
        missing = [n for n in self.task_names if n not in task_losses]
        if missing:
            raise KeyError(f"gradnorm balances every task; no loss for {missing}")
        losses = [task_losses[n] for n in self.task_names]
        grads = TaskGradients.of(losses, shared_parameters or [])
        current = torch.stack([loss.detach() for loss in losses]).to(self.initial_losses)
        # A task without rows in the first batch (loss 0) takes its L(0) from the first batch that has some.
        unset = torch.isnan(self.initial_losses) & (current > 0)
        self.initial_losses[unset] = current[unset]
        weights = self.weight_vector()
        norms = weights * torch.linalg.vector_norm(grads.dense[:, grads.shared], dim=1).to(weights)
        known = ~torch.isnan(self.initial_losses)
        ratios = torch.where(known, current / self.initial_losses.clamp_min(1e-12), torch.ones_like(current))
        relative = ratios / ratios.mean().clamp_min(1e-12)
        target = (norms.mean() * relative ** self.alpha).detach()
        balance_loss = (norms - target).abs().sum()
        (self.logits.grad,) = torch.autograd.grad(balance_loss, [self.logits])
        fixed = weights.detach()
        grads.write((fixed.to(grads.dense).unsqueeze(1) * grads.dense).sum(dim=0), fixed.tolist())
        return (fixed * current).sum()
