"""The training loop that every worker runs (rank 0 alone writes files).

Per epoch e, every rank reads its shard of the training snapshot in an order
fixed by (seed, e, rank) and runs exactly `steps_per_epoch` steps (the same on
every rank, computed from Parquet footers, so uneven shards never leave a rank
waiting in an allreduce). Loss (paper Eq. 9) is computed over the GLOBAL batch:
each rank's in-space loss sums are divided by the in-space counts summed over
ranks, so Horovod's gradient average equals the single-process gradient of
the concatenated batch. Validation reads every validation row once (sharded),
gathers predictions to rank 0, which computes the metrics (AUC does not
average over shards) and decides early stopping for everyone.
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ple_model import ModelSpec, build_model
from ple_model.losses import masked_task_loss_sums
from ple_model.metrics import evaluate_tasks, predictions_from_outputs
from ple_model.weighting import build_weighting
from ple_runtime.lineage import run_context, write_json

from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .data import DeterministicBatches, epoch_seed, shard_layout, split_batch
from .dist import SingleProcess, init_world, rng_state, set_rng_state
from .model_io import save_model
from .snapshot import Snapshot

STOPPED_FOR_TEST_EXIT_CODE = 75


class TrainingError(RuntimeError):
    pass


def make_optimizer(name: str, parameters, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    if name == "adagrad":
        return torch.optim.Adagrad(parameters, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(parameters, lr=lr, momentum=0.9, weight_decay=weight_decay)


def pick_device(setting: str, local_rank: int) -> torch.device:
    if setting == "cuda" or (setting == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise TrainingError("device=cuda but no CUDA device is visible")
        # One GPU per local rank (Horovod launches one process per GPU).
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


def _better(value: float, best: float | None, direction: str) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    if best is None:
        return True
    return value > best if direction == "max" else value < best


def _metric(metrics: dict[str, dict[str, float]], dotted: str) -> float | None:
    task, name = dotted.split(".", 1)
    value = metrics.get(task, {}).get(name)
    return None if value is None else float(value)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


class Trainer:
    def __init__(self, plan: dict[str, Any], world: SingleProcess, launcher: str):
        self.plan = plan
        self.world = world
        self.launcher = launcher
        self.config = TrainConfig.model_validate(plan["config"])
        self.spec = ModelSpec.model_validate(plan["spec"])
        self.train_snapshot = Snapshot.from_dict(plan["train_snapshot"])
        self.validation_snapshot = Snapshot.from_dict(plan["validation_snapshot"])
        self.out = Path(self.config.out)
        self.checkpoint_dir = self.out / "checkpoints"
        self.device = pick_device(self.config.device, world.local_rank)
        self.is_root = world.is_root

        config = self.config
        # Same initial weights everywhere anyway (broadcast from rank 0); the seed makes them reproducible.
        torch.manual_seed(config.seed)
        self.model = build_model(config.model, self.spec, **config.model_params).to(self.device)
        self.weighting = build_weighting(config.weighting, self.spec, **config.weighting_params).to(self.device)
        self.lr = config.lr * (world.size if config.lr_scaling == "linear" else 1)
        named = [(f"model.{n}", p) for n, p in self.model.named_parameters()]
        named += [(f"weighting.{n}", p) for n, p in self.weighting.named_parameters()]
        optimizer = make_optimizer(config.optimizer, [p for _, p in named], self.lr, config.weight_decay)
        self.optimizer = world.distributed_optimizer(optimizer, named)
        # Per-rank randomness after init (dropout-like draws differ by rank, reproducibly).
        torch.manual_seed(config.seed + 1009 * (world.rank + 1))
        np.random.seed((config.seed + 7919 * (world.rank + 1)) % 2**32)
        random.seed(config.seed + 104729 * (world.rank + 1))

        self.train_layout = shard_layout(self.train_snapshot.urls, world.size)
        self.validation_layout = shard_layout(self.validation_snapshot.urls, world.size)
        self.steps = steps_per_epoch(config, self.train_layout.rows_per_shard, world.size)
        low, high = world.allreduce_min_int(self.steps, "steps_min"), world.allreduce_max_int(self.steps, "steps_max")
        if low != high:
            raise TrainingError(f"ranks disagree on steps per epoch ({low} vs {high}); snapshot differs between ranks?")

        # Run state (checkpointed).
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"value": None, "epoch": None}
        self.bad_epochs = 0
        self.resumes: list[dict[str, Any]] = []
        self.stopped_early = False
        self.started = time.time()
        self.context = run_context()
        self.writer = None

    # --- state -------------------------------------------------------------------------

    def _state(self, rng_states: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "weighting": self.weighting.state_dict(), "global_step": self.global_step,
            "history": self.history, "best": self.best, "bad_epochs": self.bad_epochs,
            "resumes": self.resumes, "rng": rng_states, "world_size": self.world.size,
            "steps_per_epoch": self.steps,
        }

    def checkpoint(self, *, end_of_epoch: bool) -> None:
        rng_states = self.world.allgather_object(rng_state())  # collective: every rank calls it
        if not self.is_root:
            return
        epoch, step = (self.epoch + 1, 0) if end_of_epoch else (self.epoch, self.step_in_epoch)
        save_checkpoint(self.checkpoint_dir, self._state(rng_states), epoch=epoch, step=step,
                        end_of_epoch=end_of_epoch, keep_step_checkpoints=self.config.keep_checkpoints)

    def maybe_resume(self) -> None:
        found = None
        if self.config.resume and self.is_root:
            path = latest_checkpoint(self.checkpoint_dir)
            if path is not None:
                found = load_checkpoint(path)
                found["_file"] = path.name
        # Rank 0 reads the checkpoint (no shared filesystem needed) and hands out the small parts.
        has = self.world.broadcast_object(found is not None, "resume_found")
        if has:
            if self.is_root:
                self.model.load_state_dict(found["model"])
                self.weighting.load_state_dict(found["weighting"])
                self.optimizer.load_state_dict(found["optimizer"])
                small = {k: found[k] for k in ("position", "global_step", "history", "best", "bad_epochs",
                                               "resumes", "rng", "world_size", "steps_per_epoch", "_file")}
            else:
                small = None
            small = self.world.broadcast_object(small, "resume_state")
            if small["world_size"] != self.world.size or small["steps_per_epoch"] != self.steps:
                raise TrainingError(f"checkpoint was written by {small['world_size']} workers with "
                                    f"{small['steps_per_epoch']} steps/epoch; this run has {self.world.size} "
                                    f"and {self.steps}: resume with the same --workers and batch size")
            self.epoch, self.step_in_epoch = small["position"]["epoch"], small["position"]["step"]
            self.global_step = small["global_step"]
            self.history, self.best, self.bad_epochs = small["history"], small["best"], small["bad_epochs"]
            self.resumes = small["resumes"] + [{"checkpoint": small["_file"], "position": small["position"],
                                                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}]
            self._pending_rng = small["rng"][self.world.rank]
        else:
            self._pending_rng = None
        self.world.broadcast_state(self.model, self.weighting, self.optimizer)
        # broadcast_optimizer_state may run a zero-gradient step on ranks with empty state;
        # re-broadcast the weights so no rank keeps a drifted copy.
        self.world.broadcast_state(self.model, self.weighting, self.optimizer)

    # --- the loop ------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        config = self.config
        self.maybe_resume()
        if self.is_root:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out / "tensorboard"),
                                        purge_step=self.global_step if self.global_step else None)
            self.write_record("running")
        while self.epoch < config.epochs and not self.stopped_early:
            epoch_metrics = self.train_epoch()
            validation, seconds = self.validate()
            self.end_epoch(epoch_metrics, validation, seconds)
        status = "early_stopped" if self.stopped_early else "completed"
        if self.is_root:
            self.writer.close()
            self.write_record(status)
        self.world.barrier()
        return {"status": status, "history": self.history, "best": self.best}

    def train_epoch(self) -> dict[str, Any]:
        config, world, spec = self.config, self.world, self.spec
        task_names = spec.task_names
        skip = self.step_in_epoch
        self.model.train()
        source = DeterministicBatches(
            self.train_snapshot.urls, spec, rank=world.rank, layout=self.train_layout,
            batch_size=config.batch_size, seed=epoch_seed(config.seed, self.epoch), shuffle=True,
            shuffle_buffer=config.shuffle_buffer, infinite=config.steps_per_epoch_policy == "mean",
            reader_workers=config.reader_workers, row_id_column=config.debug_row_id_column)
        progress = None
        if self.is_root and config.progress:
            from tqdm import tqdm

            progress = tqdm(total=self.steps, initial=skip, desc=f"epoch {self.epoch + 1}/{config.epochs}",
                            unit="step", file=sys.stderr, dynamic_ncols=True, mininterval=1.0)
        window_sums = torch.zeros(len(task_names), dtype=torch.float64, device=self.device)
        window_counts = torch.zeros(len(task_names), dtype=torch.float64, device=self.device)
        epoch_sums = torch.zeros_like(window_sums)
        epoch_counts = torch.zeros_like(window_counts)
        row_ids: list[np.ndarray] = []
        window_start, window_steps = time.time(), 0
        epoch_start = time.time()
        if self._pending_rng is not None:
            set_rng_state(self._pending_rng)  # the draws of the run that wrote the checkpoint continue
            self._pending_rng = None

        for batch in source.batches(limit=self.steps, skip=skip):
            if config.debug_row_id_column:
                row_ids.append(batch[config.debug_row_id_column].numpy().copy())
            features, labels, masks = split_batch(batch, spec, self.device)
            outputs = self.model(features)
            sums, counts = masked_task_loss_sums(spec, outputs, labels, masks)
            local_counts = torch.stack([counts[t].to(torch.float32) for t in task_names])
            global_counts = world.allreduce_sum(local_counts, name="sample_space_counts")
            # Eq. 9 over the global batch (see module doc).
            task_losses = {t: sums[t] * world.size / global_counts[i].clamp_min(1.0)
                           for i, t in enumerate(task_names)}
            self.optimizer.zero_grad()
            self.weighting.backward(task_losses, epoch=self.epoch, shared_parameters=None)
            if config.grad_clip_norm:
                if hasattr(self.optimizer, "synchronize"):
                    self.optimizer.synchronize()
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip_norm)
                    with self.optimizer.skip_synchronize():
                        self.optimizer.step()
                else:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip_norm)
                    self.optimizer.step()
            else:
                self.optimizer.step()
            self.step_in_epoch += 1
            self.global_step += 1
            with torch.no_grad():
                step_sums = torch.stack([sums[t].detach().double() for t in task_names])
                step_counts = local_counts.double()
                window_sums += step_sums
                window_counts += step_counts
                epoch_sums += step_sums
                epoch_counts += step_counts
            window_steps += 1

            if self.global_step % config.log_every_steps == 0 or self.step_in_epoch == self.steps:
                totals = world.allreduce_sum(torch.cat([window_sums, window_counts]).cpu(), name="log_window")
                losses = (totals[: len(task_names)] / totals[len(task_names):].clamp_min(1)).tolist()
                elapsed = max(time.time() - window_start, 1e-9)
                samples_per_s = window_steps * config.batch_size * world.size / elapsed
                if self.is_root:
                    for name, value in zip(task_names, losses):
                        self.writer.add_scalar(f"train_loss/{name}", value, self.global_step)
                    self.writer.add_scalar("train/samples_per_s", samples_per_s, self.global_step)
                    for name, weight in self.weighting.current_weights(self.epoch).items():
                        self.writer.add_scalar(f"task_weight/{name}", weight, self.global_step)
                    if progress is not None:
                        progress.set_postfix({"samples/s": f"{samples_per_s:,.0f}",
                                              **{n: f"{v:.4f}" for n, v in zip(task_names, losses)}})
                window_sums.zero_()
                window_counts.zero_()
                window_start, window_steps = time.time(), 0
            if progress is not None:
                progress.update(1)

            if (config.checkpoint_every_steps and self.step_in_epoch % config.checkpoint_every_steps == 0
                    and self.step_in_epoch < self.steps):
                self.checkpoint(end_of_epoch=False)
            if config.stop_after_steps and self.global_step >= config.stop_after_steps:
                if progress is not None:
                    progress.close()
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(STOPPED_FOR_TEST_EXIT_CODE)  # like a crash: no cleanup, no final checkpoint
            if config.debug_step_delay_s:
                time.sleep(config.debug_step_delay_s)
        if progress is not None:
            progress.close()
        if self.step_in_epoch != self.steps:
            raise TrainingError(f"rank {world.rank} ran out of data after {self.step_in_epoch} of {self.steps} "
                                "steps; the shard layout and the reader disagree")
        seconds = time.time() - epoch_start
        totals = world.allreduce_sum(torch.cat([epoch_sums, epoch_counts]).cpu(), name="epoch_loss")
        losses = (totals[: len(task_names)] / totals[len(task_names):].clamp_min(1)).tolist()
        if config.debug_row_id_column:
            ids = np.concatenate(row_ids) if row_ids else np.array([], dtype=np.int64)
            gathered = world.allgather_object(ids.tolist())
            if self.is_root:
                write_json(self.out / "debug" / f"row_ids-epoch{self.epoch:04d}.json",
                           {"epoch": self.epoch, "resumed_at_step": skip,
                            "rows_by_rank": {str(r): v for r, v in enumerate(gathered)}})
        trained_steps = self.steps - skip
        return {"train_loss": dict(zip(task_names, losses)), "train_seconds": seconds,
                "train_samples_per_s": trained_steps * config.batch_size * world.size / max(seconds, 1e-9),
                "resumed_at_step": skip or None}

    @torch.no_grad()
    def validate(self) -> tuple[dict[str, dict[str, float]] | None, float]:
        started = time.time()
        spec, world = self.spec, self.world
        self.model.eval()
        parts: list[torch.Tensor] = []
        source = DeterministicBatches(
            self.validation_snapshot.urls, spec, rank=world.rank, layout=self.validation_layout,
            batch_size=self.config.validation_batch_size, seed=epoch_seed(self.config.seed, 0, "validation"),
            shuffle=False, drop_last=False, reader_workers=self.config.reader_workers,
            row_id_column=self.config.debug_row_id_column)
        row_ids: list[np.ndarray] = []
        for batch in source.batches():
            if self.config.debug_row_id_column:
                row_ids.append(batch[self.config.debug_row_id_column].numpy().copy())
            features, labels, masks = split_batch(batch, spec, self.device)
            predictions = predictions_from_outputs(spec, self.model(features))
            columns = []
            for task in spec.task_names:
                columns += [torch.as_tensor(predictions[task]).float(), labels[task].float().cpu(),
                            masks[task].float().cpu()]
            parts.append(torch.stack(columns, dim=1))
        width = 3 * len(spec.task_names)
        local = torch.cat(parts) if parts else torch.zeros((0, width), dtype=torch.float32)
        # Every validation row, from every rank, at rank 0: AUC needs them together.
        everything = world.allgather(local, name="validation_rows")
        if self.config.debug_row_id_column:
            ids = np.concatenate(row_ids).tolist() if row_ids else []
            gathered = world.allgather_object(ids)
            if self.is_root:
                write_json(self.out / "debug" / f"validation_row_ids-epoch{self.epoch:04d}.json",
                           {"epoch": self.epoch, "rows_by_rank": {str(r): v for r, v in enumerate(gathered)}})
        self.model.train()
        if not self.is_root:
            return None, time.time() - started
        predictions, labels, masks = {}, {}, {}
        for index, task in enumerate(spec.task_names):
            predictions[task] = everything[:, 3 * index].numpy()
            labels[task] = everything[:, 3 * index + 1].numpy()
            masks[task] = everything[:, 3 * index + 2].numpy()
        metrics = evaluate_tasks(spec, predictions, labels, masks)
        return _plain(metrics), time.time() - started

    def end_epoch(self, epoch_metrics: dict[str, Any], validation: dict | None, seconds: float) -> None:
        config = self.config
        stop = False
        if self.is_root:
            record = {"epoch": self.epoch, "global_step": self.global_step, **_plain(epoch_metrics),
                      "validation": validation, "validation_seconds": seconds,
                      "task_weights": self.weighting.current_weights(self.epoch)}
            self.history.append(record)
            for task, values in validation.items():
                for name, value in values.items():
                    if isinstance(value, (int, float)) and value is not None:
                        self.writer.add_scalar(f"validation/{task}.{name}", value, self.global_step)
            improved = True
            if config.early_stop_metric:
                value = _metric(validation, config.early_stop_metric)
                improved = _better(value, self.best["value"], config.early_stop_direction)
                if improved:
                    self.best = {"value": value, "epoch": self.epoch, "metric": config.early_stop_metric}
                    self.bad_epochs = 0
                else:
                    self.bad_epochs += 1
                    stop = self.bad_epochs >= config.patience
            else:
                self.best = {"value": None, "epoch": self.epoch, "metric": None}
            if improved:
                save_model(self.out / "model.pt", self.model, self.spec, config.model,
                           dict(getattr(self.model, "hyperparameters", config.model_params)),
                           metadata={"epoch": self.epoch, "validation": validation,
                                     "snapshot": self.train_snapshot.summary(),
                                     "validation_snapshot": self.validation_snapshot.summary(),
                                     "code": self.context["code"]})
            self.writer.flush()
        self.stopped_early = bool(self.world.broadcast_object(stop, f"stop_{self.epoch}"))
        self.checkpoint(end_of_epoch=True)
        self.epoch += 1
        self.step_in_epoch = 0
        if self.is_root:
            self.write_record("running")

    def write_record(self, status: str) -> None:
        write_json(self.out / "run_record.json", {
            "status": status,
            "config": self.plan["config"],
            "context": self.context,
            "code_version": self.context["code"],
            "world_size": self.world.size,
            "launcher": self.launcher,
            "device": str(self.device),
            "lr_effective": self.lr,
            "model": {"name": self.config.model, "parameters": sum(p.numel() for p in self.model.parameters()),
                      "hyperparameters": _plain(dict(getattr(self.model, "hyperparameters", {})))},
            "spec": self.plan["spec"],
            "vocab": self.plan["vocab"],
            "delta_version": self.train_snapshot.version,
            "train_snapshot": self.train_snapshot.summary(),
            "validation_snapshot": self.validation_snapshot.summary(),
            "steps_per_epoch": self.steps,
            "rows_per_shard": list(self.train_layout.rows_per_shard),
            "train_row_groups": self.train_layout.num_row_groups,
            "epochs": self.history,
            "best": self.best,
            "stopped_early": self.stopped_early,
            "resumes": self.resumes,
            "elapsed_seconds_this_process": time.time() - self.started,
            "model_path": str(self.out / "model.pt"),
        })


def train_worker(plan: dict[str, Any], use_horovod: bool, launcher: str) -> dict[str, Any]:
    world = init_world(use_horovod)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, world.size)))
    try:
        return Trainer(plan, world, launcher).run()
    finally:
        world.shutdown()
