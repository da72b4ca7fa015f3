"""One of two Horovod workers killed while the other is in a collective: the job fails within a
bounded time with a clear error that says to --resume, and leaves the last checkpoint before the
kill to resume from. (That a --resume from a mid-epoch checkpoint of a killed job matches an
uninterrupted run: test_training_distributed.py's SIGKILL test.)"""

from __future__ import annotations

import json
import time

import pytest

from conftest import RESUMABLE_RUN, date_args, record, run_train
import worker_faults
from training.callbacks import CALLBACKS_ENV
from training.checkpoint import checkpoint_problem

pytestmark = pytest.mark.slow


def test_a_worker_killed_in_a_collective_fails_the_job_and_leaves_a_checkpoint(lake, tmp_path, subprocess_env):
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
    # the last checkpoint (every 5 steps) before the kill, in epoch 1, is what --resume starts from
    position = json.loads((out / "checkpoints" / "latest.json").read_text())
    assert position["epoch"] == 1 and 0 < position["step"] and position["step"] % 5 == 0, position
    assert checkpoint_problem(out / "checkpoints" / position["file"]) is None   # whole, its digest matches
