"""A fault for `ple tune`'s resume test: the whole tune process dies (no cleanup) inside one trial's training."""

from __future__ import annotations

import os
import sys

from training.callbacks import TrainerCallback


class ExitInRunFolder(TrainerCallback):
    """os._exit after the first step of a run whose output folder is named `folder` (e.g. trial 0001)."""

    def __init__(self, folder: str):
        self.folder = folder

    def on_step_end(self, trainer) -> None:
        if trainer.out.name == self.folder:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(75)
