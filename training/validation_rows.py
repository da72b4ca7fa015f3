"""What is kept of each validation row: for the epoch's metrics (rank 0, after a gather) and for the
post-hoc calibration's fit (training/calibration.py).

AUC does not average over shards, so every row's prediction, label and sample-space flag must reach
rank 0; the calibration fits on every row. They are kept compact, in arrays sized from the Parquet
footers and filled in place:

- predictions: float32, one column per task;
- labels: one byte for a binary task (0/1), float32 for a regression one;
- sample spaces: one byte (a row is out of a task's space where its mask is 0 or its label null).

For the video spec (3 binary tasks, 1 regression) that is 27 bytes a row, against 48 as a float32
block of prediction/label/mask per task: 121 MB less at a 5.75M-row validation day
(docs/measurements/memory.md, "Training's validation day").
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from ple_model.metrics import evaluate_tasks
from ple_model.spec import ModelSpec


class ValidationRows:
    """One rank's validation rows (`fill` batch by batch), then every rank's on rank 0 (`gather`)."""

    def __init__(self, spec: ModelSpec, rows: int):
        self.spec = spec
        self.filled = 0
        self.predictions = torch.empty((rows, len(spec.tasks)), dtype=torch.float32)
        self.labels = {task.name: torch.empty(rows, dtype=torch.uint8 if task.type == "binary" else torch.float32)
                       for task in spec.tasks}
        self.masks = {task.name: torch.empty(rows, dtype=torch.uint8) for task in spec.tasks}

    @property
    def rows(self) -> int:
        return len(self.predictions)

    def fill(self, predictions: Mapping[str, Any], labels: Mapping[str, Any], masks: Mapping[str, Any]) -> bool:
        """Append one batch (numpy arrays or tensors per task); False (nothing kept) when it would go past the
        rows the footers gave."""
        count = len(next(iter(labels.values())))
        if self.filled + count > self.rows:
            return False
        kept = slice(self.filled, self.filled + count)
        for index, task in enumerate(self.spec.task_names):
            label = torch.as_tensor(labels[task]).cpu()
            if self.labels[task].dtype == torch.uint8 and bool(((label != 0) & (label != 1)).any()):
                raise ValueError(f"task {task!r}: binary labels must be 0 or 1, got {label.unique()[:5].tolist()}")
            self.predictions[kept, index] = torch.as_tensor(predictions[task])
            self.labels[task][kept] = label
            self.masks[task][kept] = torch.as_tensor(masks[task]).cpu() > 0
        self.filled += count
        return True

    def gather(self, world) -> "ValidationRows":
        """Every rank's rows, concatenated in rank order (a collective: every rank calls it)."""
        everything = ValidationRows(self.spec, 0)
        everything.predictions = world.allgather(self.predictions, name="validation_predictions")
        everything.labels = {task: world.allgather(values, name=f"validation_label_{task}")
                             for task, values in self.labels.items()}
        everything.masks = {task: world.allgather(values, name=f"validation_mask_{task}")
                            for task, values in self.masks.items()}
        everything.filled = everything.rows
        return everything

    def columns(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Predictions, labels and masks per task, as numpy views of the kept arrays (no copy)."""
        predictions = {task: self.predictions[:, index].numpy() for index, task in enumerate(self.spec.task_names)}
        return (predictions, {task: values.numpy() for task, values in self.labels.items()},
                {task: values.numpy() for task, values in self.masks.items()})

    def metrics(self) -> dict[str, dict[str, Any]]:
        """Per-task metrics over these rows (ple_model.metrics.evaluate_tasks)."""
        return evaluate_tasks(self.spec, *self.columns())
