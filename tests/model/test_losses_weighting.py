import math

import pytest
import torch

from ple_model import ModelSpec
from ple_model.losses import masked_task_loss_sums, masked_task_losses, sample_space_counts
from ple_model.weighting import WEIGHTINGS, TaskWeighting, build_weighting, register_weighting


@pytest.fixture
def spec():
    return ModelSpec.model_validate({
        "features": [{"name": "x", "type": "numeric"}],
        "tasks": [{"name": "play", "type": "binary", "label": "play", "weight": 2.0, "decay": 0.5},
                  {"name": "vcr", "type": "regression", "label": "vcr", "mask": "play", "weight": 1.0, "decay": 0.9}],
    })


def _bce(logit, label):
    p = 1 / (1 + math.exp(-logit))
    return -(label * math.log(p) + (1 - label) * math.log(1 - p))


def test_masked_losses_follow_eq_9_by_hand(spec):
    outputs = {"play": torch.tensor([0.5, -1.0, 2.0, 0.0]), "vcr": torch.tensor([0.3, 0.9, 0.1, 5.0])}
    labels = {"play": torch.tensor([1.0, 0.0, 1.0, 0.0]), "vcr": torch.tensor([0.5, float("nan"), 0.0, float("nan")])}
    masks = {"vcr": torch.tensor([1, 0, 1, 0])}
    losses = masked_task_losses(spec, outputs, labels, masks)
    expected_play = sum(_bce(o, y) for o, y in [(0.5, 1), (-1.0, 0), (2.0, 1), (0.0, 0)]) / 4
    expected_vcr = ((0.3 - 0.5) ** 2 + (0.1 - 0.0) ** 2) / 2  # rows 0 and 2 only
    assert float(losses["play"]) == pytest.approx(expected_play, rel=1e-6)
    assert float(losses["vcr"]) == pytest.approx(expected_vcr, rel=1e-6)
    # The mask changes the loss: the same outputs without masking rows 1, 3 out.
    unmasked = masked_task_losses(spec, outputs, {**labels, "vcr": torch.tensor([0.5, 0.9, 0.0, 5.0])},
                                  {"vcr": torch.ones(4)})
    assert float(unmasked["vcr"]) == pytest.approx(((0.3 - 0.5) ** 2 + 0 + 0.1 ** 2 + 0) / 4, rel=1e-6)
    sums, counts = masked_task_loss_sums(spec, outputs, labels, masks)
    assert int(counts["vcr"]) == 2 and float(sums["vcr"]) == pytest.approx(2 * expected_vcr, rel=1e-6)
    # the counts a distributed step sums while its forward runs: the same, from the masks alone, in spec order
    assert sample_space_counts(spec, masks, rows=4).tolist() == [4.0, 2.0] == [float(counts[t]) for t in ("play", "vcr")]


def test_empty_sample_space_gives_zero_loss_and_finite_gradients(spec):
    logits = torch.tensor([0.2, -0.3], requires_grad=True)
    values = torch.tensor([0.4, 0.6], requires_grad=True)
    losses = masked_task_losses(spec, {"play": logits, "vcr": values},
                                {"play": torch.tensor([1.0, 0.0]), "vcr": torch.tensor([float("nan")] * 2)},
                                {"vcr": torch.zeros(2)})
    assert float(losses["vcr"].detach()) == 0.0
    (losses["play"] + losses["vcr"]).backward()
    assert torch.equal(values.grad, torch.zeros(2))  # NaN labels outside the space do not leak into grads
    assert torch.isfinite(logits.grad).all()


def test_missing_mask_for_a_masked_task_is_an_error(spec):
    with pytest.raises(KeyError, match="task 'vcr' has a sample-space mask"):
        masked_task_losses(spec, {"play": torch.zeros(2), "vcr": torch.zeros(2)},
                           {"play": torch.zeros(2), "vcr": torch.zeros(2)}, {})
    with pytest.raises(KeyError, match="task 'vcr' has a sample-space mask"):
        sample_space_counts(spec, {}, rows=2)


def test_static_and_decay_weights_follow_eq_10(spec):
    static = build_weighting("static", spec)
    decay = build_weighting("decay", spec)
    assert static.current_weights(epoch=3) == {"play": 2.0, "vcr": 1.0}
    assert decay.current_weights(epoch=0) == pytest.approx({"play": 2.0, "vcr": 1.0})
    assert decay.current_weights(epoch=3) == pytest.approx({"play": 2.0 * 0.5 ** 3, "vcr": 0.9 ** 3})
    losses = {"play": torch.tensor(1.5), "vcr": torch.tensor(0.2)}
    assert float(decay.combine(losses, epoch=2)) == pytest.approx(2.0 * 0.25 * 1.5 + 0.81 * 0.2, rel=1e-6)


def test_uncertainty_weights_are_learnable_and_checkpointable(spec):
    weighting = build_weighting("uncertainty", spec)
    # s = 0: binary weight exp(0) = 1, regression 0.5 * exp(0) = 0.5 (Kendall et al.)
    assert weighting.current_weights() == pytest.approx({"play": 1.0, "vcr": 0.5})
    losses = {"play": torch.tensor(0.7), "vcr": torch.tensor(0.1)}
    assert float(weighting.combine(losses).detach()) == pytest.approx(0.7 + 0.05, rel=1e-6)  # + 0.5 * s = 0
    optimizer = torch.optim.SGD(weighting.parameters(), lr=0.5)
    for _ in range(20):
        optimizer.zero_grad()
        weighting.combine(losses).backward()
        optimizer.step()
    # A task with a small loss gets a larger weight (lower learned variance); optimum s* = log(2 L) or log(L).
    weights = weighting.current_weights()
    assert weights["vcr"] > 0.5 and weights["play"] < 1.0
    restored = build_weighting("uncertainty", spec)
    restored.load_state_dict(weighting.state_dict())
    assert restored.current_weights() == pytest.approx(weights)


def test_registry_and_custom_strategies(spec):
    with pytest.raises(ValueError, match="unknown weighting 'gradnrom'; valid: \\['decay', 'dwa', 'gradnorm', "
                                         "'pcgrad', 'static', 'uncertainty'\\]"):
        build_weighting("gradnrom", spec)
    with pytest.raises(ValueError, match="bad arguments"):
        build_weighting("static", spec, alpha=1)

    @register_weighting("test_equal")
    class Equal(TaskWeighting):
        def weights(self, epoch):
            return {name: torch.tensor(1.0) for name in self.task_names}

    try:
        weighting = build_weighting("test_equal", spec)
        value = torch.tensor(2.0, requires_grad=True)
        total = weighting.backward({"play": value, "vcr": value * 3})  # default backward = combine().backward()
        assert float(total) == 8.0 and float(value.grad) == 4.0
    finally:
        WEIGHTINGS.pop("test_equal")
