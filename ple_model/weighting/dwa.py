"""DWA: Dynamic Weight Average (Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention", CVPR 2019).

    w_k(t) = K * exp(r_k(t-1) / T) / sum_j exp(r_j(t-1) / T),   r_k(t-1) = L_k(t-1) / L_k(t-2)

L_k(e) is task k's mean training loss over epoch e: the GLOBAL in-space mean
the training loop hands to `end_epoch` on every rank (so every worker uses the
same weights). The first two epochs have no ratio yet: w_k = 1. A task whose
loss falls more slowly gets more weight; T (temperature, default 2 as in the
paper) softens the differences. The spec weights are not used (DWA replaces
them). The last two epochs' losses are buffers: checkpointed, so a resumed run
continues with the same weights.
"""

from __future__ import annotations

import math
from typing import Dict, Mapping

import torch
from torch import Tensor

from . import TaskWeighting, register_weighting


@register_weighting("dwa")
class DWAWeighting(TaskWeighting):
    def __init__(self, spec, temperature: float = 2.0):
        super().__init__(spec)
        if not temperature > 0:
            raise ValueError(f"dwa temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        # Row 0: L(t-2), row 1: L(t-1); NaN until two epochs have finished.
        self.register_buffer("epoch_losses", torch.full((2, len(self.task_names)), float("nan")))

    def weights(self, epoch: int) -> Dict[str, Tensor]:
        count = len(self.task_names)
        if torch.isnan(self.epoch_losses).any():
            vector = torch.ones(count, device=self.epoch_losses.device)
        else:
            ratios = self.epoch_losses[1] / self.epoch_losses[0].clamp_min(1e-12)
            vector = count * torch.softmax(ratios / self.temperature, dim=0)
        return {name: vector[i] for i, name in enumerate(self.task_names)}

    def end_epoch(self, epoch: int, train_losses: Mapping[str, float]) -> None:
        missing = [n for n in self.task_names if n not in train_losses]
        if missing:
            raise KeyError(f"dwa needs every task's epoch loss; missing {missing}")
        values = [float(train_losses[n]) for n in self.task_names]
        if not all(math.isfinite(v) for v in values):
            return  # an epoch without a task's samples says nothing about its rate; keep the last ratio
        self.epoch_losses[0] = self.epoch_losses[1].clone()
        self.epoch_losses[1] = torch.tensor(values, dtype=self.epoch_losses.dtype)
