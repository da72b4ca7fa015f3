"""Distributed training over a pinned Delta/Parquet snapshot (Petastorm + Horovod or torch.distributed).
See docs/TRAINING.md.

Public API:

    from training import TrainConfig, run_training, resolve_snapshot
    run_training(config)                                   # plan on the driver, then the configured launcher
    snap = resolve_snapshot(table, {"dt": "2026-01-08"}, version=None)   # Snapshot(version, files, urls, ...)
    # model files: ple_model.model_file (load_model / save_model)
"""

from __future__ import annotations

from typing import Any

__all__ = ["resolve_snapshot", "resolve_delta_snapshot",
           "resolve_parquet_snapshot", "latest_delta_version", "Snapshot", "SnapshotFile", "SnapshotError",
           "TrainConfig", "TrainingPlan", "run_training"]

_LAZY = {
    "resolve_snapshot": "snapshot", "resolve_delta_snapshot": "snapshot", "resolve_parquet_snapshot": "snapshot",
    "latest_delta_version": "snapshot", "Snapshot": "snapshot", "SnapshotFile": "snapshot",
    "SnapshotError": "snapshot", "TrainConfig": "config", "TrainingPlan": "plan", "run_training": "launch",
}


def __getattr__(name: str) -> Any:
    # Lazy: `import training` stays cheap (no torch) for callers that only need snapshots.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'training' has no attribute {name!r}")
