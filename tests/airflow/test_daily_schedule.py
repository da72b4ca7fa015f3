"""Which day each run of `ple_daily` processes, as the scheduler creates the runs.

The runs come from the DAG's own timetable (the scheduler's side of it, after
serialization), for given instants; their templates are rendered the way Airflow
renders them for a task (`airflow tasks render`'s code path, against the metadata
database). No hand-picked logical date: the timetable picks it."""

from __future__ import annotations

import os

import pendulum
import pytest
from airflow.timetables.base import DataInterval, TimeRestriction

UTC = pendulum.UTC
PLE_DATA_DIR = os.environ["AIRFLOW_VAR_PLE_DATA_DIR"]  # the Variables conftest sets
TRAIN_DAYS = int(os.environ["AIRFLOW_VAR_PLE_TRAIN_DAYS"])


@pytest.fixture(scope="module")
def scheduler_dag(dagbag):
    """ple_daily as the scheduler sees it: serialized into the metadata database and read back."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import sync_bag_to_db
    from airflow.models.dagbag import DBDagBag
    from airflow.utils.session import create_session

    DagBundlesManager().sync_bundles_to_db()
    sync_bag_to_db(dagbag, "dags-folder", None)
    with create_session() as session:
        return DBDagBag().get_latest_version_of_dag("ple_daily", session=session)


def _scheduled_run(scheduler_dag, after: DataInterval | None):
    """The run the scheduler creates next, after the run of interval `after` (None: the first)."""
    return scheduler_dag.timetable.next_dagrun_info(
        last_automated_data_interval=after,
        restriction=TimeRestriction(earliest=scheduler_dag.start_date, latest=None, catchup=True))


def _render(dagbag, scheduler_dag, info, task_ids: list[str]) -> dict[str, dict]:
    """Create the run in the metadata database as the scheduler would, then render each task's
    templated fields as `airflow tasks render` does."""
    from airflow.cli.commands.task_command import _get_template_context, _get_ti
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType

    run_id = scheduler_dag.timetable.generate_run_id(run_type=DagRunType.SCHEDULED, run_after=info.run_after,
                                                     data_interval=info.data_interval)
    with create_session() as session:
        scheduler_dag.create_dagrun(run_id=run_id, logical_date=info.logical_date, data_interval=info.data_interval,
                                    run_after=info.run_after, run_type=DagRunType.SCHEDULED,
                                    triggered_by=DagRunTriggeredByType.TIMETABLE, state=DagRunState.QUEUED,
                                    session=session)
    rendered = {}
    sdk_dag = dagbag.get_dag("ple_daily")
    try:
        for task_id in task_ids:
            ti, _ = _get_ti(scheduler_dag.get_task(task_id), -1, logical_date_or_run_id=run_id)
            # A copy, as a worker renders: rendering writes the values onto the task, and the
            # session-wide dagbag's DAG would keep these dates for a later dag.test().
            task = sdk_dag.get_task(task_id).prepare_for_execution()
            context = _get_template_context(ti, task)
            task.render_template_fields(context)
            rendered[task_id] = {field: getattr(context["task"], field) for field in task.template_fields}
    finally:
        _delete_run(run_id)  # the metadata database is shared by the session's Airflow tests
    return rendered


def _delete_run(run_id: str) -> None:
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import delete

    with create_session() as session:
        session.execute(delete(TaskInstance).where(TaskInstance.dag_id == "ple_daily", TaskInstance.run_id == run_id))
        session.execute(delete(DagRun).where(DagRun.dag_id == "ple_daily", DagRun.run_id == run_id))


def _flag(command: str, flag: str) -> str:
    words = command.split()
    return words[words.index(flag) + 1]


def test_the_run_created_after_a_day_ends_processes_that_day(dagbag, scheduler_dag, monkeypatch):
    monkeypatch.setenv("AIRFLOW_VAR_PLE_PRECISION", "auto")   # the Variable ple_precision reaches `ple train`
    # The scheduler last ran the interval of 2026-11-03; at 2026-11-05 00:00 it creates the next run.
    previous = DataInterval(pendulum.datetime(2026, 11, 3, tz=UTC), pendulum.datetime(2026, 11, 4, tz=UTC))
    info = _scheduled_run(scheduler_dag, previous)
    assert info.data_interval == DataInterval(pendulum.datetime(2026, 11, 4, tz=UTC),
                                              pendulum.datetime(2026, 11, 5, tz=UTC))
    assert info.run_after == pendulum.datetime(2026, 11, 5, tz=UTC), "created once day D is over"

    rendered = _render(dagbag, scheduler_dag, info,
                       ["wait_for_next_day_raw", "extract", "train", "evaluate", "quality_gate", "publish"])
    day, next_day = "2026-11-04", "2026-11-05"
    assert rendered["wait_for_next_day_raw"]["filepath"] == \
        f"{PLE_DATA_DIR}/raw/events/dt={next_day}/_SUCCESS", "waits for D+1 to be COMPLETE"
    assert rendered["extract"]["application_args"] == ["--date", day, "--data-dir", PLE_DATA_DIR,
                                                       "--require-next-day"]
    train = rendered["train"]["bash_command"]
    assert _flag(train, "--train-start") == pendulum.date(2026, 11, 4).subtract(days=TRAIN_DAYS).isoformat()
    assert _flag(train, "--train-end") == "2026-11-02"
    assert _flag(train, "--validation-date") == "2026-11-03"
    assert _flag(train, "--out") == f"{PLE_DATA_DIR}/runs/daily/{day}"
    assert _flag(train, "--precision") == "auto"
    assert _flag(train, "--training-mode") == "full" and _flag(train, "--full-retrain-every-days") == "7"
    assert _flag(rendered["evaluate"]["bash_command"], "--date") == day, "tested on D, never trained on"
    assert _flag(rendered["quality_gate"]["bash_command"], "--metrics") == \
        f"{PLE_DATA_DIR}/reports/daily/{day}/metrics.json"
    assert _flag(rendered["publish"]["bash_command"], "--model") == f"{PLE_DATA_DIR}/runs/daily/{day}"


def test_first_run_and_manual_trigger(scheduler_dag):
    first = _scheduled_run(scheduler_dag, None)
    assert first.data_interval.start == scheduler_dag.start_date
    assert first.run_after == scheduler_dag.start_date.add(days=1)
    # `airflow dags trigger` in the middle of a day processes the last complete day.
    manual = scheduler_dag.timetable.infer_manual_data_interval(run_after=pendulum.datetime(2026, 11, 5, 9, 30, tz=UTC))
    assert manual == DataInterval(pendulum.datetime(2026, 11, 4, tz=UTC), pendulum.datetime(2026, 11, 5, tz=UTC))


def test_extracts_run_one_at_a_time_in_date_order(dagbag, scheduler_dag):
    extract = scheduler_dag.get_task("extract")
    assert extract.depends_on_past, "day D's extract waits for day D-1's"
    assert extract.max_active_tis_per_dag == 1, "whatever a backfill's --max-active-runs allows"
    # a refusal of the gate (exit 3) skips publishing instead of failing the run
    assert list(dagbag.get_dag("ple_daily").get_task("quality_gate").skip_on_exit_code) == [3]
