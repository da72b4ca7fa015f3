"""The global-batch loss (Eq. 9 over all workers) gives 2 workers exactly the gradient one process gets on the
concatenated batch, on both distributed backends, sparse embedding rows (and per-task id biases) included."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import gradient_check
import training_tables as synth
from conftest import REPO_ROOT
from ple_runtime.config import parse_job_config
from training.config import TrainConfig
from training.plan import prepare_plan
from training.trainer import Trainer
from training.world import SingleProcessWorld

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def plan_path(tmp_path_factory):
    root = tmp_path_factory.mktemp("gradient_plan")
    synth.write_parquet_folder(synth.make_rows(400, 1), root / "train", files=2)
    synth.write_parquet_folder(synth.make_rows(100, 2, start_id=10**6), root / "valid", files=1)
    spec = json.loads(json.dumps(synth.SPEC))
    spec["features"][0]["vocab_size"] = synth.USERS + 1
    (root / "spec.yaml").write_text(json.dumps(spec))
    config = parse_job_config(TrainConfig, [
        "--train-path", str(root / "train"), "--validation-path", str(root / "valid"), "--spec",
        str(root / "spec.yaml"), "--out", str(root / "out"), "--workers", "2", "--weighting", "uncertainty",
        "--embedding-optimizer", "sparse_adam", "--batch-size", "32", "--set", "model_params.expert_hidden=[8]",
        "--set", "model_params.tower_hidden=[8]", "--set", "model_params.task_bias_features=[user_idx]"],
        prog="ple train")
    prepare_plan(config)
    return root / "out" / "plan.json"


def single_process_gradients(plan_path: Path, batch) -> dict[str, torch.Tensor]:
    from training.plan import TrainingPlan

    trainer = Trainer(TrainingPlan.load(plan_path), SingleProcessWorld(), launcher="single")
    trainer.backward(batch)
    return gradient_check.dense_gradients(trainer)


@pytest.mark.slow
@pytest.mark.parametrize("world", ["horovod", "torch"])
def test_two_workers_get_the_single_process_gradient_of_the_concatenated_batch(plan_path, tmp_path, world,
                                                                               subprocess_env, venv_bin):
    script = [str(HERE / "gradient_check.py"), str(plan_path), world, str(tmp_path)]
    if world == "horovod":
        command = [str(venv_bin / "horovodrun"), "-np", "2", "--gloo", "-H", "localhost:2", sys.executable, *script]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *script]
    env = {**subprocess_env, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), subprocess_env.get("PYTHONPATH", "")])}
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]

    from training.plan import TrainingPlan

    spec = TrainingPlan.load(plan_path).spec
    batch = gradient_check.global_batch(spec)
    expected = single_process_gradients(plan_path, batch)
    assert any(name.endswith("table") for name in expected)
    assert float(expected["model.task_bias.0.table"].abs().sum()) > 0   # the per-task user biases' sparse rows too
    # torch.distributed's second step sums its dense gradients in buckets while the backward runs
    assert int((tmp_path / "buckets-rank0.txt").read_text()) >= (3 if world == "torch" else 0)
    for exchange in ("after-backward", "during-backward"):
        ranks = [torch.load(tmp_path / f"grads-{exchange}-rank{r}.pt") for r in (0, 1)]
        assert set(ranks[0]) == set(expected)
        for name, value in expected.items():
            assert torch.equal(ranks[0][name], ranks[1][name]), (exchange, name)   # every rank steps alike
            torch.testing.assert_close(ranks[0][name], value, rtol=1e-5, atol=1e-7, msg=f"{exchange}: {name}")

    # The test can fail: averaging each worker's OWN in-space mean (the naive loss) gives another gradient,
    # because the halves hold very different numbers of played rows (watch_ratio's sample space).
    halves = [single_process_gradients(plan_path, gradient_check.part(batch, r, 2)) for r in (0, 1)]
    naive = {name: (halves[0][name] + halves[1][name]) / 2 for name in expected}
    worst = max(float((naive[n] - expected[n]).abs().max() / (expected[n].abs().max() + 1e-12)) for n in expected)
    assert worst > 0.05
