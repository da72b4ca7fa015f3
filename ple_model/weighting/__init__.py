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

One file each in this package (as LibMTL keeps them):
- dwa.py: Dynamic Weight Average (Liu, Johns & Davison 2019), weights from the
  ratio of each task's training loss over the last two epochs.
- gradnorm.py: GradNorm (Chen et al. 2018), learned weights balancing the
  tasks' gradient norms on the shared parameters.
- pcgrad.py: PCGrad (Yu et al. 2020), gradient surgery on conflicting tasks.
- task_gradients.py: per-task gradients (what GradNorm and PCGrad need).

Adding a strategy that manipulates gradients needs no model change: subclass
TaskWeighting, register it with @register_weighting("name"), and override
`backward(task_losses, epoch, shared_parameters)`; the default `backward` is
`combine(...).backward()`, so a training loop that always calls
`weighting.backward(task_losses, epoch, trained_parameters)` works for every
strategy. The loop also calls `weighting.end_epoch(epoch, train_losses)` on
every rank with the epoch's GLOBAL mean training loss per task (DWA reads it).
"""

from __future__ import annotations

from typing import Callable, Dict, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..spec import ModelSpec

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

    def end_epoch(self, epoch: int, train_losses: Mapping[str, float]) -> None:
        """Called on every rank after each epoch with the global mean training loss per task."""
        return None


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


# The strategies in their own files register themselves on import (after the base classes above exist).
from . import dwa, gradnorm, pcgrad  # noqa: E402,F401
