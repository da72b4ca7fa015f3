"""Hooks into the training loop, for what is not training itself (tests' faults, debugging, probes).

A callback subclasses `TrainerCallback` and overrides what it needs; every rank
calls every hook at the same point, so a hook may use the trainer's world for
collectives (all ranks call it alike). `extra_columns` names table columns the
callback wants to see in each batch (`batch.extra`), read along with the
spec's columns.

In-process runs pass callback objects to `Trainer` / `train_worker`. Worker
processes started by horovodrun, horovod.spark or TorchDistributor load them
from the environment variable PLE_TRAIN_CALLBACKS, read by the launcher and
handed to every worker explicitly: a JSON list of
`{"factory": "package.module:Name" or "/path/to/file.py:Name", "kwargs": {...}}`.
Production runs set nothing; the production config has no test hooks.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from .trainer import Batch, Trainer

CALLBACKS_ENV = "PLE_TRAIN_CALLBACKS"


class TrainerCallback:
    extra_columns: tuple[str, ...] = ()

    def on_train_start(self, trainer: "Trainer") -> None:
        """After resume, before the first step of this process."""

    def on_train_batch(self, trainer: "Trainer", batch: "Batch") -> None:
        """Before the step on `batch` (trainer.step_in_epoch batches of the epoch are done)."""

    def on_step_end(self, trainer: "Trainer") -> None:
        """After a step and its mid-epoch checkpoint, if any (trainer.global_step counts it)."""

    def on_validation_batch(self, trainer: "Trainer", batch: "Batch") -> None:
        """For every validation batch this rank reads."""

    def on_epoch_end(self, trainer: "Trainer", record: dict[str, Any] | None) -> None:
        """After validation and model selection; `record` is the epoch's history entry (rank 0), else None."""

    def on_train_end(self, trainer: "Trainer", status: str) -> None:
        """After the last epoch (completed or early_stopped)."""


class CallbackList(TrainerCallback):
    """Calls every callback in order."""

    def __init__(self, callbacks: Sequence[TrainerCallback] = ()):
        self.callbacks = list(callbacks)
        self.extra_columns = tuple(dict.fromkeys(c for cb in self.callbacks for c in cb.extra_columns))

    def _call(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(*args)

    def on_train_start(self, trainer: "Trainer") -> None:
        self._call("on_train_start", trainer)

    def on_train_batch(self, trainer: "Trainer", batch: "Batch") -> None:
        self._call("on_train_batch", trainer, batch)

    def on_step_end(self, trainer: "Trainer") -> None:
        self._call("on_step_end", trainer)

    def on_validation_batch(self, trainer: "Trainer", batch: "Batch") -> None:
        self._call("on_validation_batch", trainer, batch)

    def on_epoch_end(self, trainer: "Trainer", record: dict[str, Any] | None) -> None:
        self._call("on_epoch_end", trainer, record)

    def on_train_end(self, trainer: "Trainer", status: str) -> None:
        self._call("on_train_end", trainer, status)


def _resolve(factory: str):
    if ":" not in factory:
        raise ValueError(f"callback factory {factory!r} must be 'module:Name' or '/path/file.py:Name'")
    where, name = factory.rsplit(":", 1)
    if where.endswith(".py"):
        path = Path(where)
        module_name = f"_ple_callbacks_{path.stem}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise ValueError(f"callback file {path} cannot be loaded")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(where)
    return getattr(module, name)


def load_callbacks(text: str | None) -> list[TrainerCallback]:
    """Callbacks from a PLE_TRAIN_CALLBACKS value (see module doc); [] for None or ''."""
    if not text:
        return []
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{CALLBACKS_ENV} is not JSON ({error}): {text[:200]!r}") from None
    callbacks = []
    for entry in entries:
        factory = _resolve(entry["factory"])
        callbacks.append(factory(**(entry.get("kwargs") or {})))
    return callbacks


def callbacks_from_environment() -> str | None:
    """The raw PLE_TRAIN_CALLBACKS value of this process (launchers pass it on to workers)."""
    return os.environ.get(CALLBACKS_ENV) or None


def callbacks_spec(*entries: tuple[str, dict[str, Any]]) -> str:
    """Build a PLE_TRAIN_CALLBACKS value: callbacks_spec(("/x/faults.py:StopAfter", {"steps": 3}), ...)."""
    return json.dumps([{"factory": factory, "kwargs": kwargs} for factory, kwargs in entries])
