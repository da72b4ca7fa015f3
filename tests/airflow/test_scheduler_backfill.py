"""The pipeline's DAGs end to end against the real jobs (spark-submit with local Spark + Delta,
horovodrun with 2 Gloo workers, evaluation, the quality gate, the MLflow registry):

- `airflow backfill create` under Airflow's real scheduler (LocalExecutor), DAG processor and
  API server: two consecutive days run through the whole daily DAG, extracted in date order
  (each day's history holds the days before it, its labels the next day's late engagement)
  even though the backfill allows both runs at once; trained, evaluated and published. The services are stopped at the end, and nothing
  they started is left running.
- the backfill-evaluation DAG (`dag.test()`) over past dates of the same lake, with the model
  the backfill trained: one mapped task per date, then the summary.

One lake for both: generating and extracting a lake, and training on it, is most of the time
these tests take."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import pytest
from airflow.utils.state import DagRunState, TaskInstanceState

from tests.airflow.pipeline_env import main_env_python, ple
from tests.airflow.services import AirflowServices

pytestmark = pytest.mark.slow

START, HISTORY_END = "2026-01-01", "2026-01-03"
BACKFILL = ["2026-01-04", "2026-01-05"]  # the sensor of 01-05 waits for 01-06: 6 days of logs
TIMEOUT_S = 1800
DAGS_FOLDER = Path(__file__).resolve().parents[2] / "airflow_dags"

QUALITY_BY_DAY = """
import json, sys
import pyarrow.parquet as pq
from ple_runtime.snapshot import resolve_snapshot
out = {}
for day in sys.argv[2:]:
    snapshot = resolve_snapshot(sys.argv[1], {"dt": day})
    table = pq.read_table(snapshot.paths, columns=["metric", "value"]).to_pydict()
    out[day] = dict(zip(table["metric"], table["value"]))
print(json.dumps(out))
"""

COMMITS_BY_DAY = """
import json, sys
from pathlib import Path
first = {}
for commit in sorted(Path(sys.argv[1], "_delta_log").glob("*.json")):
    for line in commit.read_text().splitlines():
        add = json.loads(line).get("add")
        if add and "dt" in add.get("partitionValues", {}):
            first.setdefault(add["partitionValues"]["dt"], int(commit.stem))
print(json.dumps(first))
"""


@pytest.fixture(scope="module")
def lakes(tmp_path_factory):
    """Raw logs of 6 days, days 1-3 extracted (earlier runs' work). That the DAG's day-by-day
    extracts write what one `ple extract --start --end` writes is tests/extraction/test_extract_multiday.py's;
    here, the order and the inputs each day saw (below)."""
    root = tmp_path_factory.mktemp("scheduler")
    data = root / "data"
    ple("generate", "--data-dir", str(data), "--start-date", START, "--days", "6", "--users", "60", "--items", "40",
        "--impressions-per-day", "600", "--seed", "11")
    ple("extract", "--start", START, "--end", HISTORY_END, "--data-dir", str(data))
    return {"root": root, "data": data}


@pytest.fixture(scope="module")
def services(lakes):
    env = {"AIRFLOW_VAR_PLE_DATA_DIR": str(lakes["data"])}
    airflow = AirflowServices(lakes["root"] / "airflow-home", DAGS_FOLDER, env)
    airflow.start(scheduler=False)   # started by the test once its backfill exists (create_backfill)
    try:
        yield airflow
    finally:
        survivors = airflow.stop()
        assert survivors == [], f"processes left behind: {survivors}"


def _wait_for_backfill(airflow: AirflowServices) -> list[dict]:
    deadline = time.time() + TIMEOUT_S
    while time.time() < deadline:
        airflow.check_alive()
        runs = [r for r in airflow.dag_runs("ple_daily") if r["run_type"] == "backfill"]
        if len(runs) == len(BACKFILL) and all(r["state"] in ("success", "failed") for r in runs):
            return runs
        time.sleep(5)
    raise TimeoutError(f"backfill runs not finished after {TIMEOUT_S} s: {airflow.dag_runs('ple_daily')}; "
                       f"tasks {airflow.task_states('ple_daily')}\n{airflow.log_tails()}")


def _task_log(airflow: AirflowServices, run_id: str, task_id: str) -> str:
    logs = sorted(Path(airflow.home, "logs", "dag_id=ple_daily", f"run_id={run_id}", f"task_id={task_id}")
                  .glob("attempt=*.log"))
    return logs[-1].read_text()[-4000:] if logs else "(no log)"


def test_backfill_under_the_real_scheduler_extracts_days_in_order(services, lakes):
    airflow = services
    airflow.wait_for_dag("ple_daily")
    airflow.cli("dags", "unpause", "ple_daily")
    # --max-active-runs 2: the DAG itself must keep the extracts sequential and ordered.
    airflow.create_backfill("ple_daily", "--from-date", BACKFILL[0], "--to-date", BACKFILL[-1],
                            "--max-active-runs", "2", "--reprocess-behavior", "failed")
    airflow.start_scheduler()
    runs = _wait_for_backfill(airflow)
    states = airflow.task_states("ple_daily")
    failed = {run["run_id"]: {t: s for (r, t), s in states.items() if r == run["run_id"]} for run in runs
              if run["state"] != "success"}
    assert not failed, f"{failed}\n" + "\n".join(
        _task_log(airflow, run_id, task) for run_id, tasks in failed.items() for task, s in tasks.items()
        if s == "failed")

    # The extracts ran one after the other, in date order.
    extracts = airflow.query("SELECT ti.start_date, ti.end_date, ti.try_number, ti.state, dr.logical_date "
                             "FROM task_instance ti JOIN dag_run dr ON ti.dag_id = dr.dag_id AND ti.run_id = dr.run_id "
                             "WHERE ti.dag_id = 'ple_daily' AND ti.task_id = 'extract' AND dr.run_type = 'backfill' "
                             "ORDER BY dr.logical_date")
    assert [e["logical_date"][:10] for e in extracts] == BACKFILL
    assert extracts[0]["end_date"] <= extracts[1]["start_date"], [dict(e) for e in extracts]
    # Each on its first try: an extract started out of order fails the lake's gap check, and a retry
    # that then succeeded would hide it.
    assert [(e["state"], e["try_number"]) for e in extracts] == [("success", 1)] * len(BACKFILL), \
        [dict(e) for e in extracts]
    first_commit = main_env_python(COMMITS_BY_DAY, str(lakes["data"] / "lake" / "data_quality"))
    assert first_commit[BACKFILL[0]] < first_commit[BACKFILL[1]]

    # What each day's extract saw: the history of every earlier day (day 5's window holds day 4: the
    # order was right), its next day's raw partition (late engagement), and examples for its impressions.
    quality = main_env_python(QUALITY_BY_DAY, str(lakes["data"] / "lake" / "data_quality"), *BACKFILL)
    for index, day in enumerate(BACKFILL):
        figures = quality[day]
        assert figures["history_days_available"] == 3 + index, (day, figures)
        assert figures["next_partition_read"] == 1 and figures["next_partition_complete"] == 1, (day, figures)
        assert figures["examples"] > 400 and figures["day_health:breached"] == 0, (day, figures)

    # Each run trained on [D-3, D-2] with 2 Horovod workers, validated on D-1 and tested on D.
    for day in BACKFILL:
        record = json.loads((lakes["data"] / "runs" / "daily" / day / "run_record.json").read_text())
        shifted = [(dt.date.fromisoformat(day) + dt.timedelta(days=n)).isoformat() for n in (-3, -2, -1)]
        assert record["world_size"] == 2, "training ran with 2 Horovod workers"
        assert record["train_snapshot"]["partition_filter"]["dt"] == {"min": shifted[0], "max": shifted[1]}
        assert record["validation_snapshot"]["partition_filter"]["dt"] == shifted[2]
        metrics = json.loads((lakes["data"] / "reports" / "daily" / day / "metrics.json").read_text())
        assert metrics["snapshot"]["date"] == day
    # The first backfilled day's model was registered as version 1 (nothing to beat yet).
    published = {json.loads(p.read_text())["version"]: json.loads(p.read_text())
                 for p in (lakes["data"] / "reports" / "publish").glob("*-published.json")}
    first_run = lakes["data"] / "runs" / "daily" / BACKFILL[0]
    assert "1" in published and published["1"]["candidate"]["model_file"].startswith(str(first_run)), published

    # Unpausing let the scheduler create the live run too: exactly the one for the last complete
    # day before now (catch-up is off: no run for the days between), still waiting for its next
    # day's raw marker (the generated logs end long before).
    scheduled = [r for r in airflow.dag_runs("ple_daily") if r["run_type"] == "scheduled"]
    today = dt.datetime.now(dt.timezone.utc).date()
    last_complete = {(today - dt.timedelta(days=n)).isoformat() for n in (1, 2)}  # 2: the test began before 00:00
    assert len(scheduled) == 1, airflow.dag_runs("ple_daily")
    assert scheduled[0]["logical_date"][:10] in last_complete and scheduled[0]["state"] in ("queued", "running"), \
        scheduled


def _states(run) -> dict[str, str]:
    return {ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]": ti.state
            for ti in run.get_task_instances()}


def test_backfill_evaluation_dag_maps_one_task_per_date(dagbag, lakes, monkeypatch):
    run_dir = lakes["data"] / "runs" / "daily" / BACKFILL[-1]
    if not (run_dir / "model.pt").is_file():
        pytest.fail("needs the model trained by the scheduler test (run the module, not this test alone)")
    monkeypatch.setenv("AIRFLOW_VAR_PLE_DATA_DIR", str(lakes["data"]))
    dates = ["2026-01-02", "2026-01-03"]   # past days of the lake, evaluated on their own snapshots
    run = dagbag.get_dag("ple_backfill_evaluation").test(
        run_conf={"model": str(run_dir), "start": dates[0], "end": dates[-1]})
    states = _states(run)
    assert run.state == DagRunState.SUCCESS, states
    mapped = sorted(k for k in states if k.startswith("evaluate_date["))
    assert mapped == [f"evaluate_date[{i}]" for i in range(len(dates))], states
    assert states["summary"] == TaskInstanceState.SUCCESS

    summaries = list((lakes["data"] / "reports" / "backfill").glob("*/backfill.json"))
    assert len(summaries) == 1, "the summary task wrote the metrics-over-time report"
    summary = json.loads(summaries[0].read_text())
    assert sorted(summary["skipped"]) == dates, "the mapped tasks had done every date"
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
        str(lakes["data"] / "lake" / "backfill_metrics"))
    assert [tuple(r) for r in rows] == sorted(
        (day, task) for day in dates for task in ("comment", "play", "share", "watch_ratio"))
