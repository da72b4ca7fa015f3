"""`ple train`: train a multi-task model on a pinned Delta/Parquet snapshot (single process or Horovod).

    ple train --table ple_data/lake/examples --train-start 2026-01-01 --train-end 2026-01-07 \
        --validation-date 2026-01-08 --spec conf/video_spec.yaml --model ple \
        --set model_params.num_levels=2 --workers 2 --out ple_data/runs/ple-1

Settings: conf/train.yaml (--config) and training/config.py; docs/TRAINING.md.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from ple_runtime.config import parse_job_config
    from training.config import TrainConfig
    from training.launch import run_training

    config = parse_job_config(TrainConfig, argv, prog="ple train")
    return run_training(config)


if __name__ == "__main__":
    sys.exit(main())
