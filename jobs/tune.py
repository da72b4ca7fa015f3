"""`ple tune`: Optuna search over model and training settings; every trial is a `ple train` run.

    ple tune --train-config conf/train.yaml --set train.train_start=2026-01-01 \
        --set train.train_end=2026-01-07 --set train.validation_date=2026-01-08 \
        --set train.workers=1 --out ple_data/tune/ple --trials 40 --minutes 240

Settings: training/tune.py (TuneConfig); docs/TUNING.md.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from ple_runtime.config import parse_job_config
    from orchestration.config import write_best_pipeline
    from training.tune import TuneConfig, run_study

    config = parse_job_config(TuneConfig, argv, prog="ple tune")
    summary = run_study(config)
    best = summary["best"]
    if best:  # the same settings for `ple pipeline --config` (training does not know the pipeline's settings)
        write_best_pipeline(config.out, summary)
    print(f"ple tune: {len(summary['trials'])} trials in {summary['storage']}; " +
          (f"best trial {best['number']} ({best['value']:+.5f}): {config.out}/best_train.yaml and best_pipeline.yaml"
           if best else "no trial completed" + (f" within max_task_loss {config.max_task_loss}"
                                                 if config.max_task_loss is not None else "")))
    return 0 if best else 1


if __name__ == "__main__":
    sys.exit(main())
