"""Run by test_global_batch_gradient.py under horovodrun or torchrun (2 processes).

    python gradient_check.py <plan.json> <horovod|torch> <out dir>

Every rank takes its half of one fixed global batch (`global_batch`, identical in
every process), runs the trainer's own backward (Eq. 9 over the global batch)
and the world's gradient exchange, and saves the averaged gradients (dense)
to <out>/grads-rank<r>.pt.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROWS = 64


def global_batch(spec, rows: int = ROWS):
    """A fixed batch whose sample spaces are very uneven between its halves (few plays in the first)."""
    from training.data import Batch

    g = torch.Generator().manual_seed(11)
    features = {}
    for feature in spec.features:
        if feature.type == "numeric":
            features[feature.name] = torch.randn(rows, generator=g)
        elif feature.type == "categorical":
            features[feature.name] = torch.randint(0, int(feature.vocab_size), (rows,), generator=g)
        else:
            features[feature.name] = torch.randint(0, int(feature.vocab_size), (rows, int(feature.max_len)),
                                                   generator=g)
    play_rate = torch.where(torch.arange(rows) < rows // 2, 0.1, 0.9)
    play = (torch.rand(rows, generator=g) < play_rate).float()
    labels = {"play": play, "watch_ratio": torch.rand(rows, generator=g) * play,
              "share": (torch.rand(rows, generator=g) < 0.3).float()}
    masks = {"play": torch.ones(rows), "watch_ratio": play.clone(), "share": torch.ones(rows)}
    return Batch(features, labels, masks, {})


def part(batch, rank: int, size: int):
    from training.data import Batch

    rows = len(batch.labels["play"]) // size
    cut = slice(rank * rows, (rank + 1) * rows)
    return Batch(*({k: v[cut] for k, v in group.items()} for group in batch[:3]), {})


def dense_gradients(trainer) -> dict[str, torch.Tensor]:
    named = [(f"model.{n}", p) for n, p in trainer.model.named_parameters()]
    named += [(f"weighting.{n}", p) for n, p in trainer.weighting.named_parameters()]
    return {name: (p.grad.to_dense() if p.grad.is_sparse else p.grad).detach().clone() for name, p in named}


def main(plan_path: str, world_kind: str, out: str) -> None:
    import training.world
    from training.plan import TrainingPlan
    from training.trainer import Trainer

    training.world.GRADIENT_BUCKET_BYTES = 512   # several buckets even for the test's tiny network
    world = training.world.init_world(world_kind)
    trainer = Trainer(TrainingPlan.load(plan_path), world, launcher=world_kind)
    trainer.restore()  # rank 0's weights everywhere, as in a real run
    batch = part(global_batch(trainer.spec), world.rank, world.size)
    # twice: torch.distributed exchanges the first step's gradients after its backward, later ones in buckets
    # during it (training/gradient_buckets.py)
    for exchange in ("after-backward", "during-backward"):
        trainer.backward(batch)   # sets the gradients to none first
        world.synchronize(trainer.optim.optimizers, trainer.optim.parameters)
        torch.save(dense_gradients(trainer), Path(out) / f"grads-{exchange}-rank{world.rank}.pt")
    buckets = getattr(world, "buckets", None)
    (Path(out) / f"buckets-rank{world.rank}.txt").write_text(str(len(buckets.buckets) if buckets else 0))
    world.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:4])
