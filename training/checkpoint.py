"""Checkpoints: everything needed to continue a run exactly where it stopped.

<out>/checkpoints/
    step-e0001-s000040.pt   mid-epoch (position: 40 batches of epoch 1 done)
    epoch-0001.pt           end of epoch 1 (after validation; position: epoch 2, step 0)
    latest.json             {"file": ..., "epoch": ..., "step": ...}: written last, so a
                            crash mid-save leaves the previous checkpoint in charge.

Files are written to a temp name and renamed (atomic on one filesystem).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch

LATEST = "latest.json"
_STEP_RE = re.compile(r"^step-e(\d+)-s(\d+)\.pt$")


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        torch.save(obj, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def save_checkpoint(directory: str | Path, state: dict[str, Any], *, epoch: int, step: int,
                    end_of_epoch: bool, keep_step_checkpoints: int = 3) -> Path:
    """Write one checkpoint; `epoch`/`step` is the position to continue from."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    name = f"epoch-{epoch - 1:04d}.pt" if end_of_epoch else f"step-e{epoch:04d}-s{step:06d}.pt"
    path = directory / name
    _atomic_torch_save({**state, "position": {"epoch": epoch, "step": step}}, path)
    pointer = directory / LATEST
    tmp = pointer.with_name(LATEST + ".tmp")
    tmp.write_text(json.dumps({"file": name, "epoch": epoch, "step": step}) + "\n")
    os.replace(tmp, pointer)
    _prune_step_checkpoints(directory, keep_step_checkpoints, keep=name)
    return path


def _prune_step_checkpoints(directory: Path, keep_count: int, keep: str) -> None:
    steps = sorted((p for p in directory.iterdir() if _STEP_RE.match(p.name)),
                   key=lambda p: tuple(int(x) for x in _STEP_RE.match(p.name).groups()))
    for old in steps[:-keep_count] if keep_count > 0 else steps:
        if old.name != keep:
            old.unlink(missing_ok=True)


def latest_checkpoint(directory: str | Path) -> Path | None:
    pointer = Path(directory) / LATEST
    if not pointer.is_file():
        return None
    path = Path(directory) / json.loads(pointer.read_text())["file"]
    return path if path.is_file() else None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    # weights_only=False: the checkpoint holds RNG states and plain Python records we wrote ourselves.
    return torch.load(path, map_location="cpu", weights_only=False)
