"""Small real tables for the training tests: a Delta `examples`-like table written by Spark
(partitioned by dt, 3 files per day), a vocabulary Delta table next to it, and the spec."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))  # training_tables, next to this file
import training_tables as synth  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
TRAIN_DAYS = ["2026-01-01", "2026-01-02", "2026-01-03"]
VALIDATION_DAY = "2026-01-04"
ROWS_PER_DAY = 2000


@pytest.fixture(scope="session")
def lake(tmp_path_factory, spark):
    """<root>/lake/examples (Delta, dt-partitioned) and <root>/lake/vocabulary (Delta)."""
    import pandas as pd

    root = tmp_path_factory.mktemp("training_lake")
    frames = [synth.make_rows(ROWS_PER_DAY, seed=i, start_id=i * 10**6, dt=day)
              for i, day in enumerate([*TRAIN_DAYS, VALIDATION_DAY])]
    examples = str(root / "lake" / "examples")
    # The vocabulary first, as `ple extract` writes it: the plan pins the version the examples were written against.
    vocabulary = pd.DataFrame({"vocabulary": "user", "value": [f"u{i}" for i in range(synth.USERS + 1)],
                               "id": list(range(synth.USERS + 1))})
    spark.createDataFrame(vocabulary).write.format("delta").save(str(root / "lake" / "vocabulary"))
    synth.write_delta(spark, pd.concat(frames, ignore_index=True), examples, files_per_day=3)
    spec_path = root / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(synth.SPEC, sort_keys=False))
    return {"root": root, "examples": examples, "spec": str(spec_path), "frames": frames,
            "validation_frame": frames[-1]}


def date_args(lake: dict) -> list[str]:
    return ["--table", lake["examples"], "--train-start", TRAIN_DAYS[0], "--train-end", TRAIN_DAYS[-1],
            "--validation-date", VALIDATION_DAY, "--spec", lake["spec"]]


def run_train(args: list[str], env: dict, timeout: float = 240) -> subprocess.CompletedProcess:
    """`python -m jobs.train ...` from the repo root (what `ple train` runs)."""
    return subprocess.run([sys.executable, "-m", "jobs.train", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def record(out: Path) -> dict:
    return json.loads((Path(out) / "run_record.json").read_text())


def final_metrics(out: Path) -> dict:
    return record(out)["epochs"][-1]["validation"]


SMALL_MODEL = ["--set", "model_params.expert_hidden=[16]", "--set", "model_params.tower_hidden=[16,8]"]
# The fault tests' runs: 2 Horovod workers, 2 epochs of ~30 steps, a checkpoint every 5 steps. No post-hoc
# calibration: they compare validation metrics, which come before it (tested in test_trainer.py), and it
# costs every run a re-scoring and sklearn's import.
RESUMABLE_RUN = ["--workers", "2", "--epochs", "2", "--batch-size", "100", "--lr", "0.003",
                 "--checkpoint-every-steps", "5", "--selection", "last_epoch", "--calibration", "none",
                 "--no-progress", *SMALL_MODEL]


@pytest.fixture(scope="session")
def uninterrupted_run(lake, tmp_path_factory) -> Path:
    """One uninterrupted RESUMABLE_RUN, run once: what each fault test's killed-then-resumed run
    must match (test_training_distributed.py, test_worker_killed.py)."""
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = run_train([*date_args(lake), *RESUMABLE_RUN, "--out", str(out)], env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return out


def assert_disjoint_shards(lake: dict, out: Path, run: dict, batch_size: int) -> None:
    """From the RowIdLog callback's files: each rank trained on rows of its own row groups (index mod 2),
    disjoint from the other's; validation rows disjoint and covering the validation day."""
    import pyarrow.parquet as pq

    from training.data import row_groups_in_petastorm_order
    from ple_runtime.snapshot import resolve_snapshot

    rows_by_rank = json.loads((out / "debug" / "row_ids-epoch0000.json").read_text())["rows_by_rank"]
    ids = {int(rank): set(values) for rank, values in rows_by_rank.items()}
    assert not ids[0] & ids[1]
    assert len(ids[0]) == len(ids[1]) == run["steps_per_epoch"] * batch_size
    snapshot = resolve_snapshot(lake["examples"], {"dt": {"min": TRAIN_DAYS[0], "max": TRAIN_DAYS[-1]}})
    owned = {0: set(), 1: set()}
    for index, (path, row_group, _) in enumerate(row_groups_in_petastorm_order(snapshot.urls)):
        owned[index % 2] |= set(pq.ParquetFile(path.removeprefix("file://")).read_row_group(
            row_group, columns=["row_id"]).column("row_id").to_pylist())
    assert ids[0] <= owned[0] and ids[1] <= owned[1]
    assert sum(run["rows_per_shard"]) == len(owned[0] | owned[1]) == len(TRAIN_DAYS) * ROWS_PER_DAY
    validation = json.loads((out / "debug" / "validation_row_ids-epoch0000.json").read_text())["rows_by_rank"]
    v0, v1 = set(validation["0"]), set(validation["1"])
    assert not v0 & v1 and v0 | v1 == set(lake["validation_frame"]["row_id"])
