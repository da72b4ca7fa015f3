"""What a run reports while it trains: loss windows, TensorBoard scalars, the progress bar, epoch figures.

Every rank accumulates its in-space loss sums and counts; every `log_every`
steps (and at an epoch's last step: the same steps on every rank) they are
allreduced, so logged losses are global in-space means (Eq. 9 over all
workers). Only rank 0 writes TensorBoard events and shows the tqdm bar.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch


class TrainingMeter:
    def __init__(self, task_names: Sequence[str], world, tensorboard_dir: str | Path, *, progress: bool,
                 log_every_steps: int, batch_size: int, device: torch.device, purge_step: int | None):
        self.task_names = list(task_names)
        self.world = world
        self.progress_enabled = progress
        self.log_every_steps = log_every_steps
        self.batch_size = batch_size
        self.writer = None
        if world.is_root:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(tensorboard_dir), purge_step=purge_step or None)
        size = len(self.task_names)
        self._window = torch.zeros(2 * size, dtype=torch.float64, device=device)
        self._epoch = torch.zeros(2 * size, dtype=torch.float64, device=device)
        self._bar = None

    # --- epoch ------------------------------------------------------------------------

    def start_epoch(self, epoch: int, epochs: int, steps: int, first_step: int) -> None:
        self._window.zero_()
        self._epoch.zero_()
        self._window_start = self._epoch_start = time.perf_counter()
        self._window_steps = 0
        self._gradient_bytes = 0
        self._steps_this_process = 0
        self._step_times: list[float] = []
        self._last_step_end = time.perf_counter()
        if self.world.is_root and self.progress_enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=steps, initial=first_step, desc=f"epoch {epoch + 1}/{epochs}", unit="step",
                             file=sys.stderr, dynamic_ncols=True, mininterval=1.0)

    def after_step(self, sums: Mapping[str, torch.Tensor], counts: torch.Tensor, *, global_step: int,
                   last_of_epoch: bool, gradient_bytes: int, task_weights: Callable[[], Mapping[str, float]]) -> None:
        now = time.perf_counter()
        self._step_times.append(now - self._last_step_end)  # step + waiting for its batch
        self._last_step_end = now
        with torch.no_grad():
            step = torch.cat([torch.stack([sums[t].detach().double() for t in self.task_names]), counts.double()])
            self._window += step
            self._epoch += step
        self._window_steps += 1
        self._steps_this_process += 1
        self._gradient_bytes += gradient_bytes
        if global_step % self.log_every_steps == 0 or last_of_epoch:
            self._log_window(global_step, task_weights)
        if self._bar is not None:
            self._bar.update(1)
        self._last_step_end = time.perf_counter()  # logging and the bar are not the step's

    def _log_window(self, global_step: int, task_weights: Callable[[], Mapping[str, float]]) -> None:
        losses = self._mean_losses(self.world.allreduce_sum(self._window.cpu(), name="log_window"))
        elapsed = max(time.perf_counter() - self._window_start, 1e-9)
        samples_per_s = self._window_steps * self.batch_size * self.world.size / elapsed
        if self.writer is not None:
            for name, value in losses.items():
                self.writer.add_scalar(f"train_loss/{name}", value, global_step)
            self.writer.add_scalar("train/samples_per_s", samples_per_s, global_step)
            for name, weight in task_weights().items():
                self.writer.add_scalar(f"task_weight/{name}", weight, global_step)
            if self._bar is not None:
                self._bar.set_postfix({"samples/s": f"{samples_per_s:,.0f}", **{n: f"{v:.4f}" for n, v in losses.items()}})
        self._window.zero_()
        self._window_start, self._window_steps = time.perf_counter(), 0

    def end_epoch(self) -> dict[str, Any]:
        """The epoch's global training losses and speed (a collective).

        step_seconds_median: steady-state time of one step (this rank), its batch's wait included,
        the first step (reader start-up) left out. gradient_bytes_per_step: the gradient payload one
        worker contributes to the exchange per step (dense numel x 4 bytes; sparse: touched rows).
        """
        import statistics

        seconds = time.perf_counter() - self._epoch_start
        self.close_bar()
        losses = self._mean_losses(self.world.allreduce_sum(self._epoch.cpu(), name="epoch_loss"))
        steps = max(self._steps_this_process, 1)
        steady = self._step_times[1:] or self._step_times or [seconds]
        return {"train_loss": losses, "train_seconds": seconds,
                "train_samples_per_s": self._steps_this_process * self.batch_size * self.world.size / max(seconds, 1e-9),
                "step_seconds_median": statistics.median(steady),
                "gradient_bytes_per_step": self._gradient_bytes / steps}

    def _mean_losses(self, totals: torch.Tensor) -> dict[str, float]:
        size = len(self.task_names)
        return dict(zip(self.task_names, (totals[:size] / totals[size:].clamp_min(1)).tolist()))

    # --- validation and the end ------------------------------------------------------------

    def log_validation(self, metrics: Mapping[str, Mapping[str, Any]], global_step: int) -> None:
        if self.writer is None:
            return
        for task, values in metrics.items():
            for name, value in values.items():
                if isinstance(value, (int, float)) and value is not None:
                    self.writer.add_scalar(f"validation/{task}.{name}", value, global_step)
        self.writer.flush()

    def close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def close(self) -> None:
        self.close_bar()
        if self.writer is not None:
            self.writer.close()
