"""Distributed training over a pinned Delta/Parquet snapshot (Petastorm + Horovod or torch.distributed).
See docs/TRAINING.md.

Public API:

    from training import TrainConfig, run_training
    run_training(config)                                   # plan on the driver, then the configured launcher
    # pinning a table: ple_runtime.snapshot.resolve_snapshot (shared with evaluation)
    # model files: ple_model.model_file (load_model / save_model)
"""

from __future__ import annotations

from typing import Any

__all__ = ["TrainConfig", "TrainingPlan", "run_training"]

_LAZY = {"TrainConfig": "config", "TrainingPlan": "plan", "run_training": "launch"}


def __getattr__(name: str) -> Any:
    # Lazy: `import training` stays cheap (no torch).
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'training' has no attribute {name!r}")
