"""Checkpoints: everything needed to continue a run exactly where it stopped.

<out>/checkpoints/
    step-e0001-s000040.pt   mid-epoch (position: 40 batches of epoch 1 done)
    epoch-0001.pt           end of epoch 1 (after validation; position: epoch 2, step 0)
    latest.json             {"file": ..., "epoch": ..., "step": ...}: written last, so a
                            crash mid-save leaves the previous checkpoint in charge.

Files are written to a temp name and renamed (atomic on one filesystem); next to each, a
`<name>.digest.json` holds its size and sha256. A file that no longer matches its digest (truncated
or torn on disk after the rename, e.g. by a full disk or a storage fault) or that torch cannot load
is skipped with a warning, and the newest complete checkpoint before it is used.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import torch

from ple_runtime.lineage import file_sha256, write_json

LATEST = "latest.json"
DIGEST_SUFFIX = ".digest.json"
_STEP_RE = re.compile(r"^step-e(\d+)-s(\d+)\.pt$")
_EPOCH_RE = re.compile(r"^epoch-(\d+)\.pt$")


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
    write_json(path.with_name(path.name + DIGEST_SUFFIX), {"bytes": path.stat().st_size, "sha256": file_sha256(path)})
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
            old.with_name(old.name + DIGEST_SUFFIX).unlink(missing_ok=True)


def _position(name: str) -> tuple[int, int] | None:
    """The position a checkpoint file continues from, from its name."""
    if match := _STEP_RE.match(name):
        return int(match.group(1)), int(match.group(2))
    if match := _EPOCH_RE.match(name):
        return int(match.group(1)) + 1, 0
    return None


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The checkpoint latest.json points at, else None (see `load_latest_checkpoint`)."""
    pointer = Path(directory) / LATEST
    if not pointer.is_file():
        return None
    path = Path(directory) / json.loads(pointer.read_text())["file"]
    return path if path.is_file() else None


def checkpoint_problem(path: Path) -> str | None:
    """Why a checkpoint file is not the complete file that was written (None: it is)."""
    digest_path = path.with_name(path.name + DIGEST_SUFFIX)
    if not path.is_file():
        return "the file is missing"
    if digest_path.is_file():
        digest = json.loads(digest_path.read_text())
        if path.stat().st_size != digest["bytes"]:
            return f"{path.stat().st_size} bytes on disk, {digest['bytes']} written (truncated)"
        if file_sha256(path) != digest["sha256"]:
            return "its sha256 differs from the one recorded when it was written (corrupted)"
    return None


def load_latest_checkpoint(directory: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest complete checkpoint at or before the one latest.json points at, loaded. A torn
    one is reported (stderr) and skipped: resuming from an earlier position replays the steps
    after it exactly (the run is deterministic from a checkpoint)."""
    directory = Path(directory)
    pointed = latest_checkpoint(directory) or (directory / json.loads((directory / LATEST).read_text())["file"]
                                               if (directory / LATEST).is_file() else None)
    if pointed is None or _position(pointed.name) is None:
        return None
    newest = _position(pointed.name)
    candidates = sorted((p for p in directory.glob("*.pt") if (_position(p.name) or (1 << 62,)) <= newest),
                        key=lambda p: _position(p.name), reverse=True)
    skipped = []
    for path in [pointed, *[c for c in candidates if c != pointed]]:
        problem = checkpoint_problem(path)
        if problem is None:
            try:
                state = load_checkpoint(path)
            except Exception as error:  # noqa: BLE001 - torch raises RuntimeError/EOFError/UnpicklingError
                problem = f"torch cannot load it ({type(error).__name__}: {str(error).splitlines()[0][:200]})"
        if problem is None:
            if skipped:
                print(f"warning: resuming from {path.name}, not {', '.join(skipped)}", file=sys.stderr, flush=True)
            return path, state
        print(f"warning: checkpoint {path} is incomplete: {problem}; trying the one before it",
              file=sys.stderr, flush=True)
        skipped.append(f"{path.name} ({problem})")
    raise CheckpointMismatch(f"no complete checkpoint in {directory}: {'; '.join(skipped)}. Start a new run "
                             "(another --out, no --resume)")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    # weights_only=False: the checkpoint holds RNG states and plain Python records we wrote ourselves.
    return torch.load(path, map_location="cpu", weights_only=False)


class CheckpointMismatch(RuntimeError):
    """A checkpoint cannot continue this run (other world size or steps per epoch)."""


class Checkpointer:
    """Every checkpoint concern of a run behind one object: what goes in, who writes, how it comes back.

    `save` is a collective (it gathers every rank's RNG state); rank 0 writes.
    `restore` loads the latest checkpoint on rank 0 only (no shared filesystem
    needed), puts the weights, weighting and optimizer state into the given
    objects (the world then broadcasts them), refuses a checkpoint written by
    another world size or steps-per-epoch, and returns the small run state
    every rank needs (position, history, selection state, this rank's RNG).
    """

    SMALL_KEYS = ("position", "global_step", "history", "selection", "resumes", "rng", "world_size",
                  "steps_per_epoch")

    def __init__(self, directory: str | Path, world, keep_step_checkpoints: int):
        self.directory = Path(directory)
        self.world = world
        self.keep_step_checkpoints = keep_step_checkpoints

    def save(self, *, modules: dict[str, Any], optimizers: list, run_state: dict[str, Any],
             epoch: int, step: int, end_of_epoch: bool) -> None:
        from .world import rng_state

        rng_states = self.world.allgather_object(rng_state())  # collective: every rank calls it
        if not self.world.is_root:
            return
        state = {name: module.state_dict() for name, module in modules.items()}
        state["optimizer"] = [optimizer.state_dict() for optimizer in optimizers]
        state.update(run_state, rng=rng_states, world_size=self.world.size)
        save_checkpoint(self.directory, state, epoch=epoch, step=step, end_of_epoch=end_of_epoch,
                        keep_step_checkpoints=self.keep_step_checkpoints)

    def restore(self, *, modules: dict[str, Any], optimizers: list, steps_per_epoch: int) -> dict[str, Any] | None:
        found, failure = None, None
        if self.world.is_root:
            try:
                latest = load_latest_checkpoint(self.directory)
            except CheckpointMismatch as error:
                latest, failure = None, str(error)
            if latest is not None:
                path, found = latest
                found["_file"] = path.name
        if failure := self.world.broadcast_object(failure, "resume_failure"):
            raise CheckpointMismatch(failure)  # on every rank: none is left waiting in a collective
        if not self.world.broadcast_object(found is not None, "resume_found"):
            return None
        small = None
        if self.world.is_root:
            saved = found["optimizer"] if isinstance(found["optimizer"], list) else [found["optimizer"]]
            small = {k: found.get(k) for k in (*self.SMALL_KEYS, "_file")}
            small["optimizer_count"] = len(saved)
        small = self.world.broadcast_object(small, "resume_state")
        # Every rank checks the same facts and raises alike: none is left waiting in a collective.
        check_compatible(small, self.world.size, steps_per_epoch)
        if small["optimizer_count"] != len(optimizers):
            raise CheckpointMismatch(f"checkpoint {small['_file']} holds {small['optimizer_count']} optimizer states, "
                                     f"this run has {len(optimizers)} (another embedding_optimizer?)")
        if self.world.is_root:
            for name, module in modules.items():
                module.load_state_dict(found[name])
            for optimizer, optimizer_state in zip(optimizers, saved):
                optimizer.load_state_dict(optimizer_state)
        small["rng"] = small["rng"][self.world.rank]
        return small


def check_compatible(state: dict[str, Any], world_size: int, steps_per_epoch: int) -> None:
    if state["world_size"] != world_size or state["steps_per_epoch"] != steps_per_epoch:
        raise CheckpointMismatch(
            f"checkpoint {state.get('_file', '')} was written by {state['world_size']} workers with "
            f"{state['steps_per_epoch']} steps/epoch; this run has {world_size} and {steps_per_epoch}: "
            "resume with the same --workers and batch size")
