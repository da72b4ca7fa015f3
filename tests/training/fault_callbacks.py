"""Test-only trainer callbacks: faults and probes the production config no longer carries.

In-process tests pass instances to `run_training(config, callbacks=[...])`;
worker processes (horovodrun, horovod.spark, TorchDistributor) load them from
PLE_TRAIN_CALLBACKS, built with `spec(...)` below (this file is loaded by path,
so no package import is needed in the workers).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from training.callbacks import TrainerCallback, callbacks_spec
from ple_runtime.lineage import write_json

HERE = Path(__file__).resolve()
STOPPED_FOR_TEST_EXIT_CODE = 75


def spec(*entries: tuple[str, dict]) -> str:
    """PLE_TRAIN_CALLBACKS value for callbacks of this file: spec(("HardExitAfterSteps", {"steps": 7}), ...)."""
    return callbacks_spec(*((f"{HERE}:{name}", kwargs) for name, kwargs in entries))


class SimulatedCrash(RuntimeError):
    pass


class HardExitAfterSteps(TrainerCallback):
    """Exit the process like a crash (no cleanup, no final checkpoint) after `steps` global steps."""

    def __init__(self, steps: int):
        self.steps = steps

    def on_step_end(self, trainer) -> None:
        if trainer.global_step >= self.steps:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(STOPPED_FOR_TEST_EXIT_CODE)


class RaiseAfterSteps(TrainerCallback):
    """In-process version of a crash: raise after `steps` global steps (mid-epoch checkpoints stay)."""

    def __init__(self, steps: int):
        self.steps = steps

    def on_step_end(self, trainer) -> None:
        if trainer.global_step >= self.steps:
            raise SimulatedCrash(f"stopped after {trainer.global_step} steps")


class StepDelay(TrainerCallback):
    """Sleep after every step (gives kill tests a window)."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def on_step_end(self, trainer) -> None:
        time.sleep(self.seconds)


class RowIdLog(TrainerCallback):
    """Write the row ids each rank trained on / validated, per epoch, to <out>/debug/ (rank 0 writes)."""

    def __init__(self, column: str = "row_id"):
        self.column = column
        self.extra_columns = (column,)
        self._train: list[int] = []
        self._validation: list[int] = []
        self._resumed_at = 0

    def on_train_start(self, trainer) -> None:
        self._resumed_at = trainer.step_in_epoch

    def on_train_batch(self, trainer, batch) -> None:
        self._train += batch.extra[self.column].tolist()

    def on_validation_batch(self, trainer, batch) -> None:
        self._validation += batch.extra[self.column].tolist()

    def on_epoch_end(self, trainer, record) -> None:
        epoch = trainer.epoch - 1  # the epoch that just ended
        train = trainer.world.allgather_object(self._train)
        validation = trainer.world.allgather_object(self._validation)
        if trainer.world.is_root:
            debug = Path(trainer.out) / "debug"
            write_json(debug / f"row_ids-epoch{epoch:04d}.json",
                       {"epoch": epoch, "resumed_at_step": self._resumed_at,
                        "rows_by_rank": {str(r): v for r, v in enumerate(train)}})
            write_json(debug / f"validation_row_ids-epoch{epoch:04d}.json",
                       {"epoch": epoch, "rows_by_rank": {str(r): v for r, v in enumerate(validation)}})
        self._train, self._validation, self._resumed_at = [], [], 0


class StartWeights(TrainerCallback):
    """Write each rank's weights as training starts (after the start-of-run broadcast) to debug/start-rank<r>.pt."""

    def on_train_start(self, trainer) -> None:
        import torch

        folder = trainer.out / "debug"
        folder.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.detach().cpu() for k, v in trainer.model.state_dict().items()},
                   folder / f"start-rank{trainer.world.rank}.pt")
