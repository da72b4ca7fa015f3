"""Start the workers: in this process, under horovodrun, or on Spark executors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from ple_runtime.config import ConfigError

from .config import TrainConfig
from .plan import PLAN_FILE, prepare_plan

REPO_ROOT = Path(__file__).resolve().parent.parent


def worker_env() -> dict[str, str]:
    env = dict(os.environ)
    # The repo root on PYTHONPATH: `training` imports in every worker, installed or not.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def horovodrun_command(config: TrainConfig, plan_path: Path) -> list[str]:
    horovodrun = Path(sys.executable).parent / "horovodrun"
    if not horovodrun.exists():
        found = shutil.which("horovodrun")
        if not found:
            raise ConfigError("horovodrun not found next to this Python nor on PATH; is horovod installed?")
        horovodrun = Path(found)
    hosts = config.hosts or f"localhost:{config.workers}"
    return [str(horovodrun), "-np", str(config.workers), "--gloo", "-H", hosts,
            sys.executable, "-m", "training.worker", str(plan_path)]


def run_training(config: TrainConfig) -> int:
    # Paths are absolute already (TrainConfig's Location fields): workers may run elsewhere.
    plan = prepare_plan(config)  # every check that can fail, before any worker starts
    plan_path = Path(config.out) / PLAN_FILE
    launcher = config.resolved_launcher
    if launcher == "single":
        from .loop import train_worker

        train_worker(plan, use_horovod=False, launcher="single")
        return 0
    if launcher == "horovodrun":
        command = horovodrun_command(config, plan_path)
        print("launching: " + " ".join(command), file=sys.stderr, flush=True)
        return subprocess.run(command, env=worker_env(), cwd=str(REPO_ROOT)).returncode
    return run_on_spark(config, plan_path)


def run_on_spark(config: TrainConfig, plan_path: Path) -> int:
    import horovod.spark

    from ple_runtime.spark import get_spark

    from .worker import spark_worker

    import cloudpickle

    import training

    # Ship this package's code with the function: executors need not have `training` importable.
    cloudpickle.register_pickle_by_value(training)
    os.environ["PYTHONPATH"] = worker_env()["PYTHONPATH"]  # Python workers of local executors inherit it
    spark = get_spark("ple-train")
    slots = spark.sparkContext.defaultParallelism
    if slots < config.workers:
        raise ConfigError(f"Spark offers {slots} task slots but --workers {config.workers}: horovod.spark needs "
                          "one concurrent task per worker")
    results = horovod.spark.run(spark_worker, args=(str(plan_path), str(REPO_ROOT)), num_proc=config.workers,
                                use_gloo=True, env=worker_env(), stdout=sys.stdout, stderr=sys.stderr, verbose=1)
    print(f"horovod.spark finished: {results[0]}", file=sys.stderr)
    return 0
