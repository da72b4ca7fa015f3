"""Gradient buckets (training/gradient_buckets.py) on a real one-process gloo group: when buckets leave, and that
`.grad` after `finish()` is what the backward left there, whatever way the weighting produced it. The two-process
sums themselves: tests/training/test_global_batch_gradient.py."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch import nn

from training.gradient_buckets import GradientBuckets


@pytest.fixture
def gloo():
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield dist
    dist.destroy_process_group()


def _network() -> nn.Sequential:
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))


def _loss(network: nn.Module) -> torch.Tensor:
    return network(torch.randn(32, 6, generator=torch.Generator().manual_seed(5))).pow(2).mean()


def _buckets(network: nn.Module, cap_bytes: int = 16 * 16 * 4) -> GradientBuckets:
    return GradientBuckets(dist, torch.device("cpu"), 1, list(network.parameters()), cap_bytes)


def _reference_gradients(network: nn.Module) -> list[torch.Tensor]:
    network.zero_grad(set_to_none=True)
    _loss(network).backward()
    return [p.grad.clone() for p in network.parameters()]


def test_buckets_are_cut_in_backward_order_and_leave_during_the_backward(gloo):
    network = _network()
    expected = _reference_gradients(network)
    buckets = _buckets(network)
    parameters = list(network.parameters())
    # the last layers first, at most 1 KB each: the 16x16 weight (1 KB) alone
    assert [[id(p) for p in bucket] for bucket in buckets.buckets] == [
        [id(parameters[5]), id(parameters[4]), id(parameters[3])], [id(parameters[2])],
        [id(parameters[1]), id(parameters[0])]]
    network.zero_grad(set_to_none=True)
    _loss(network).backward()
    assert buckets.launched == len(buckets.buckets)   # every bucket left before finish()
    buckets.finish()
    for parameter, gradient in zip(parameters, expected):
        torch.testing.assert_close(parameter.grad, gradient)
    assert buckets.launched == 0                              # ready for the next step


def test_a_gradient_accumulated_again_after_its_bucket_left_is_exchanged_whole(gloo):
    network = _network()
    expected = [2 * g for g in _reference_gradients(network)]
    buckets = _buckets(network)
    network.zero_grad(set_to_none=True)
    _loss(network).backward()
    _loss(network).backward()   # two passes in one step: the buckets that left carry the first pass only
    buckets.finish()
    for parameter, gradient in zip(network.parameters(), expected):
        torch.testing.assert_close(parameter.grad, gradient)


def test_gradients_written_without_hooks_and_parameters_not_reached_are_exchanged_at_finish(gloo):
    network = _network()
    expected = _reference_gradients(network)
    buckets = _buckets(network)
    network.zero_grad(set_to_none=True)
    parameters = list(network.parameters())
    # as GradNorm and PCGrad do: torch.autograd.grad fires no hook, then `.grad` is written; the last layer's
    # bias is left without a gradient (a parameter this step did not reach)
    for parameter, gradient in zip(parameters[:-1], torch.autograd.grad(_loss(network), parameters[:-1])):
        parameter.grad = gradient
    assert buckets.launched == 0
    buckets.finish()
    for parameter, gradient in zip(parameters[:-1], expected[:-1]):
        torch.testing.assert_close(parameter.grad, gradient)
    assert torch.equal(parameters[-1].grad, torch.zeros_like(parameters[-1]))
