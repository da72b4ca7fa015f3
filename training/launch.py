"""Start the workers: in this process, under horovodrun, or on Spark executors (Horovod or TorchDistributor)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from ple_runtime.config import ConfigError

from .callbacks import TrainerCallback, callbacks_from_environment, load_callbacks
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


def run_training(config: TrainConfig, callbacks: Sequence[TrainerCallback] = ()) -> int:
    """Plan on the driver (every check that can fail), then train with the configured launcher.

    `callbacks`: objects for an in-process (`single`) run. Worker processes get
    theirs from PLE_TRAIN_CALLBACKS (training/callbacks.py), which this process
    reads too, so the columns they need are checked before any worker starts.
    """
    launcher = config.resolved_launcher
    if callbacks and launcher != "single":
        raise ConfigError("callback objects only reach an in-process run; for worker processes set "
                          "PLE_TRAIN_CALLBACKS (see training/callbacks.py)")
    callbacks_text = callbacks_from_environment()
    callbacks = [*callbacks, *load_callbacks(callbacks_text)]
    extra_columns = tuple(dict.fromkeys(c for cb in callbacks for c in cb.extra_columns))
    started = time.perf_counter()
    plan = prepare_plan(config, extra_columns)
    planned = time.perf_counter()
    status = launch_workers(config, plan, callbacks, callbacks_text)
    trained = time.perf_counter()
    if status == 0:
        from .calibration import calibrate_model, record_calibration

        record_calibration(plan, calibrate_model(plan))
        # where a run's time goes, step by step (a cost that grows day after day shows which step grows)
        record_driver_seconds(plan, {"plan": planned - started, "workers": trained - planned,
                                     "calibration": time.perf_counter() - trained})
    return status


def record_driver_seconds(plan, seconds: dict[str, float]) -> None:
    """Add the driver's wall seconds per step to <out>/run_record.json (the workers wrote the rest)."""
    from ple_runtime.lineage import write_json

    path = Path(plan.config.out) / "run_record.json"
    if path.is_file():
        write_json(path, {**json.loads(path.read_text()),
                          "driver_seconds": {step: round(value, 3) for step, value in seconds.items()}})


def launch_workers(config: TrainConfig, plan, callbacks: Sequence[TrainerCallback], callbacks_text: str | None) -> int:
    """Train with the configured launcher; its exit status."""
    launcher = config.resolved_launcher
    plan_path = Path(config.out) / PLAN_FILE
    if launcher == "single":
        from .trainer import train_worker

        train_worker(plan, "single", "single", callbacks)
        return 0
    if launcher == "horovodrun":
        command = horovodrun_command(config, plan_path)
        print("launching: " + " ".join(command), file=sys.stderr, flush=True)
        status = subprocess.run(command, env=worker_env(), cwd=str(REPO_ROOT)).returncode
        if status != 0:
            # horovodrun stops every worker once one exits; the ones blocked in a collective fail with it
            print(f"train failed: horovodrun exited with status {status}: a worker died or failed (its output is "
                  "above) and the others were stopped. Complete checkpoints are in "
                  f"{Path(config.out) / 'checkpoints'}: run the same command with --resume to continue from the "
                  "last one", file=sys.stderr, flush=True)
        return status
    if launcher == "spark":
        return run_on_spark(config, plan_path, callbacks_text)
    return run_on_torch_distributor(config, plan_path, callbacks_text)


def _spark_for_workers(config: TrainConfig):
    from ple_runtime.spark import get_spark

    import cloudpickle

    import training

    # Ship this package's code with the function: executors need not have `training` importable.
    cloudpickle.register_pickle_by_value(training)
    os.environ["PYTHONPATH"] = worker_env()["PYTHONPATH"]  # Python workers of local executors inherit it
    spark = get_spark("ple-train")
    slots = spark.sparkContext.defaultParallelism
    if slots < config.workers:
        raise ConfigError(f"Spark offers {slots} task slots but --workers {config.workers}: every worker needs "
                          "its own concurrent task")
    return spark


def run_on_spark(config: TrainConfig, plan_path: Path, callbacks_text: str | None) -> int:
    import horovod.spark

    from .worker import spark_worker

    _spark_for_workers(config)
    results = horovod.spark.run(spark_worker, args=(str(plan_path), str(REPO_ROOT), callbacks_text),
                                num_proc=config.workers, use_gloo=True, env=worker_env(), stdout=sys.stdout,
                                stderr=sys.stderr, verbose=1)
    print(f"horovod.spark finished: {results[0]}", file=sys.stderr)
    return 0


def run_on_torch_distributor(config: TrainConfig, plan_path: Path, callbacks_text: str | None) -> int:
    """TorchDistributor on Spark executors: one barrier task per worker, each a torchrun of one process."""
    from pyspark.ml.torch.distributor import TorchDistributor

    from .worker import torch_distributor_worker

    spark = _spark_for_workers(config)
    gpu_per_task = float(spark.conf.get("spark.task.resource.gpu.amount", "0") or 0)
    use_gpu = config.device == "cuda" or (config.device == "auto" and gpu_per_task > 0)
    # The task's cores are the worker's threads (2 local tasks on 2 cores: 1 thread each, not 2 x 2).
    threads = int(spark.conf.get("spark.task.cpus", "1") or 1)
    distributor = TorchDistributor(num_processes=config.workers, local_mode=False, use_gpu=use_gpu)
    print(f"launching: TorchDistributor(num_processes={config.workers}, local_mode=False, use_gpu={use_gpu})",
          file=sys.stderr, flush=True)
    try:
        result = distributor.run(torch_distributor_worker, str(plan_path), str(REPO_ROOT), callbacks_text, threads)
    except Exception as error:  # noqa: BLE001 - a failed worker fails the Spark job: say so, exit non-zero
        print(f"TorchDistributor training failed: {str(error)[-4000:]}", file=sys.stderr)
        return 1
    print(f"TorchDistributor finished: {result}", file=sys.stderr)
    return 0
