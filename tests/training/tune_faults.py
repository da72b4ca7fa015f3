"""Faults for `ple tune`'s resume test, inside one trial's training: Ctrl-C, or the whole process dies (no cleanup)."""

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


class InterruptInRunFolder(TrainerCallback):
    """SIGINT to the tune process itself (what Ctrl-C sends) after the first step of a run whose output
    folder is named `folder`."""

    def __init__(self, folder: str):
        self.folder = folder

    def on_step_end(self, trainer) -> None:
        if trainer.out.name == self.folder:
            import signal

            os.kill(os.getpid(), signal.SIGINT)
