"""The one "reuse or train" of `ple pipeline` and `ple experiment`: a training run is reused when its folder
holds a finished model.pt and a stamp of exactly these settings; otherwise it is trained (`ple train`'s
own code, `training.launch.run_training`) and stamped."""

from __future__ import annotations

import json
from pathlib import Path

from ple_runtime.config import config_as_dict
from ple_runtime.errors import StageError
from ple_runtime.lineage import write_json


class TrainingFailed(StageError):
    """A training run exited with a non-zero status; the message names the run folder."""


def same_settings(stamp: Path, config) -> bool:
    return stamp.is_file() and json.loads(stamp.read_text()) == config_as_dict(config)


def train_or_reuse(train, stamp_name: str, force: bool = False, log=print, label: str | None = None) -> bool:
    """Train `train` (a TrainConfig) unless a finished run with the same settings is in train.out; True if reused.
    `stamp_name` is the file (in the run folder) that records the settings a finished run was trained with."""
    from training.launch import run_training

    out = Path(train.out)
    label = label or train.model
    stamp = out / stamp_name
    if not force and (out / "model.pt").is_file() and same_settings(stamp, train):
        log(f"{label}: a finished run with these settings exists: reused")
        return True
    status = run_training(train)
    if status:
        raise TrainingFailed(f"training {label} into {out} exited with status {status}")
    write_json(stamp, config_as_dict(train))
    return False
