"""One of two Horovod workers killed while the other is in a collective: the job fails within a
bounded time with a clear error, and --resume then matches an uninterrupted run."""

from __future__ import annotations

import time

import pytest

from conftest import RESUMABLE_RUN, date_args, final_metrics, record, run_train
import worker_faults
from training.callbacks import CALLBACKS_ENV

pytestmark = pytest.mark.slow


def test_a_worker_killed_in_a_collective_fails_the_job_and_resume_matches(lake, uninterrupted_run, tmp_path,
                                                                          subprocess_env):
    common = [*date_args(lake), *RESUMABLE_RUN]

    out = tmp_path / "killed"    # rank 1 dies after global step 42 (in epoch 1), rank 0 goes on into step 43
    marker = tmp_path / "killed_at"
    killing = {**subprocess_env, CALLBACKS_ENV: worker_faults.spec(
        ("KillRankAfterSteps", {"rank": 1, "steps": 42, "marker": str(marker)}))}
    killed = run_train([*common, "--out", str(out)], killing, timeout=300)
    failed_after = time.time() - float(marker.read_text())
    assert killed.returncode != 0
    assert "killing rank 1 after step 42" in killed.stderr
    assert "train failed: horovodrun exited with status" in killed.stderr and "--resume" in killed.stderr
    assert failed_after < 60, f"the job failed {failed_after:.0f} s after the worker died"   # bounded, not hung
    assert record(out)["status"] == "running" and len(record(out)["epochs"]) == 1

    resumed = run_train([*common, "--out", str(out), "--resume"], subprocess_env)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    position = record(out)["resumes"][0]["position"]   # the last checkpoint before the kill (every 5 steps)
    assert position["epoch"] == 1 and position["step"] > 0 and position["step"] % 5 == 0
    again, reference = final_metrics(out), final_metrics(uninterrupted_run)
    for task in ("play", "share"):
        assert again[task]["auc"] == pytest.approx(reference[task]["auc"], abs=1e-6)
    assert again["watch_ratio"]["mse"] == pytest.approx(reference["watch_ratio"]["mse"], abs=1e-6)
