"""Worker entry points: one call loads the plan and trains.

    horovodrun -np N --gloo -H localhost:N python -m training.worker <out>/plan.json
    torchrun --nproc_per_node N -m training.worker <out>/plan.json --world torch
    horovod.spark.run(spark_worker, args=(plan_path, repo_root, callbacks), num_proc=N, use_gloo=True)
    TorchDistributor(num_processes=N, local_mode=False).run(torch_distributor_worker, plan_path, repo_root, ...)

Callbacks (tests' fault hooks) come as a PLE_TRAIN_CALLBACKS value (training/callbacks.py):
from the environment under horovodrun/torchrun, as an argument on Spark executors.
"""

from __future__ import annotations

import argparse
import sys


def run_plan_file(plan_path: str, world: str, launcher: str, callbacks_text: str | None = None,
                  threads: int | None = None) -> dict:
    from .callbacks import callbacks_from_environment, load_callbacks
    from .plan import TrainingPlan
    from .trainer import train_worker

    text = callbacks_text if callbacks_text is not None else callbacks_from_environment()
    return train_worker(TrainingPlan.load(plan_path), world, launcher, load_callbacks(text), threads)


def _summary(result: dict) -> dict:
    return {"status": result["status"], "best": result["best"]}


def spark_worker(plan_path: str, repo_root: str | None = None, callbacks_text: str | None = None) -> dict:
    """Runs inside a Spark task (one per Horovod rank); returns a small summary."""
    if repo_root and repo_root not in sys.path:
        sys.path.insert(0, repo_root)
    return _summary(run_plan_file(plan_path, "horovod", "spark", callbacks_text))


def torch_distributor_worker(plan_path: str, repo_root: str | None = None, callbacks_text: str | None = None,
                             threads: int | None = None) -> dict:
    """Runs in each process TorchDistributor starts (torchrun under a Spark barrier task)."""
    if repo_root and repo_root not in sys.path:
        sys.path.insert(0, repo_root)
    return _summary(run_plan_file(plan_path, "torch", "torch-distributor", callbacks_text, threads))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.worker", description="one worker of a training plan")
    parser.add_argument("plan", help="<out>/plan.json written by `ple train`")
    parser.add_argument("--world", choices=["horovod", "torch"], default="horovod",
                        help="horovod (under horovodrun) or torch (torch.distributed under torchrun)")
    args = parser.parse_args(argv)
    run_plan_file(args.plan, args.world, "horovodrun" if args.world == "horovod" else "torchrun")
    return 0


if __name__ == "__main__":
    sys.exit(main())
