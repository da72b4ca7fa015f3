"""The few collective operations the training loop needs, with or without Horovod.

`SingleProcess` makes every collective a no-op, so the same loop runs in one
process without importing Horovod; `HorovodWorld` wraps horovod.torch (Gloo on
CPU, NCCL on GPU when Horovod was built with it).
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import torch


class SingleProcess:
    rank = 0
    size = 1
    local_rank = 0
    name = "single"

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def allreduce_sum(self, tensor: torch.Tensor, name: str | None = None) -> torch.Tensor:
        return tensor

    def allreduce_min_int(self, value: int, name: str | None = None) -> int:
        return int(value)

    def allreduce_max_int(self, value: int, name: str | None = None) -> int:
        return int(value)

    def allgather(self, tensor: torch.Tensor, name: str | None = None) -> torch.Tensor:
        return tensor

    def allgather_object(self, obj: Any) -> list[Any]:
        return [obj]

    def broadcast_object(self, obj: Any, name: str | None = None) -> Any:
        return obj

    def broadcast_state(self, model: torch.nn.Module, weighting: torch.nn.Module, optimizer) -> None:
        return None

    def distributed_optimizer(self, optimizer, named_parameters: Iterable[tuple[str, torch.nn.Parameter]]):
        return optimizer

    def barrier(self) -> None:
        return None

    def shutdown(self) -> None:
        return None


class HorovodWorld(SingleProcess):
    name = "horovod"

    def __init__(self):
        import horovod.torch as hvd

        hvd.init()
        self.hvd = hvd
        self.rank = hvd.rank()
        self.size = hvd.size()
        self.local_rank = hvd.local_rank()

    def allreduce_sum(self, tensor: torch.Tensor, name: str | None = None) -> torch.Tensor:
        return self.hvd.allreduce(tensor, op=self.hvd.Sum, name=name)

    def allreduce_min_int(self, value: int, name: str | None = None) -> int:
        return int(self.hvd.allreduce(torch.tensor([int(value)], dtype=torch.int64), op=self.hvd.Min, name=name)[0])

    def allreduce_max_int(self, value: int, name: str | None = None) -> int:
        return int(self.hvd.allreduce(torch.tensor([int(value)], dtype=torch.int64), op=self.hvd.Max, name=name)[0])

    def allgather(self, tensor: torch.Tensor, name: str | None = None) -> torch.Tensor:
        # Horovod allgather concatenates along dim 0 and allows a different length per rank.
        return self.hvd.allgather(tensor.contiguous(), name=name)

    def allgather_object(self, obj: Any) -> list[Any]:
        return self.hvd.allgather_object(obj)

    def broadcast_object(self, obj: Any, name: str | None = None) -> Any:
        return self.hvd.broadcast_object(obj, root_rank=0, name=name)

    def broadcast_state(self, model: torch.nn.Module, weighting: torch.nn.Module, optimizer) -> None:
        # Rank 0's weights (fresh init or checkpoint) win everywhere; buffers too (state_dict).
        self.hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        self.hvd.broadcast_parameters(weighting.state_dict(), root_rank=0)
        self.hvd.broadcast_optimizer_state(optimizer, root_rank=0)

    def distributed_optimizer(self, optimizer, named_parameters):
        return self.hvd.DistributedOptimizer(optimizer, named_parameters=list(named_parameters),
                                             op=self.hvd.Average)

    def barrier(self) -> None:
        self.hvd.allreduce(torch.zeros(1), name="barrier")

    def shutdown(self) -> None:
        self.hvd.shutdown()


def init_world(use_horovod: bool) -> SingleProcess:
    return HorovodWorld() if use_horovod else SingleProcess()


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
