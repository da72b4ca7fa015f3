"""Optimizers: a dense one for the network (and the loss weighting), and for the embedding tables either
the same dense one or a sparse-aware one that only reads and writes the rows a batch touched.

- `embedding_optimizer: dense`: tables are ordinary parameters of `optimizer`
  (Adam by default): every row's moments are updated every step and the
  whole table's gradient is exchanged between workers. Cost grows with rows.
- `sparse_adam`: torch.optim.SparseAdam (lazy Adam: moments of touched rows
  only). State: 2 floats per table entry.
- `rowwise_adagrad`: Adagrad with ONE accumulator per row (the mean squared
  gradient of the row), FBGEMM/TorchRec's default for large tables. State: 1
  float per row (dim times less than Adagrad/Adam). torch has no such
  optimizer; `RowWiseAdagrad` below is the 20 lines it takes.
With a sparse one the tables' gradients are sparse (ple_model.set_sparse_gradients),
so step time, optimizer work and bytes exchanged follow the touched rows only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from ple_model import embedding_tables, set_sparse_gradients


class RowWiseAdagrad(torch.optim.Optimizer):
    """Adagrad with one accumulator per row of a 2-d parameter; sparse (touched rows) or dense gradients."""

    def __init__(self, params, lr: float = 0.01, eps: float = 1e-8):
        if lr <= 0:
            raise ValueError(f"lr must be positive, got {lr}")
        super().__init__(params, {"lr": lr, "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for parameter in group["params"]:
                if parameter.grad is None:
                    continue
                grad = parameter.grad
                if grad.is_sparse:
                    grad = grad.coalesce()
                    rows, values = grad.indices()[0], grad.values()
                else:
                    rows = torch.arange(parameter.shape[0], device=parameter.device)
                    values = grad
                state = self.state[parameter]
                if "sum" not in state:
                    state["sum"] = torch.zeros(parameter.shape[0], dtype=parameter.dtype, device=parameter.device)
                state["sum"].index_add_(0, rows, values.pow(2).mean(dim=1))
                scale = state["sum"].index_select(0, rows).sqrt_().add_(group["eps"])
                parameter.index_add_(0, rows, values / scale.unsqueeze(1), alpha=-group["lr"])
        return None


def dense_optimizer(name: str, parameters, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    if name == "adagrad":
        return torch.optim.Adagrad(parameters, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(parameters, lr=lr, momentum=0.9, weight_decay=weight_decay)


@dataclass
class Optimizers:
    """The step's optimizers (1 or 2) and every trained parameter, for the world's step and clipping."""

    optimizers: list[torch.optim.Optimizer]
    parameters: list[nn.Parameter]
    embedding_rows: int          # rows of all embedding tables (what a dense step pays for)
    sparse_embeddings: bool


def build_optimizers(model: nn.Module, weighting: nn.Module, world, *, optimizer: str, lr: float,
                     weight_decay: float, embedding_optimizer: str, embedding_lr: float) -> Optimizers:
    """Optimizers over model + weighting parameters, wrapped by the world (Horovod averages in them)."""
    tables = embedding_tables(model)
    sparse = embedding_optimizer != "dense"
    set_sparse_gradients(model, sparse)
    table_ids = {id(p) for _, p in tables} if sparse else set()
    named = [(f"model.{n}", p) for n, p in model.named_parameters() if id(p) not in table_ids]
    named += [(f"weighting.{n}", p) for n, p in weighting.named_parameters()]
    dense = world.wrap_optimizer(dense_optimizer(optimizer, [p for _, p in named], lr, weight_decay), named)
    optimizers = [dense]
    all_parameters = [p for _, p in named]
    if sparse:
        sparse_named = [(f"model.{n}", p) for n, p in tables]
        params = [p for _, p in sparse_named]
        if embedding_optimizer == "sparse_adam":
            table_optimizer: torch.optim.Optimizer = torch.optim.SparseAdam(params, lr=embedding_lr)
        else:
            table_optimizer = RowWiseAdagrad(params, lr=embedding_lr)
        optimizers.append(world.wrap_optimizer(table_optimizer, sparse_named))
        all_parameters += params
    return Optimizers(optimizers=optimizers, parameters=all_parameters,
                      embedding_rows=sum(int(p.shape[0]) for _, p in tables), sparse_embeddings=sparse)


def zero_grad(optimizers: Sequence[torch.optim.Optimizer]) -> None:
    for optimizer in optimizers:
        optimizer.zero_grad()  # set_to_none by default; Horovod's wrapper takes no arguments
