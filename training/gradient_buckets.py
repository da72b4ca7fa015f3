"""Dense gradients summed over torch.distributed ranks while the backward pass still runs (as DDP's buckets).

The first step exchanges every gradient after its backward (`TorchDistributedWorld.synchronize`). At its end,
the dense parameters that had a gradient on rank 0 are cut into buckets of about `cap_bytes`, in the reverse of
their registration order (the order a backward produces them: towers first, embeddings last). From the second
step, a hook on each of them counts the gradients as autograd accumulates them; a bucket whose gradients are all
there is flattened and its sum started (`all_reduce(async_op=True)`), in bucket order on every rank, so the
collectives pair up whatever each rank's timing. `finish()` starts the buckets whose hooks did not all fire (a
weighting that writes `.grad` itself, through `torch.autograd.grad`, fires none), waits for all of them and
writes the averages back into `.grad`.

A gradient accumulated again after its bucket left (two backward passes in one step) makes the step's buckets
stale: `finish()` then waits for them and exchanges every bucket again from the final gradients, so the result
is always the average of what `.grad` holds at `finish()`. (Whether a step does so is a property of the
weighting's code, the same on every rank, so every rank issues the same collectives.)
"""

from __future__ import annotations

from typing import Sequence

import torch


class GradientBuckets:
    def __init__(self, dist, device: torch.device, size: int, parameters: Sequence[torch.nn.Parameter],
                 cap_bytes: int):
        self.dist, self.device, self.size = dist, device, size
        self.buckets: list[list[torch.nn.Parameter]] = _cut(list(reversed(parameters)), cap_bytes)
        self._bucket_of = {id(p): i for i, bucket in enumerate(self.buckets) for p in bucket}
        self.parameter_ids = frozenset(self._bucket_of)   # what the world leaves to the buckets, each step
        for parameter in parameters:         # for the run's life: the world keeps one set of buckets
            parameter.register_post_accumulate_grad_hook(self._on_gradient)
        self._reset()

    def _reset(self) -> None:
        self._missing = [len(bucket) for bucket in self.buckets]
        self._in_flight: list[tuple[object, torch.Tensor]] = []   # (work, flat sum), bucket i at index i
        self._stale = False

    @property
    def launched(self) -> int:
        """Buckets whose sum has been started this step."""
        return len(self._in_flight)

    def _on_gradient(self, parameter: torch.nn.Parameter) -> None:
        index = self._bucket_of[id(parameter)]
        if index < len(self._in_flight):      # accumulated again after its bucket left
            self._stale = True
            return
        self._missing[index] -= 1
        while len(self._in_flight) < len(self.buckets) and self._missing[len(self._in_flight)] <= 0:
            self._launch(len(self._in_flight))

    def _launch(self, index: int) -> None:
        bucket = self.buckets[index]
        for parameter in bucket:
            if parameter.grad is None:          # not reached this step: a zero, same layout on every rank
                parameter.grad = torch.zeros_like(parameter)
        flat = torch.cat([p.grad.reshape(-1) for p in bucket]).to(self.device)
        self._in_flight.append((self.dist.all_reduce(flat, op=self.dist.ReduceOp.SUM, async_op=True), flat))

    def finish(self) -> None:
        """Average every bucket's gradients over the ranks into `.grad` (a collective: every rank calls it)."""
        while len(self._in_flight) < len(self.buckets):
            self._launch(len(self._in_flight))
        if self._stale:
            for work, _ in self._in_flight:
                work.wait()
            self._in_flight = []
            for index in range(len(self.buckets)):
                self._launch(index)
        for bucket, (work, flat) in zip(self.buckets, self._in_flight):
            work.wait()
            write_flat_gradients(bucket, flat.to(bucket[0].grad.device).div_(self.size))
        self._reset()


def write_flat_gradients(parameters: Sequence[torch.nn.Parameter], flat: torch.Tensor) -> None:
    """Copy `flat` (the parameters' gradients flattened and concatenated, in order) back into each `.grad`."""
    offset = 0
    for parameter in parameters:
        count = parameter.numel()
        parameter.grad.copy_(flat[offset:offset + count].view_as(parameter.grad))
        offset += count


def _cut(parameters: list[torch.nn.Parameter], cap_bytes: int) -> list[list[torch.nn.Parameter]]:
    """Consecutive parameters in buckets of at most `cap_bytes` (a larger parameter gets a bucket of its own)."""
    buckets: list[list[torch.nn.Parameter]] = []
    size = cap_bytes
    for parameter in parameters:
        nbytes = parameter.numel() * parameter.element_size()
        if size + nbytes > cap_bytes:
            buckets.append([])
            size = 0
        buckets[-1].append(parameter)
        size += nbytes
    return buckets
