"""The daily and backfill-evaluation DAGs run end to end with `dag.test()` on a
tiny data set, against the real jobs: spark-submit (local Spark + Delta),
horovodrun with 2 Gloo workers, evaluation, the quality gate and the MLflow
registry. The jobs run in the pipeline's environment (.venv), as in production."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from airflow.utils.state import DagRunState, TaskInstanceState
from tests.airflow.pipeline_env import main_env_python, ple

pytestmark = pytest.mark.slow

# 5 days of logs: days 1-3 are history (extracted up front, as earlier DAG runs
# would have), the DAG runs for day 4 (training on days 1-2, one file each, so
# each of the 2 workers gets one; validating on day 3), and day 5 is the "next
# day" its sensor waits for.
START, HISTORY_END, RUN_DAY = "2026-01-01", "2026-01-03", "2026-01-04"
HISTORY = ["2026-01-01", "2026-01-02", "2026-01-03"]


@pytest.fixture(scope="module")
def tiny_lake():
    data_dir = os.environ["AIRFLOW_VAR_PLE_DATA_DIR"]  # the DAGs' data root (conftest)
    ple("generate", "--data-dir", data_dir, "--start-date", START, "--days", "5", "--users", "60",
         "--items", "40", "--impressions-per-day", "600", "--seed", "3")
    ple("extract", "--start", START, "--end", HISTORY_END, "--data-dir", data_dir)
    return Path(data_dir)


def _states(run) -> dict[str, str]:
    return {ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]": ti.state
            for ti in run.get_task_instances()}


def test_daily_dag_extracts_trains_evaluates_and_publishes(dagbag, tiny_lake):
    import pendulum

    dag = dagbag.get_dag("ple_daily")
    # A run triggered during day D+1 processes day D, the last complete data interval
    # (the DAG's timetable; test_daily_schedule.py checks the scheduled runs).
    run = dag.test(logical_date=pendulum.parse(RUN_DAY).add(days=1, hours=9))
    assert run.data_interval_start == pendulum.parse(RUN_DAY)
    states = _states(run)
    assert run.state == DagRunState.SUCCESS, states
    assert states["publish"] == TaskInstanceState.SUCCESS, states  # first model: nothing to beat

    assert (tiny_lake / "lake" / "examples" / f"dt={RUN_DAY}").is_dir(), "extract wrote the day's partition"
    run_dir = tiny_lake / "runs" / "daily" / RUN_DAY
    record = json.loads((run_dir / "run_record.json").read_text())
    assert record["world_size"] == 2, "training ran with 2 Horovod workers"
    # trained on [D-3, D-2] (train_days 3), validated on D-1, tested on D
    assert record["train_snapshot"]["partition_filter"]["dt"] == {"min": "2026-01-01", "max": "2026-01-02"}
    assert record["validation_snapshot"]["partition_filter"]["dt"] == "2026-01-03"
    metrics = json.loads((tiny_lake / "reports" / "daily" / RUN_DAY / "metrics.json").read_text())
    assert metrics["snapshot"]["date"] == RUN_DAY
    published = list((tiny_lake / "reports" / "publish").glob("*-published.json"))
    assert len(published) == 1, "publish registered exactly one version"
    publish_record = json.loads(published[0].read_text())
    assert publish_record["version"] == "1" and publish_record["candidate"]["model_file"].startswith(str(run_dir))


def test_backfill_evaluation_dag_maps_one_task_per_date(dagbag, tiny_lake):
    run_dir = tiny_lake / "runs" / "daily" / RUN_DAY
    if not (run_dir / "model.pt").is_file():
        pytest.fail("needs the model trained by the daily DAG test (run the module, not this test alone)")
    dag = dagbag.get_dag("ple_backfill_evaluation")
    run = dag.test(run_conf={"model": str(run_dir), "start": START, "end": HISTORY_END})
    states = _states(run)
    assert run.state == DagRunState.SUCCESS, states
    mapped = sorted(k for k in states if k.startswith("evaluate_date["))
    assert mapped == [f"evaluate_date[{i}]" for i in range(len(HISTORY))], states
    assert states["summary"] == TaskInstanceState.SUCCESS

    summaries = list((tiny_lake / "reports" / "backfill").glob("*/backfill.json"))
    assert len(summaries) == 1, "the summary task wrote the metrics-over-time report"
    summary = json.loads(summaries[0].read_text())
    assert sorted(summary["skipped"]) == HISTORY, "the mapped tasks had done every date"
    assert not summary["failed"]
    assert (summaries[0].parent / "backfill.png").is_file()

    # One row per (date, task) in the backfill metrics Delta table, read with the
    # pipeline's own snapshot reader (this Airflow environment has no Delta reader).
    rows = main_env_python(
        "import json, sys, pyarrow.parquet as pq\n"
        "from ple_runtime.snapshot import resolve_snapshot\n"
        "snapshot = resolve_snapshot(sys.argv[1])\n"
        "pairs = [(d, t) for p in snapshot.paths for d, t in zip(*pq.read_table(p, columns=['dt', 'task']).to_pydict().values())]\n"
        "print(json.dumps(sorted(pairs)))",
        str(tiny_lake / "lake" / "backfill_metrics"))
    assert [tuple(r) for r in rows] == sorted(
        (day, task) for day in HISTORY for task in ("comment", "play", "share", "watch_ratio"))


