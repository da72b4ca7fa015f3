"""`ple tune` end to end on a tiny dt-partitioned table: a study killed inside a trial resumes from its SQLite
storage (the trial count continues, the interrupted settings are tried again), every trial is in MLflow, the
best settings come out as configs `ple train` and `ple pipeline` accept, and the test day is never read: its
partition holds a file that is not Parquet, so any read of that day would fail."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import training_tables as synth
from conftest import REPO_ROOT
from training.callbacks import CALLBACKS_ENV, callbacks_spec

TUNE_FAULTS = Path(__file__).resolve().parent / "tune_faults.py"


DAYS = ["2026-01-01", "2026-01-02", "2026-01-03"]   # train, train, validation
TEST_DAY = "2026-01-04"


@pytest.fixture
def lake(tmp_path):
    """A dt-partitioned Parquet table (pyarrow, no Spark); the test day's file is not Parquet at all."""
    table = tmp_path / "examples"
    for index, day in enumerate(DAYS):
        rows = synth.make_rows(300, seed=index, start_id=index * 10**6).drop(columns=["dt"], errors="ignore")
        synth.write_parquet_folder(rows, table / f"dt={day}", files=1)
    (table / f"dt={TEST_DAY}").mkdir()
    (table / f"dt={TEST_DAY}" / "part-00000.parquet").write_text("the test day: reading this fails")
    spec = json.loads(json.dumps(synth.SPEC))
    spec["features"][0]["vocab_size"] = synth.USERS + 1
    (tmp_path / "spec.yaml").write_text(json.dumps(spec))
    return {"examples": table, "spec": str(tmp_path / "spec.yaml")}


def tune_config(lake: dict, out: Path) -> Path:
    train = {"table": str(lake["examples"]), "train_start": DAYS[0], "train_end": DAYS[1], "validation_date": DAYS[2], "spec": lake["spec"], "epochs": 2, "max_steps_per_epoch": 3,
             "batch_size": 64, "calibration": "none", "model_params": {"expert_hidden": [8], "tower_hidden": [8]},
             "workers": 1}
    search = {"lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
              "model_params.shared_experts": {"type": "int", "low": 1, "high": 2},
              "model_params.tower_hidden": {"type": "categorical", "choices": [[8], [16, 8]]},
              "weighting": {"type": "categorical", "choices": ["static", "dwa"]},
              "weighting_params.dwa.temperature": {"type": "float", "low": 0.5, "high": 4.0},
              "task_weights.share": {"type": "float", "low": 0.5, "high": 2.0}}
    path = out.parent / "tune.yaml"
    enqueue = [{"model_params.shared_experts": 2, "task_weights.share": 1.5}]   # a setting found by hand: trial 1
    path.write_text(yaml.safe_dump({"train": train, "search": search, "enqueue": enqueue, "max_task_loss": 1.0,
                                    "out": str(out), "trials": 2,
                                    "startup_trials": 2, "study_name": "test-study"}))
    return path


def run_tune(config: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobs.tune", "--config", str(config)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_tune_resumes_an_interrupted_study_and_never_reads_the_test_day(lake, tmp_path, subprocess_env):
    import optuna
    from mlflow import MlflowClient

    out = tmp_path / "study"
    config = tune_config(lake, out)
    storage = f"sqlite:///{out / 'study.db'}"

    def faulted(fault: str, folder: str) -> subprocess.CompletedProcess:
        return run_tune(config, {**subprocess_env, CALLBACKS_ENV: callbacks_spec(
            (f"{TUNE_FAULTS}:{fault}", {"folder": folder}))})

    def trials():
        return optuna.load_study(study_name="test-study", storage=storage).trials

    interrupted = faulted("InterruptInRunFolder", "0001")   # Ctrl-C inside trial 1: Optuna marks it FAIL
    assert interrupted.returncode != 0 and "trial 1 was interrupted" in interrupted.stdout, interrupted.stderr[-4000:]
    assert [t.state.name for t in trials()] == ["COMPLETE", "FAIL", "WAITING"]   # its settings queued again
    killed = faulted("ExitInRunFolder", "0002")   # the process dies inside trial 2 (the retry of 1)
    assert killed.returncode == 75, killed.stderr[-4000:]
    assert [t.state.name for t in trials()] == ["COMPLETE", "FAIL", "RUNNING"]

    resumed = run_tune(config, subprocess_env)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-4000:]
    assert "1 trials done, 1 to go" in resumed.stdout
    trials = trials()
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert all(trials[n].state.name == "FAIL" and trials[n].user_attrs["interrupted"] for n in (1, 2))
    assert trials[1].params == trials[2].params == trials[3].params
    assert (trials[2].user_attrs["retry_of"], trials[3].user_attrs["retry_of"]) == (1, 2)
    assert [t.state.name for t in trials if t.number in (0, 3)] == ["COMPLETE"] * 2  # budget: 2 finished trials
    # Trial 0 is the base settings wherever the search can propose them (the sampler picks the weighting:
    # the base's, decay, is not a choice); a searched task weight reaches the run's spec.
    assert trials[0].user_attrs["base"] and "base" not in trials[1].user_attrs and trials[1].user_attrs["enqueued"]
    assert {k: trials[3].params[k] for k in ("model_params.shared_experts", "task_weights.share")} == {
        "model_params.shared_experts": 2, "task_weights.share": 1.5}   # the retried trial 1
    assert {k: trials[0].params[k] for k in ("lr", "model_params.tower_hidden", "task_weights.share")} == {
        "lr": 1e-3, "model_params.tower_hidden": "[8]", "task_weights.share": 1.0}
    plan = json.loads((out / "trials" / "0003" / "plan.json").read_text())
    assert {t["name"]: t["weight"] for t in plan["spec"]["tasks"]}["share"] == trials[3].params["task_weights.share"]

    # The test day: named in no run's config, absent from every snapshot (and unreadable anyway).
    for folder in [out / "reference", *(out / "trials").iterdir()]:
        record = json.loads((folder / "run_record.json").read_text())
        assert record["config"]["validation_date"] == DAYS[2]
        assert record["status"] == ("running" if folder.name in ("0001", "0002") else "completed")   # interrupted
        assert TEST_DAY not in json.dumps([record["train_snapshot"], record["validation_snapshot"]])
    # Every trial in MLflow with its parameters, per-task validation metrics and run folder.
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("ple-tune").experiment_id])
    by_trial = {int(r.data.tags["trial"]): r for r in runs}
    assert sorted(by_trial) == [0, 1, 2, 3]
    done = by_trial[3]
    assert float(done.data.params["lr"]) == trials[3].params["lr"]
    assert "play.auc" in done.data.metrics and done.data.tags["run_folder"] == str(out / "trials" / "0003")
    assert done.data.metrics["objective"] == pytest.approx(trials[3].value)

    # The no-seesaw limit (loose here: every trial within it) goes through the sampler's constraints, and every
    # finished trial's worst task loss is in study.json.
    summary = json.loads((out / "study.json").read_text())
    assert summary["max_task_loss"] == 1.0
    assert all(isinstance(t["worst_task_loss"], float) for t in summary["trials"] if t["state"] == "COMPLETE")
    assert all(t.system_attrs.get("constraints") is not None for t in trials if t.state.name == "COMPLETE")
    # The best settings, as `ple train` and `ple pipeline` read them.
    from orchestration.config import PipelineConfig
    from ple_runtime.config import parse_job_config
    from training.config import TrainConfig

    best = max((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    train = parse_job_config(TrainConfig, ["--config", str(out / "best_train.yaml"), "--table", str(lake["examples"]),
                                           "--train-start", DAYS[0], "--train-end", DAYS[1],
                                           "--validation-date", DAYS[2], "--spec", lake["spec"],
                                           "--out", str(tmp_path / "again")], prog="ple train")
    assert train.lr == best.params["lr"] and train.weighting == best.params["weighting"]
    assert train.model_params["shared_experts"] == best.params["model_params.shared_experts"]
    assert train.model_params["expert_hidden"] == [8]        # the base's unsearched setting is kept
    pipeline = parse_job_config(PipelineConfig, ["--config", str(out / "best_pipeline.yaml")], prog="ple pipeline")
    assert pipeline.lr == best.params["lr"] and pipeline.model_params["ple"] == train.model_params
    assert (pipeline.weighting, pipeline.weighting_params) == (train.weighting, train.weighting_params)
    assert pipeline.task_weights == train.task_weights == {"share": best.params["task_weights.share"]}
