"""The daily DAG on the day it has to wait: its sensor keeps poking (rescheduling) while raw
D+1/_SUCCESS is missing, and the run goes on once the marker appears. Only the sensor runs
(`dag.test(mark_success_pattern=...)` marks the job tasks done without running them: they are
tested end to end in test_scheduler_backfill.py)."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
from airflow.utils.state import DagRunState, TaskInstanceState

pytestmark = pytest.mark.slow

SENSOR = "wait_for_next_day_raw"
DAY, NEXT_DAY = "2026-03-10", "2026-03-11"   # no other test's runs or raw partitions are near these days


def test_the_sensor_waits_while_the_next_day_is_incomplete_then_the_run_proceeds(dagbag, tmp_path, monkeypatch):
    import pendulum
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.taskreschedule import TaskReschedule
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    dag = dagbag.get_dag("ple_daily")
    sensor = dag.get_task(SENSOR)
    assert sensor.mode == "reschedule"              # a waiting sensor frees its worker slot between pokes
    sensor.poke_interval = 1                         # the DAG's 600 s, shortened for the test
    # its own data root: a raw/ folder in the shared one would be read by the other tests
    monkeypatch.setenv("AIRFLOW_VAR_PLE_DATA_DIR", str(tmp_path / "data"))
    marker = tmp_path / "data" / "raw" / "events" / f"dt={NEXT_DAY}" / "_SUCCESS"
    marker.parent.mkdir(parents=True, exist_ok=True)   # the partition is being written: no marker yet
    sensor.timeout = 600                             # a sensor that never sees the marker fails the test
    written_at: list[float] = []
    started = pendulum.now("UTC")

    def reschedules() -> int:
        with create_session() as session:
            return session.scalar(select(func.count()).select_from(TaskReschedule)
                                  .join(TaskInstance, TaskReschedule.ti_id == TaskInstance.id)
                                  .where(TaskInstance.dag_id == dag.dag_id, TaskInstance.task_id == SENSOR,
                                         TaskReschedule.start_date >= started))

    def write_marker_after_two_pokes() -> None:
        while not stop.is_set():
            if reschedules() >= 2:   # the sensor has poked, found nothing and rescheduled, twice
                marker.touch()
                written_at.append(time.time())
                return
            stop.wait(0.5)

    stop = threading.Event()
    writer = threading.Thread(target=write_marker_after_two_pokes, daemon=True)
    writer.start()
    try:
        run = dag.test(logical_date=pendulum.parse(DAY).add(days=1, hours=9),
                       mark_success_pattern=f"(?!{SENSOR}$).*")
    finally:
        stop.set()
        writer.join(timeout=10)
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == DagRunState.SUCCESS, states
    assert set(states.values()) == {TaskInstanceState.SUCCESS}, states
    sensor_ti = next(ti for ti in run.get_task_instances() if ti.task_id == SENSOR)
    with create_session() as session:
        waits = session.scalars(select(TaskReschedule).where(TaskReschedule.ti_id == sensor_ti.id)).all()
    # Poked and rescheduled at least twice while the marker was missing, and finished only after it appeared.
    assert len(waits) >= 2, f"the sensor rescheduled {len(waits)} times"
    assert written_at and all(w.start_date.timestamp() < written_at[0] for w in waits)
    assert sensor_ti.end_date.timestamp() >= written_at[0]


# In the pipeline's environment: a one-day examples table, a good model published as v1
# @production, a worse (untrained) model as the run's model and its `ple evaluate` report:
# what extract, train and evaluate would have left for the day.
_GATE_SETUP = """
import json, sys
from pathlib import Path
sys.path.insert(0, "tests")
from evaluation_tables import day_frame, problem, train_tiny, write_days
from jobs.evaluate import main as evaluate
from jobs.publish import main as publish
from ple_runtime.spark import get_spark

data, day = Path(sys.argv[1]), sys.argv[2]
table = str(data / "lake" / "examples")
write_days(get_spark("ple-test-gate"), table, [day_frame(problem()[1], 0, day)])
good = train_tiny("ple", data / "models" / "good", seed=0)
run_dir = train_tiny("ple", data / "runs" / "daily" / day, steps=0, seed=2).parent
assert publish(["--model", str(good), "--date", day, "--data-dir", str(data), "--onnx-exporter", "torchscript"]) == 0
assert evaluate(["--model", str(run_dir), "--date", day, "--data-dir", str(data),
                 "--out", str(data / "reports" / "daily" / day)]) == 0
print(json.dumps({"ok": True}))
"""
_REGISTRY = """
import json, sys
from model_registry.registry import list_versions, registry_settings, version_by_alias
settings = registry_settings(sys.argv[1])
print(json.dumps({"alias": str(version_by_alias(settings).version),
                  "versions": sorted(str(v.version) for v in list_versions(settings))}))
"""


def _main_env_python(code: str, *args: str) -> dict:
    """Python in the pipeline's environment (.venv) from the repository root; the JSON of its last line."""
    import subprocess

    python = Path(os.environ["PLE_VENV"], "bin", "python")
    result = subprocess.run([str(python), "-c", code, *args], capture_output=True, text=True, timeout=900,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_gate_refusal_skips_publish_and_leaves_the_alias(dagbag, tmp_path, monkeypatch):
    import pendulum

    day = "2026-03-20"
    data = tmp_path / "data"   # its own data root: the registry and lake of other tests are not touched
    monkeypatch.setenv("AIRFLOW_VAR_PLE_DATA_DIR", str(data))
    _main_env_python(_GATE_SETUP, str(data), day)
    dag = dagbag.get_dag("ple_daily")
    run = dag.test(logical_date=pendulum.parse(day).add(days=1, hours=9),
                   mark_success_pattern="wait_for_next_day_raw|extract|train|evaluate")
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == DagRunState.SUCCESS, states
    assert states["quality_gate"] == TaskInstanceState.SKIPPED, states   # exit 3: the gate refused
    assert states["publish"] == TaskInstanceState.SKIPPED, states
    refusals = list((data / "reports" / "publish").glob("publish-*-gate_failed.json"))
    assert len(refusals) == 1 and json.loads(refusals[0].read_text())["check_only"] is True
    assert _main_env_python(_REGISTRY, str(data)) == {"alias": "1", "versions": ["1"]}
