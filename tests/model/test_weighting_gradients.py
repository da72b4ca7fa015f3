"""GradNorm, DWA and PCGrad (ple_model/weighting/) against cases worked out by hand.

The "model" is three parameters whose gradients are chosen directly: losses
linear in them, so grad L_k is the coefficient vector (numbers below).
- theta (2,): shared by both tasks: g1 = (3, 1), g2 = (-1, 1) (they conflict: g1.g2 = -2);
- tower (2,): one stacked tensor, task 1 reaches tower[0] (coefficient 5), task 2 tower[1] (7);
- table: a sparse embedding (4 x 2), task 1 reads row 0, task 2 rows 0 and 3.
"""

import math

import pytest
import torch
from torch import nn

from ple_model import ModelSpec
from ple_model.weighting import build_weighting
from ple_model.weighting.pcgrad import project_conflicting


@pytest.fixture
def spec():
    return ModelSpec.model_validate({
        "features": [{"name": "x", "type": "numeric"}],
        "tasks": [{"name": "play", "type": "binary", "label": "play", "weight": 1.0},
                  {"name": "vcr", "type": "regression", "label": "vcr", "weight": 1.0}],
    })


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.theta = nn.Parameter(torch.tensor([0.5, -0.5]))
        self.tower = nn.Parameter(torch.tensor([0.1, 0.2]))
        self.table = nn.Embedding(4, 2, sparse=True)
        nn.init.constant_(self.table.weight, 0.25)

    def losses(self, scale=(1.0, 1.0)):
        play = self.theta @ torch.tensor([3.0, 1.0]) + 5 * self.tower[0] + self.table(torch.tensor([0])).sum()
        vcr = self.theta @ torch.tensor([-1.0, 1.0]) + 7 * self.tower[1] + self.table(torch.tensor([0, 3])).sum()
        # Shift to positive losses (GradNorm's ratios); the shift does not change the gradients.
        return {"play": scale[0] * (play + 10), "vcr": scale[1] * (vcr + 10)}


def test_pcgrad_projects_conflicting_shared_gradients_only(spec):
    toy = Toy()
    weighting = build_weighting("pcgrad", spec, seed=0)
    weighting.backward(toy.losses(), shared_parameters=list(toy.parameters()))
    # g1' = g1 - (g1.g2 / |g2|^2) g2 = (3,1) - (-2/2)(-1,1) = (2, 2)
    # g2' = g2 - (g2.g1 / |g1|^2) g1 = (-1,1) - (-2/10)(3,1) = (-0.4, 1.2)   (sum: (1.6, 3.2); plain sum: (2, 2))
    assert torch.allclose(toy.theta.grad, torch.tensor([1.6, 3.2]))
    assert torch.equal(toy.tower.grad, torch.tensor([5.0, 7.0]))  # each task's own coordinate: unprojected
    table = toy.table.weight.grad
    assert table.is_sparse  # stays sparse: row 0 read by both tasks (1 + 1), row 3 by one
    assert torch.equal(table.to_dense(), torch.tensor([[2.0, 2.0], [0, 0], [0, 0], [1.0, 1.0]]))


def test_pcgrad_leaves_agreeing_gradients_as_their_sum():
    gradients = torch.tensor([[1.0, 2.0], [2.0, 0.5]])  # dot = 3 > 0: no surgery
    assert torch.equal(project_conflicting(gradients, [[1], [0]]), gradients)
    # Three tasks: the order matters; task 0 meets task 2 first, then 1 (hand-computed below).
    three = torch.tensor([[1.0, 0.0], [-1.0, 1.0], [0.0, -1.0]])
    projected = project_conflicting(three, [[2, 1], [0, 2], [1, 0]])
    # task 0: vs g2 dot 0 (no change); vs g1 dot -1 -> (1,0) + 1/2 (-1,1) = (0.5, 0.5)
    assert torch.allclose(projected[0], torch.tensor([0.5, 0.5]))
    # task 1: vs g0 dot -1 -> (-1,1) + (1,0) = (0,1); vs g2 dot -1 -> (0,1) + (0,-1) = (0,0)
    assert torch.allclose(projected[1], torch.tensor([0.0, 0.0]))


def test_gradnorm_weights_move_toward_balanced_gradient_norms(spec):
    toy = Toy()
    weighting = build_weighting("gradnorm", spec, alpha=1.5)
    weighting.backward(toy.losses(), shared_parameters=[*toy.parameters(), *weighting.parameters()])
    # w = (1, 1); G = (|g1|, |g2|) = (sqrt 10, sqrt 2) on the shared coordinates (theta: the only ones
    # both tasks reach); first step: r = (1, 1), target = mean G for both.
    g1, g2 = math.sqrt(10), math.sqrt(2)
    # d L_gn / d w_k = sign(G_k - mean) |g_k|; d w_1 / d logit_1 = 2 * 0.25 = 0.5, d w_2 / d logit_1 = -0.5
    expected = 0.5 * (g1 + g2)  # sign +1 for task 1 (larger norm), -1 for task 2
    assert torch.allclose(weighting.logits.grad, torch.tensor([expected, -expected]))
    # The network's gradient: sum_k w_k g_k with w = (1, 1).
    assert torch.allclose(toy.theta.grad, torch.tensor([2.0, 2.0]))
    assert torch.equal(toy.tower.grad, torch.tensor([5.0, 7.0]))
    # Second step, play's loss halved relative to its start, vcr unchanged: r = (0.5, 1) / 0.75.
    toy.zero_grad()
    weighting.logits.grad = None
    first = {k: float(v) for k, v in toy.losses().items()}
    weighting.backward(toy.losses(scale=(0.5, 1.0)), shared_parameters=list(toy.parameters()))
    assert torch.allclose(weighting.initial_losses, torch.tensor([first["play"], first["vcr"]]))
    relative = torch.tensor([0.5 / 0.75, 1.0 / 0.75])
    norms = torch.tensor([0.5 * g1, g2])   # weights (1, 1); task 1's gradient scaled by 0.5
    target = norms.mean() * relative ** 1.5
    signs = torch.sign(norms - target)
    d_weights = signs * torch.tensor([0.5 * g1, g2])
    assert torch.allclose(weighting.logits.grad, 0.5 * torch.tensor([d_weights[0] - d_weights[1],
                                                                       d_weights[1] - d_weights[0]]))


def test_gradnorm_step_lowers_the_weight_of_the_task_with_the_larger_gradient(spec):
    toy = Toy()
    weighting = build_weighting("gradnorm", spec)
    weighting.backward(toy.losses(), shared_parameters=list(toy.parameters()))
    with torch.no_grad():
        weighting.logits -= 0.1 * weighting.logits.grad  # one SGD step
    weights = weighting.current_weights()
    assert weights["play"] < 1.0 < weights["vcr"]
    assert sum(weights.values()) == pytest.approx(2.0)


def test_dwa_weights_follow_the_loss_ratio_of_the_last_two_epochs(spec):
    weighting = build_weighting("dwa", spec, temperature=2.0)
    assert weighting.current_weights(0) == {"play": 1.0, "vcr": 1.0}
    weighting.end_epoch(0, {"play": 1.0, "vcr": 2.0})
    assert weighting.current_weights(1) == {"play": 1.0, "vcr": 1.0}  # one epoch: no ratio yet
    weighting.end_epoch(1, {"play": 0.5, "vcr": 2.0})
    # r = (0.5, 1.0); w = 2 exp(r / 2) / sum
    play, vcr = math.exp(0.25), math.exp(0.5)
    weights = weighting.current_weights(2)
    assert weights["play"] == pytest.approx(2 * play / (play + vcr))
    assert weights["vcr"] == pytest.approx(2 * vcr / (play + vcr))
    # The third epoch replaces the oldest: r = (0.5 / 0.5, 1.0 / 2.0) = (1, 0.5) -> play now gets more.
    weighting.end_epoch(2, {"play": 0.5, "vcr": 1.0})
    weights = weighting.current_weights(3)
    assert weights["play"] == pytest.approx(2 * vcr / (play + vcr))
    # The losses are combined with these weights, and the history is checkpointed state.
    losses = {"play": torch.tensor(2.0), "vcr": torch.tensor(3.0)}
    assert float(weighting.combine(losses)) == pytest.approx(2 * weights["play"] + 3 * weights["vcr"])
    restored = build_weighting("dwa", spec)
    restored.load_state_dict(weighting.state_dict())
    assert restored.current_weights(3) == pytest.approx(weights)


def test_bad_parameters_fail_with_the_value(spec):
    with pytest.raises(ValueError, match="temperature must be > 0, got 0"):
        build_weighting("dwa", spec, temperature=0)
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        build_weighting("gradnorm", spec, alpha=-1)
    with pytest.raises(ValueError, match="training loop must pass"):
        build_weighting("pcgrad", spec).backward(Toy().losses(), shared_parameters=None)
