"""How per-task losses become one training loss: weighting strategies behind one interface.

    weighting = build_weighting("decay", spec)            # or "static", "uncertainty"
    loss = weighting.combine(task_losses, epoch=epoch)    # scalar tensor
    weighting.current_weights(epoch)                      # {task: float}, for logging

Strategies are nn.Modules: learned ones (uncertainty) have parameters that
must go to the optimizer (`optimizer = Adam([*model.parameters(),
*weighting.parameters()])`) and their state lands in `weighting.state_dict()`
for checkpoints.

- static: w_k = spec weight (Eq. 10 with decay ignored).
- decay: Eq. 10, w_k(t) = weight_k * decay_k ** t, t the epoch (0-based).
- uncertainty: Kendall, Gal & Cipolla 2018. A learned s_k = log sigma_k^2 per
  task; regression: 0.5 * exp(-s_k) * L_k + 0.5 * s_k (Gaussian likelihood);
  binary: exp(-s_k) * L_k + 0.5 * s_k (their classification form). The spec
  weights are not used (the learned variances replace them).

Adding a strategy that manipulates gradients (GradNorm, PCGrad) needs no model
change: subclass TaskWeighting, register it with @register_weighting("pcgrad"),
and override `backward(task_losses, epoch, shared_parameters)`; the default
`backward` is `combine(...).backward()`, so a training loop that always calls
`weighting.backward(task_losses, epoch, list(model.parameters()))` works for
every strategy. PCGrad there takes torch.autograd.grad of each task loss
w.r.t. shared_parameters, projects conflicting gradients, and writes .grad;
GradNorm learns its weights as parameters (like uncertainty) and adds its
gradient-norm balancing loss for those weights inside backward.
"""

from __future__ import annotations

from typing import Callable, Dict, Mapping, Sequence

import torch
from torch import Tensor, nn

from .spec import ModelSpec

WEIGHTINGS: Dict[str, type] = {}


def register_weighting(name: str) -> Callable[[type], type]:
    def register(cls: type) -> type:
        if name in WEIGHTINGS:
            raise ValueError(f"weighting {name!r} is already registered ({WEIGHTINGS[name].__name__})")
        WEIGHTINGS[name] = cls
        cls.name = name
        return cls

    return register


class TaskWeighting(nn.Module):
    name = "base"

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.task_names = spec.task_names
        self.task_types = {t.name: t.type for t in spec.tasks}

    def weights(self, epoch: int) -> Dict[str, Tensor]:
        """{task: weight tensor} used by the default combine."""
        raise NotImplementedError

    def combine(self, task_losses: Mapping[str, Tensor], epoch: int = 0) -> Tensor:
        unknown = sorted(set(task_losses) - set(self.task_names))
        if unknown:
            raise KeyError(f"losses for unknown tasks {unknown}; tasks are {self.task_names}")
        weights = self.weights(epoch)
        terms = [weights[name] * loss for name, loss in task_losses.items()]
        if not terms:
            raise ValueError("combine() got no task losses")
        return torch.stack(terms).sum()

    def current_weights(self, epoch: int = 0) -> Dict[str, float]:
        with torch.no_grad():
            return {name: float(weight) for name, weight in self.weights(epoch).items()}

    def backward(self, task_losses: Mapping[str, Tensor], epoch: int = 0,
                 shared_parameters: Sequence[nn.Parameter] | None = None) -> Tensor:
        """Compute gradients for the step; returns the combined loss (detached)."""
        total = self.combine(task_losses, epoch)
        total.backward()
        return total.detach()


@register_weighting("static")
class StaticWeighting(TaskWeighting):
    def __init__(self, spec: ModelSpec):
        super().__init__(spec)
        self.register_buffer("base_weights", torch.tensor([t.weight for t in spec.tasks], dtype=torch.float32))

    def weights(self, epoch: int) -> Dict[str, Tensor]:
        return {name: self.base_weights[i] for i, name in enumerate(self.task_names)}


@register_weighting("decay")
class DecayWeighting(StaticWeighting):
    def __init__(self, spec: ModelSpec):
        super().__init__(spec)
        self.register_buffer("decays", torch.tensor([t.decay for t in spec.tasks], dtype=torch.float64))

    def weights(self, epoch: int) -> Dict[str, Tensor]:
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        factors = (self.decays ** epoch).float()
        return {name: self.base_weights[i] * factors[i] for i, name in enumerate(self.task_names)}


@register_weighting("uncertainty")
class UncertaintyWeighting(TaskWeighting):
    def __init__(self, spec: ModelSpec, initial_log_variance: float = 0.0):
        super().__init__(spec)
        # s_k = log sigma_k^2; learning s rather than sigma keeps it unconstrained.
        self.log_variances = nn.Parameter(torch.full((len(self.task_names),), float(initial_log_variance)))
        # 1 for regression (1/2 sigma^2 scale), 2 for binary (1/sigma^2 scale).
        self.register_buffer("precision_scale", torch.tensor(
            [2.0 if self.task_types[n] == "binary" else 1.0 for n in self.task_names]))

    def weights(self, epoch: int) -> Dict[str, Tensor]:
        precision = 0.5 * self.precision_scale * torch.exp(-self.log_variances)
        return {name: precision[i] for i, name in enumerate(self.task_names)}

    def combine(self, task_losses: Mapping[str, Tensor], epoch: int = 0) -> Tensor:
        weighted = super().combine(task_losses, epoch)
        index = {n: i for i, n in enumerate(self.task_names)}
        regulariser = torch.stack([0.5 * self.log_variances[index[n]] for n in task_losses]).sum()
        return weighted + regulariser


def build_weighting(name: str, spec: ModelSpec, **kwargs) -> TaskWeighting:
    if name not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {name!r}; valid: {sorted(WEIGHTINGS)}")
    try:
        return WEIGHTINGS[name](spec, **kwargs)
    except TypeError as error:
        raise ValueError(f"weighting {name!r}: bad arguments {sorted(kwargs)} ({error})") from error
