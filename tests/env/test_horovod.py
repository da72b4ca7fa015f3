"""Horovod really starts several workers: horovodrun with Gloo, and horovod.spark."""

import json
import subprocess
from pathlib import Path

import pytest

SMOKE = Path(__file__).with_name("horovod_smoke.py")


@pytest.mark.slow
def test_horovodrun_two_gloo_workers_allreduce_and_optimizer_step(venv_bin, subprocess_env):
    result = subprocess.run(
        [str(venv_bin / "horovodrun"), "-np", "2", "--gloo", "-H", "localhost:2",
         str(venv_bin / "python"), str(SMOKE)],
        capture_output=True, text=True, timeout=300, env=subprocess_env,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    records = [json.loads(line.split("RESULT ", 1)[1]) for line in result.stdout.splitlines() if "RESULT " in line]
    assert sorted(r["rank"] for r in records) == [0, 1]
    assert all(r["size"] == 2 and r["allreduce_sum"] == 3.0 for r in records)
    # Gradients were averaged across ranks, so both replicas took the same step.
    assert records[0]["weights"] == pytest.approx(records[1]["weights"], abs=1e-6)


@pytest.mark.slow
def test_horovod_spark_run_on_local_session(spark):
    import horovod.spark

    # Defined inside the test so cloudpickle ships it by value: executors
    # cannot import a pytest module by name.
    def _spark_task():
        import horovod.torch as hvd
        import torch

        hvd.init()
        return hvd.rank(), hvd.size(), hvd.allreduce(torch.tensor([1.0]), op=hvd.Sum).item()

    results = horovod.spark.run(_spark_task, num_proc=2, use_gloo=True, verbose=0,
                                start_timeout=120)
    assert sorted(results) == [(0, 2, 2.0), (1, 2, 2.0)]
