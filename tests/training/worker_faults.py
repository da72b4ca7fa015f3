"""Test-only trainer callbacks loaded by path in Horovod worker processes (PLE_TRAIN_CALLBACKS)."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from training.callbacks import TrainerCallback, callbacks_spec

HERE = Path(__file__).resolve()


def spec(*entries: tuple[str, dict]) -> str:
    return callbacks_spec(*((f"{HERE}:{name}", kwargs) for name, kwargs in entries))


class KillRankAfterSteps(TrainerCallback):
    """SIGKILL the worker of one rank after `steps` global steps: its peer goes on into the next
    step's allreduce and waits there for a partner that is gone."""

    def __init__(self, rank: int, steps: int, marker: str):
        self.rank, self.steps, self.marker = rank, steps, Path(marker)

    def on_step_end(self, trainer) -> None:
        if trainer.world.rank == self.rank and trainer.global_step >= self.steps:
            self.marker.write_text(str(time.time()))   # when it died, for the test's time bound
            print(f"[test] killing rank {self.rank} after step {trainer.global_step}", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
