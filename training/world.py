"""The distributed world a trainer runs in: who we are, the collectives the loop needs, and the optimizer step.

Three worlds, one interface (the training loop never asks which one it has):

- `SingleProcessWorld`: one process; every collective is the identity.
- `HorovodWorld` (horovodrun, horovod.spark): `hvd.DistributedOptimizer`
  averages gradients as backward produces them (Gloo on CPU, NCCL on GPU);
  a sparse gradient (the rows a batch touched in an embedding table) is
  exchanged as Horovod does it: an allgather of its indices and values.
- `TorchDistributedWorld` (TorchDistributor, or any torchrun): torch.distributed
  (gloo on CPU, nccl on GPU); dense gradients are summed in buckets of ~1 MB
  that leave while the backward still runs (from the second step;
  training/gradient_buckets.py), the first step's in one flat allreduce
  after it; sparse ones by an explicit exchange of
  (row indices, values): all_gather of the sizes, then of the padded indices
  and values, then one sparse sum / world size. Why not the DDP wrapper: the
  loss weighting's learned parameters live outside the model, the sparse
  tables need this touched-rows exchange anyway, and gradient clipping needs
  the averaged gradients before the step; one explicit exchange serves all
  three, identical in meaning to Horovod's average (tested: both give the
  single-process gradient of the concatenated batch).

`world.allreduce_sum_async(tensor)` starts a sum the caller waits for later: the
trainer sums the step's Eq. 9 sample-space counts while its forward runs.

`world.step(optimizers, parameters, clip_norm)` = average gradients, clip
(sparse-aware, over all parameters), step every optimizer.
`world.last_gradient_bytes` is the gradient payload of this worker in the last
step, what it puts into the exchange when there are several workers (dense:
numel x itemsize; sparse: nnz x (8 bytes of row index + dim x itemsize)): with
sparse embeddings it does not grow with rows a batch does not touch.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

from training.gradient_buckets import GradientBuckets, write_flat_gradients

# DDP's first bucket is 1 MB: small enough that the towers' gradients leave while the experts' are computed
GRADIENT_BUCKET_BYTES = 1 << 20


def clip_gradients(parameters: Iterable[torch.nn.Parameter], max_norm: float) -> float:
    """clip_grad_norm_ that also handles sparse gradients (coalesced first); returns the total norm."""
    grads = []
    for parameter in parameters:
        if parameter.grad is None:
            continue
        if parameter.grad.is_sparse:
            parameter.grad = parameter.grad.coalesce()
            grads.append(parameter.grad._values())
        else:
            grads.append(parameter.grad)
    if not grads:
        return 0.0
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
    scale = max_norm / (float(total) + 1e-6)
    if scale < 1.0:
        for grad in grads:
            grad.mul_(scale)
    return float(total)


def gradient_payload_bytes(parameters: Iterable[torch.nn.Parameter]) -> int:
    total = 0
    for parameter in parameters:
        grad = parameter.grad
        if grad is None:
            continue
        if grad.is_sparse:
            values = grad._values()
            total += grad._nnz() * 8 * grad.sparse_dim() + values.numel() * values.element_size()
        else:
            total += grad.numel() * grad.element_size()
    return total


class PendingSum:
    """A collective sum in flight: `wait()` blocks until it is done and returns the sum (once)."""

    def __init__(self, finish: Callable[[], torch.Tensor]):
        self._finish = finish

    def wait(self) -> torch.Tensor:
        return self._finish()


class SingleProcessWorld:
    rank = 0
    size = 1
    local_rank = 0
    local_size = 1   # workers on this host (torch threads per worker = cores / local_size)
    name = "single"

    def __init__(self):
        self.last_gradient_bytes = 0

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    # --- collectives (identity here) ----------------------------------------------------

    def allreduce_sum(self, tensor: torch.Tensor, name: str | None = None) -> torch.Tensor:
        return self.allreduce_sum_async(tensor, name).wait()

    def allreduce_sum_async(self, tensor: torch.Tensor, name: str | None = None) -> PendingSum:
        """Start summing `tensor` over ranks; `.wait()` gives the sum. Work done in between overlaps it."""
        return PendingSum(lambda: tensor)

    def allreduce_min_int(self, value: int, name: str | None = None) -> int:
        return int(value)

    def allreduce_max_int(self, value: int, name: str | None = None) -> int:
        return int(value)

    def allgather(self, tensor: torch.Tensor, name: str | None = None) -> torch.Tensor:
        """Concatenate every rank's tensor along dim 0 (lengths may differ)."""
        return tensor

    def allgather_object(self, obj: Any) -> list[Any]:
        return [obj]

    def broadcast_object(self, obj: Any, name: str | None = None) -> Any:
        return obj

    def broadcast_tensors_(self, tensors: Sequence[torch.Tensor], name: str) -> None:
        """Overwrite every rank's tensors with rank 0's, in place."""
        return None

    def barrier(self) -> None:
        return None

    def shutdown(self) -> None:
        return None

    # --- state and optimisation ---------------------------------------------------------

    def broadcast_state(self, modules: Sequence[torch.nn.Module], optimizers: Sequence[torch.optim.Optimizer]) -> None:
        """Rank 0's weights, buffers and optimizer state win everywhere (fresh init or a checkpoint)."""
        for index, module in enumerate(modules):
            self.broadcast_tensors_(list(module.state_dict().values()), f"module{index}")
        for index, optimizer in enumerate(optimizers):
            self._broadcast_optimizer_state(optimizer, f"optimizer{index}")

    def _broadcast_optimizer_state(self, optimizer: torch.optim.Optimizer, name: str) -> None:
        # Rank 0 sends the state's structure (small), then every tensor in place: no pickled
        # embedding-sized state, no dummy step to create state on the other ranks.
        state = optimizer.state_dict() if self.is_root else None
        skeleton = self.broadcast_object(_skeleton(state) if self.is_root else None, f"{name}.skeleton")
        if not self.is_root:
            state = _from_skeleton(skeleton)
        tensors = _tensors_in(state["state"])
        self.broadcast_tensors_(tensors, f"{name}.state")
        if not self.is_root:
            optimizer.load_state_dict(state)

    def wrap_optimizer(self, optimizer: torch.optim.Optimizer,
                       named_parameters: Sequence[tuple[str, torch.nn.Parameter]]) -> torch.optim.Optimizer:
        return optimizer

    def synchronize(self, optimizers: Sequence[torch.optim.Optimizer],
                    parameters: Sequence[torch.nn.Parameter]) -> None:
        """Average gradients over ranks (after backward, before clipping and stepping)."""
        return None

    def step(self, optimizers: Sequence[torch.optim.Optimizer], parameters: Sequence[torch.nn.Parameter],
             clip_norm: float | None = None) -> None:
        self.last_gradient_bytes = gradient_payload_bytes(parameters)
        self.synchronize(optimizers, parameters)
        if clip_norm:
            clip_gradients(parameters, clip_norm)
        for optimizer in optimizers:
            self._apply(optimizer)

    def _apply(self, optimizer: torch.optim.Optimizer) -> None:
        optimizer.step()


class HorovodWorld(SingleProcessWorld):
    name = "horovod"

    def __init__(self):
        super().__init__()
        import horovod.torch as hvd

        hvd.init()
        self.hvd = hvd
        self.rank = hvd.rank()
        self.size = hvd.size()
        self.local_rank = hvd.local_rank()
        self.local_size = hvd.local_size()

    def allreduce_sum_async(self, tensor: torch.Tensor, name: str | None = None) -> PendingSum:
        handle = self.hvd.allreduce_async(tensor, op=self.hvd.Sum, name=name)
        return PendingSum(lambda: self.hvd.synchronize(handle))

    def allreduce_min_int(self, value: int, name: str | None = None) -> int:
        return int(self.hvd.allreduce(torch.tensor([int(value)], dtype=torch.int64), op=self.hvd.Min, name=name)[0])

    def allreduce_max_int(self, value: int, name: str | None = None) -> int:
        return int(self.hvd.allreduce(torch.tensor([int(value)], dtype=torch.int64), op=self.hvd.Max, name=name)[0])

    def allgather(self, tensor: torch.Tensor, name: str | None = None) -> torch.Tensor:
        return self.hvd.allgather(tensor.contiguous(), name=name)

    def allgather_object(self, obj: Any) -> list[Any]:
        return self.hvd.allgather_object(obj)

    def broadcast_object(self, obj: Any, name: str | None = None) -> Any:
        return self.hvd.broadcast_object(obj, root_rank=0, name=name)

    def broadcast_tensors_(self, tensors: Sequence[torch.Tensor], name: str) -> None:
        handles = [self.hvd.broadcast_async_(t, root_rank=0, name=f"{name}.{i}") for i, t in enumerate(tensors)]
        for handle in handles:
            self.hvd.synchronize(handle)

    def wrap_optimizer(self, optimizer, named_parameters):
        # Averages as backward produces gradients; sparse ones by allgather of indices + values.
        return self.hvd.DistributedOptimizer(optimizer, named_parameters=list(named_parameters), op=self.hvd.Average)

    def synchronize(self, optimizers, parameters) -> None:
        for optimizer in optimizers:
            optimizer.synchronize()

    def _apply(self, optimizer) -> None:
        with optimizer.skip_synchronize():
            optimizer.step()

    def barrier(self) -> None:
        self.hvd.allreduce(torch.zeros(1), name="barrier")

    def shutdown(self) -> None:
        self.hvd.shutdown()


class TorchDistributedWorld(SingleProcessWorld):
    """torch.distributed from the environment torchrun / TorchDistributor set (RANK, WORLD_SIZE, MASTER_ADDR, ...)."""

    name = "torch.distributed"

    def __init__(self, backend: str | None = None):
        super().__init__()
        import torch.distributed as dist

        self.dist = dist
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        self.local_size = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(self.local_rank % torch.cuda.device_count())
        if not dist.is_initialized():
            dist.init_process_group(backend=backend)
        self.backend = backend
        self.rank = dist.get_rank()
        self.size = dist.get_world_size()
        # nccl reduces CUDA tensors only; gloo CPU tensors.
        self.device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
        self.buckets: GradientBuckets | None = None   # from the second step (see training/gradient_buckets.py)

    def _on_device(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(self.device)

    def allreduce_sum_async(self, tensor: torch.Tensor, name: str | None = None) -> PendingSum:
        result = self._on_device(tensor).clone()
        work = self.dist.all_reduce(result, op=self.dist.ReduceOp.SUM, async_op=True)

        def finish() -> torch.Tensor:
            work.wait()
            return result.to(tensor.device)
        return PendingSum(finish)

    def _allreduce_int(self, value: int, op) -> int:
        tensor = self._on_device(torch.tensor([int(value)], dtype=torch.int64))
        self.dist.all_reduce(tensor, op=op)
        return int(tensor[0])

    def allreduce_min_int(self, value: int, name: str | None = None) -> int:
        return self._allreduce_int(value, self.dist.ReduceOp.MIN)

    def allreduce_max_int(self, value: int, name: str | None = None) -> int:
        return self._allreduce_int(value, self.dist.ReduceOp.MAX)

    def allgather(self, tensor: torch.Tensor, name: str | None = None) -> torch.Tensor:
        return torch.cat(self._allgather_padded(tensor.contiguous())).to(tensor.device)

    def _allgather_padded(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """all_gather of tensors whose dim 0 differs between ranks: sizes first, then padded, then trimmed."""
        local = self._on_device(tensor)
        sizes = [torch.zeros(1, dtype=torch.int64, device=self.device) for _ in range(self.size)]
        self.dist.all_gather(sizes, torch.tensor([local.shape[0]], dtype=torch.int64, device=self.device))
        counts = [int(s[0]) for s in sizes]
        longest = max(counts)
        padded = torch.zeros((longest, *local.shape[1:]), dtype=local.dtype, device=self.device)
        padded[:local.shape[0]] = local
        parts = [torch.empty_like(padded) for _ in range(self.size)]
        self.dist.all_gather(parts, padded)
        return [part[:count] for part, count in zip(parts, counts)]

    def allgather_object(self, obj: Any) -> list[Any]:
        gathered: list[Any] = [None] * self.size
        self.dist.all_gather_object(gathered, obj)
        return gathered

    def broadcast_object(self, obj: Any, name: str | None = None) -> Any:
        holder = [obj]
        self.dist.broadcast_object_list(holder, src=0, device=self.device if self.backend == "nccl" else None)
        return holder[0]

    def broadcast_tensors_(self, tensors: Sequence[torch.Tensor], name: str) -> None:
        for tensor in tensors:
            if tensor.device == self.device:
                self.dist.broadcast(tensor, src=0)
            else:
                staged = tensor.to(self.device)
                self.dist.broadcast(staged, src=0)
                tensor.copy_(staged)

    def synchronize(self, optimizers, parameters) -> None:
        dense = [p for p in parameters if p.grad is None or not p.grad.is_sparse]
        sparse = [p for p in parameters if p.grad is not None and p.grad.is_sparse]
        if self.buckets is not None:          # summed while the backward ran; the rest below, after it
            self.buckets.finish()
            dense = [p for p in dense if id(p) not in self.buckets.parameter_ids]
        else:
            self.buckets = self._gradient_buckets(parameters)
        self._average_dense(dense)
        for parameter in sparse:
            parameter.grad = self._average_sparse(parameter.grad)

    def _gradient_buckets(self, parameters: Sequence[torch.nn.Parameter]) -> GradientBuckets:
        """Buckets of the parameters whose gradient was dense on rank 0 in this (first) step: the same on every
        rank, whatever its own batch reached. Sparse table gradients are exchanged after the backward (the
        embeddings' gradients come last in it anyway)."""
        dense = [i for i, p in enumerate(parameters) if p.grad is not None and not p.grad.is_sparse]
        agreed = self.broadcast_object(dense)
        return GradientBuckets(self.dist, self.device, self.size, [parameters[i] for i in agreed],
                               GRADIENT_BUCKET_BYTES)

    def _average_dense(self, dense: Sequence[torch.nn.Parameter]) -> None:
        """One allreduce of the flattened gradients (a parameter without one contributes zeros)."""
        for parameter in dense:
            if parameter.grad is None:  # same layout on every rank, whatever a batch touched
                parameter.grad = torch.zeros_like(parameter)
        if dense:
            flat = torch.cat([p.grad.reshape(-1) for p in dense])
            flat = self._on_device(flat)
            self.dist.all_reduce(flat, op=self.dist.ReduceOp.SUM)
            write_flat_gradients(dense, flat.to(dense[0].grad.device).div_(self.size))

    def _average_sparse(self, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.coalesce()
        indices = self._allgather_padded(grad.indices().t().contiguous())
        values = self._allgather_padded(grad.values())
        device = grad.device
        all_indices = torch.cat(indices).to(device).t()
        all_values = torch.cat(values).to(device).div_(self.size)
        return torch.sparse_coo_tensor(all_indices, all_values, grad.shape, check_invariants=False)

    def barrier(self) -> None:
        self.dist.barrier()

    def shutdown(self) -> None:
        if self.dist.is_initialized():
            self.dist.destroy_process_group()


def init_world(kind: str) -> SingleProcessWorld:
    """"single", "horovod" or "torch" (torch.distributed from the environment)."""
    if kind == "horovod":
        return HorovodWorld()
    if kind == "torch":
        return TorchDistributedWorld()
    if kind == "single":
        return SingleProcessWorld()
    raise ValueError(f"unknown world {kind!r}; valid: single, horovod, torch")


def rng_state() -> dict[str, Any]:
    import random

    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import random

    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


# --- optimizer state as structure + tensors ------------------------------------------------

def _skeleton(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return {"__tensor__": list(value.shape), "dtype": str(value.dtype).removeprefix("torch.")}
    if isinstance(value, dict):
        return {k: _skeleton(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_skeleton(v) for v in value)
    return value


def _from_skeleton(value: Any) -> Any:
    if isinstance(value, dict) and "__tensor__" in value:
        return torch.zeros(value["__tensor__"], dtype=getattr(torch, value["dtype"]))
    if isinstance(value, dict):
        return {k: _from_skeleton(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_from_skeleton(v) for v in value)
    return value


def _tensors_in(value: Any) -> list[torch.Tensor]:
    """Every tensor of a nested state, in a fixed order (sorted keys), the same on every rank."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for key in sorted(value, key=str) for t in _tensors_in(value[key])]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _tensors_in(item)]
    return []
