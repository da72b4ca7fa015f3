"""The daily DAG on the day it has to wait: its sensor keeps poking (rescheduling) while raw
D+1/_SUCCESS is missing, and the run goes on once the marker appears. Only the sensor runs
(`dag.test(mark_success_pattern=...)` marks the job tasks done without running them: they are
tested end to end in test_pipeline_dags.py)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from airflow.utils.state import DagRunState, TaskInstanceState

pytestmark = pytest.mark.slow

SENSOR = "wait_for_next_day_raw"
DAY, NEXT_DAY = "2026-03-10", "2026-03-11"   # no other test's runs or raw partitions are near these days


def test_the_sensor_waits_while_the_next_day_is_incomplete_then_the_run_proceeds(dagbag):
    import pendulum
    from airflow.models.taskreschedule import TaskReschedule
    from airflow.utils.session import create_session
    from sqlalchemy import select

    dag = dagbag.get_dag("ple_daily")
    sensor = dag.get_task(SENSOR)
    assert sensor.mode == "reschedule"              # a waiting sensor frees its worker slot between pokes
    sensor.poke_interval = 1                         # the DAG's 600 s, shortened for the test
    marker = Path(os.environ["AIRFLOW_VAR_PLE_DATA_DIR"], "raw", "events", f"dt={NEXT_DAY}", "_SUCCESS")
    marker.parent.mkdir(parents=True, exist_ok=True)   # the partition is being written: no marker yet
    written_at: list[float] = []

    def write_marker() -> None:
        marker.touch()
        written_at.append(time.time())

    timer = threading.Timer(6.0, write_marker)
    timer.start()
    try:
        run = dag.test(logical_date=pendulum.parse(DAY).add(days=1, hours=9),
                       mark_success_pattern=f"(?!{SENSOR}$).*")
    finally:
        timer.cancel()
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
