"""The training loop every worker runs; the trainer delegates and only sequences (rank 0 alone writes files).

    trainer = Trainer(plan, world, launcher="single", callbacks=[...])
    trainer.run()                 # epochs: train_epoch -> validate -> end_epoch
    trainer.step(batch)           # one optimisation step (what train_epoch repeats)

Collaborators, each owning one concern: the world (training/world.py:
collectives, gradient exchange, the optimizer step), the optimizers
(training/optim.py: dense + sparse embedding tables), the meter
(training/meter.py: loss windows, TensorBoard, progress), the selection
(training/selection.py: which epoch model.pt keeps, early stopping), the
checkpointer (training/checkpoint.py) and callbacks (training/callbacks.py:
tests' faults and probes).

Per epoch e, every rank reads its shard of the training snapshot in an order
fixed by (seed, e, rank) and runs exactly `steps_per_epoch` steps (the same on
every rank, computed from Parquet footers, so uneven shards never leave a rank
waiting in a collective). Loss (paper Eq. 9) is computed over the GLOBAL
batch: each rank's in-space loss sums are divided by the in-space counts
summed over ranks, times the world size, so the world's gradient average equals
the single-process gradient of the concatenated batch. Validation reads every
validation row once (sharded), gathers predictions to rank 0, which computes
the metrics (AUC does not average over shards) and decides selection and
early stopping for everyone.
"""

from __future__ import annotations

import math
import os
import random
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from ple_model import autocast, build_model, read_model_file, save_model
from ple_model.losses import masked_task_loss_sums, sample_space_counts
from ple_model.metrics import predictions_from_outputs
from ple_model.weighting import build_weighting
from ple_runtime.config import config_as_dict
from ple_runtime.lineage import run_context, write_json

from .callbacks import CallbackList, TrainerCallback
from .checkpoint import Checkpointer
from .config import TrainConfig
from .data import Batch, DeterministicBatches, auto_shuffle_buffer, epoch_seed, shard_layout, to_batch
from .meter import TrainingMeter
from .optim import build_optimizers, zero_grad
from .plan import TrainingPlan
from .precision import agreed, resolve_precision
from .selection import build_selection, task_metrics
from .validation_rows import ValidationRows
from .world import SingleProcessWorld, init_world, set_rng_state


class TrainingError(RuntimeError):
    pass


def pick_device(setting: str, local_rank: int) -> torch.device:
    if setting == "cuda" or (setting == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise TrainingError("device=cuda but no CUDA device is visible")
        # One GPU per local rank (one process per GPU).
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def steps_per_epoch(config: TrainConfig, rows_per_shard: tuple[int, ...], world_size: int) -> int:
    if config.steps_per_epoch_policy == "min":
        steps = min(rows // config.batch_size for rows in rows_per_shard)
    else:
        steps = sum(rows_per_shard) // (config.batch_size * world_size)
    if config.max_steps_per_epoch:
        steps = min(steps, config.max_steps_per_epoch)
    if steps <= 0:
        raise TrainingError(
            f"0 steps per epoch: rows per worker {list(rows_per_shard)} with batch size {config.batch_size} "
            f"(policy {config.steps_per_epoch_policy}); lower --batch-size or use fewer workers")
    return steps


def plain(value: Any) -> Any:
    """JSON-safe: numpy scalars -> Python, NaN -> None, tuples -> lists."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


class Trainer:
    def __init__(self, plan: TrainingPlan, world: SingleProcessWorld, launcher: str,
                 callbacks: Sequence[TrainerCallback] = ()):
        self.plan, self.config, self.spec = plan, plan.config, plan.spec
        self.world, self.launcher = world, launcher
        self.callbacks = CallbackList(callbacks)
        self.out = Path(self.config.out)
        self.device = pick_device(self.config.device, world.local_rank)
        self.precision = agreed(resolve_precision(self.config.precision, self.device), world)
        self._build_model()
        self.train_layout = shard_layout(plan.train_snapshot.urls, world.size)
        self.validation_layout = shard_layout(plan.validation_snapshot.urls, world.size)
        self.steps = self._agreed_steps_per_epoch()
        config = self.config
        self.shuffle_buffer = (config.shuffle_buffer if config.shuffle_buffer is not None
                               else auto_shuffle_buffer(self.train_layout, world.rank,
                                                        maximum=config.shuffle_buffer_max_rows))
        self.selection = build_selection(
            config.resolved_selection, self.spec, patience=config.patience,
            metrics_by_task=task_metrics(self.spec, config.selection_metrics),
            early_stop_metric=config.early_stop_metric, direction=config.early_stop_direction,
            reference=plan.selection_reference,
            reference_source=str(config.selection_reference) if config.selection_reference else "first_epoch")
        self.checkpointer = Checkpointer(self.out / "checkpoints", world, config.keep_checkpoints)
        self.meter: TrainingMeter | None = None
        # Run state (checkpointed).
        self.epoch = self.step_in_epoch = self.global_step = 0
        self.history: list[dict[str, Any]] = []
        self.resumes: list[dict[str, Any]] = []
        self.stopped_early = False
        self._pending_rng: dict[str, Any] | None = None
        self.started = time.time()
        self.context = run_context()

    def _build_model(self) -> None:
        config, world = self.config, self.world
        # Same initial weights everywhere anyway (broadcast from rank 0); the seed makes them reproducible.
        torch.manual_seed(config.seed)
        self.model = build_model(config.model, self.spec, **config.model_params).to(self.device)
        if self.plan.warm_start is not None and world.is_root:
            # --init-from: rank 0 loads the mapped weights (training/warm_start.py); restore() broadcasts them.
            self.model.load_state_dict(torch.load(self.plan.warm_start.init_state, map_location=self.device))
        self.weighting = build_weighting(config.weighting, self.spec, **config.weighting_params).to(self.device)
        scale = world.size if config.lr_scaling == "linear" else 1
        self.lr = config.lr * scale
        self.optim = build_optimizers(
            self.model, self.weighting, world, optimizer=config.optimizer, lr=self.lr,
            weight_decay=config.weight_decay, embedding_optimizer=config.embedding_optimizer,
            embedding_lr=(config.embedding_lr or config.lr) * scale)
        # Per-rank randomness after init (dropout-like draws differ by rank, reproducibly).
        torch.manual_seed(config.seed + 1009 * (world.rank + 1))
        np.random.seed((config.seed + 7919 * (world.rank + 1)) % 2**32)
        random.seed(config.seed + 104729 * (world.rank + 1))

    def _agreed_steps_per_epoch(self) -> int:
        steps = steps_per_epoch(self.config, self.train_layout.rows_per_shard, self.world.size)
        low = self.world.allreduce_min_int(steps, "steps_min")
        high = self.world.allreduce_max_int(steps, "steps_max")
        if low != high:
            raise TrainingError(f"ranks disagree on steps per epoch ({low} vs {high}); snapshot differs between ranks?")
        return steps

    # --- one step -------------------------------------------------------------------------

    def backward(self, batch: Batch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Forward, Eq. 9 over the global batch, backward. Returns this rank's in-space loss sums and counts."""
        task_names = self.spec.task_names
        # the masks give the counts before the forward: their sum over workers travels while it runs
        local_counts = sample_space_counts(self.spec, batch.masks, batch.rows, self.device)
        pending_counts = self.world.allreduce_sum_async(local_counts, name="sample_space_counts")
        with autocast(self.precision.resolved, self.device.type):   # the forward only: losses stay fp32
            outputs = self.model(batch.features)
        sums, _ = masked_task_loss_sums(self.spec, outputs, batch.labels, batch.masks)
        global_counts = pending_counts.wait()
        task_losses = {t: sums[t] * self.world.size / global_counts[i].clamp_min(1.0) for i, t in enumerate(task_names)}
        zero_grad(self.optim.optimizers)
        self.weighting.backward(task_losses, epoch=self.epoch, shared_parameters=self.optim.parameters)
        return sums, local_counts

    def step(self, batch: Batch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One optimisation step on this rank's part of the global batch (a collective)."""
        sums, counts = self.backward(batch)
        self.world.step(self.optim.optimizers, self.optim.parameters, self.config.grad_clip_norm)
        return sums, counts

    # --- the run --------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        self.restore()
        self.meter = TrainingMeter(self.spec.task_names, self.world, self.out / "tensorboard",
                                   progress=self.config.progress, log_every_steps=self.config.log_every_steps,
                                   batch_size=self.config.batch_size, device=self.device, purge_step=self.global_step)
        if self.world.is_root:
            self.write_record("running")
        self.callbacks.on_train_start(self)
        while self.epoch < self.config.epochs and not self.stopped_early:
            figures = self.train_epoch()
            validation, seconds = self.validate()
            self.end_epoch(figures, validation, seconds)
        status = "early_stopped" if self.stopped_early else "completed"
        self.meter.close()
        if self.world.is_root:
            self.write_record(status)
        self.callbacks.on_train_end(self, status)
        self.world.barrier()
        return {"status": status, "history": self.history, "best": self.selection.best(),
                "selection": self.selection.record(self.history)}

    def train_epoch(self) -> dict[str, Any]:
        skip = self.step_in_epoch
        self.model.train()
        self.meter.start_epoch(self.epoch, self.config.epochs, self.steps, skip)
        if self._pending_rng is not None:
            set_rng_state(self._pending_rng)  # the draws of the run that wrote the checkpoint continue
            self._pending_rng = None
        for batch in self._batches(train=True, skip=skip):
            self.callbacks.on_train_batch(self, batch)
            sums, counts = self.step(batch)
            self.step_in_epoch += 1
            self.global_step += 1
            self.meter.after_step(sums, counts, global_step=self.global_step,
                                  last_of_epoch=self.step_in_epoch == self.steps,
                                  gradient_bytes=self.world.last_gradient_bytes,
                                  task_weights=lambda: self.weighting.current_weights(self.epoch))
            every = self.config.checkpoint_every_steps
            if every and self.step_in_epoch % every == 0 and self.step_in_epoch < self.steps:
                self.checkpoint(end_of_epoch=False)
            self.callbacks.on_step_end(self)
        if self.step_in_epoch != self.steps:
            raise TrainingError(f"rank {self.world.rank} ran out of data after {self.step_in_epoch} of {self.steps} "
                                "steps; the shard layout and the reader disagree")
        return {**self.meter.end_epoch(), "resumed_at_step": skip or None}

    def _batches(self, *, train: bool, skip: int = 0) -> Iterator[Batch]:
        config, snapshot = self.config, (self.plan.train_snapshot if train else self.plan.validation_snapshot)
        source = DeterministicBatches(
            snapshot.urls, self.spec, rank=self.world.rank,
            layout=self.train_layout if train else self.validation_layout,
            batch_size=config.batch_size if train else config.validation_batch_size,
            seed=epoch_seed(config.seed, self.epoch) if train else epoch_seed(config.seed, 0, "validation"),
            shuffle=train, shuffle_buffer=self.shuffle_buffer if train else 0,
            infinite=train and config.steps_per_epoch_policy == "mean", drop_last=train,
            reader_workers=config.reader_workers, extra_columns=self.callbacks.extra_columns,
            reader_queue_rows=config.reader_queue_rows)
        for columns in source.batches(limit=self.steps if train else None, skip=skip):
            yield to_batch(columns, self.spec, self.device, self.callbacks.extra_columns)

    @torch.no_grad()
    def validate(self) -> tuple[dict[str, dict[str, Any]] | None, float]:
        """Metrics over every validation row (rank 0; None elsewhere) and the seconds it took (a collective)."""
        started = time.time()
        self.model.eval()
        # Filled in place (rows known from the footers): a list of per-batch parts concatenated at the
        # end held the day twice (1 GB at 10M rows, 4 tasks).
        local = ValidationRows(self.spec, self.validation_layout.rows_per_shard[self.world.rank])
        for batch in self._batches(train=False):
            self.callbacks.on_validation_batch(self, batch)
            if not local.fill(predictions_from_outputs(self.spec, self.model(batch.features)), batch.labels,
                              batch.masks):
                break   # more rows than the footers say: the error below
        if local.filled != local.rows:
            raise TrainingError(f"rank {self.world.rank} read other than the {local.rows} validation rows the "
                                "footers say; the shard layout and the reader disagree")
        everything = local.gather(self.world)  # AUC needs every row together
        self.model.train()
        if not self.world.is_root:
            return None, time.time() - started
        return plain(everything.metrics()), time.time() - started

    def end_epoch(self, figures: dict[str, Any], validation: dict | None, seconds: float) -> None:
        record, stop = None, False
        self.weighting.end_epoch(self.epoch, figures["train_loss"])  # global means: the same on every rank
        if self.world.is_root:
            record = {"epoch": self.epoch, "global_step": self.global_step, **plain(figures),
                      "validation": validation, "validation_seconds": seconds,
                      "task_weights": self.weighting.current_weights(self.epoch)}
            self.history.append(record)
            self.meter.log_validation(validation, self.global_step)
            decision = self.selection.observe(self.epoch, validation)
            if decision.save:
                self.save_model(decision.tasks)
            stop = decision.stop
        self.stopped_early = bool(self.world.broadcast_object(stop, f"stop_{self.epoch}"))
        self.checkpoint(end_of_epoch=True)
        self.epoch += 1
        self.step_in_epoch = 0
        if self.world.is_root:
            self.write_record("running")
        self.callbacks.on_epoch_end(self, record)

    # --- model file, checkpoints, records ---------------------------------------------------

    def save_model(self, tasks: list[str] | None) -> None:
        """model.pt: the whole model now (tasks None), or these tasks' networks now and the others as saved."""
        path = self.out / "model.pt"
        state = None
        keep = [t for t in self.spec.task_names if tasks is not None and t not in tasks]
        if keep and path.is_file():
            state = self.model.state_dict_with_tasks_from(read_model_file(path)["state_dict"], keep)
        selection = self.selection.record(self.history)
        save_model(path, self.model, self.spec, self.config.model,
                   dict(getattr(self.model, "hyperparameters", self.config.model_params)),
                   metadata={"epoch": selection["chosen_epoch"], "validation": selection["selected_metrics"],
                             "selection": selection, "snapshot": self.plan.train_snapshot.summary(),
                             "validation_snapshot": self.plan.validation_snapshot.summary(),
                             "vocabulary": self.plan.vocab.vocabulary_table, "training": self.plan.trained_days(),
                             "code": self.context["code"]},
                   state_dict=state)

    def checkpoint(self, *, end_of_epoch: bool) -> None:
        epoch, step = (self.epoch + 1, 0) if end_of_epoch else (self.epoch, self.step_in_epoch)
        self.checkpointer.save(
            modules={"model": self.model, "weighting": self.weighting}, optimizers=self.optim.optimizers,
            run_state={"global_step": self.global_step, "history": self.history, "resumes": self.resumes,
                       "selection": self.selection.state_dict(), "steps_per_epoch": self.steps},
            epoch=epoch, step=step, end_of_epoch=end_of_epoch)

    def restore(self) -> None:
        """Continue from the latest checkpoint (--resume), then make rank 0's state everyone's."""
        state = None
        if self.config.resume:
            state = self.checkpointer.restore(modules={"model": self.model, "weighting": self.weighting},
                                              optimizers=self.optim.optimizers, steps_per_epoch=self.steps)
        if state is not None:
            self.epoch, self.step_in_epoch = state["position"]["epoch"], state["position"]["step"]
            self.global_step, self.history = state["global_step"], state["history"]
            if state.get("selection") is not None:
                self.selection.load_state_dict(state["selection"])
            self.resumes = (state["resumes"] or []) + [{
                "checkpoint": state["_file"], "position": state["position"],
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}]
            self._pending_rng = state["rng"]
        self.world.broadcast_state([self.model, self.weighting], self.optim.optimizers)

    def write_record(self, status: str) -> None:
        config, plan = self.config, self.plan
        write_json(self.out / "run_record.json", {
            "status": status, "config": config_as_dict(config), "context": self.context,
            "code_version": self.context["code"], "world_size": self.world.size, "world": self.world.name,
            "launcher": self.launcher, "device": str(self.device), "lr_effective": self.lr,
            "precision": self.precision.record(),
            "model": {"name": config.model, "parameters": sum(p.numel() for p in self.model.parameters()),
                      "hyperparameters": plain(dict(getattr(self.model, "hyperparameters", {})))},
            "embeddings": {"optimizer": config.embedding_optimizer, "rows": self.optim.embedding_rows,
                           "sparse_gradients": self.optim.sparse_embeddings},
            "spec": plan.spec.model_dump(mode="json"), "vocab": plan.vocab.model_dump(mode="json"),
            "warm_start": plan.warm_start.model_dump(mode="json") if plan.warm_start else None,
            "training": {"days": plan.trained_days(),
                         "decision": plan.training.model_dump(mode="json") if plan.training else None},
            "delta_version": plan.train_snapshot.version, "train_snapshot": plan.train_snapshot.summary(),
            "validation_snapshot": plan.validation_snapshot.summary(), "missing_days": plan.missing_days,
            "steps_per_epoch": self.steps,
            "rows_per_shard": list(self.train_layout.rows_per_shard), "shuffle_buffer_rank0": self.shuffle_buffer,
            "train_row_groups": self.train_layout.num_row_groups, "epochs": self.history,
            "best": self.selection.best(), "selection": plain(self.selection.record(self.history)),
            "stopped_early": self.stopped_early, "resumes": self.resumes,
            "elapsed_seconds_this_process": time.time() - self.started, "model_path": str(self.out / "model.pt"),
            "peak_rss_bytes_rank0": peak_rss_bytes(),
        })


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def train_worker(plan: TrainingPlan, world: str, launcher: str, callbacks: Sequence[TrainerCallback] = (),
                 threads: int | None = None) -> dict[str, Any]:
    """Run one worker of a plan: world "single", "horovod" or "torch" (torch.distributed from the environment)."""
    world_object = init_world(world)
    threads = plan.config.threads or threads or max(1, (os.cpu_count() or 1) // max(1, world_object.local_size))
    torch.set_num_threads(threads)
    try:
        return Trainer(plan, world_object, launcher, callbacks).run()
    finally:
        world_object.shutdown()
