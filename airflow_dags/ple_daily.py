"""Daily PLE pipeline: extract -> train -> evaluate -> (gate) -> publish, one day at a time.

Scheduling semantics (chosen on purpose; docs/PIPELINE.md):
- The timetable is an explicit data-interval one, `CronDataIntervalTimetable("0 0 * * *",
  UTC)`: the run for day D has the data interval [D 00:00, D+1 00:00) UTC, is created
  once that interval is over (at D+1 00:00), and its `data_interval_start` (= its
  logical date, `ds`) is D. Airflow 3's default for `schedule="@daily"` would instead be
  a CronTriggerTimetable, whose run at D+1 00:00 has `ds` = D+1: the day that has just
  begun.
- D's labels need the late engagement that lands in raw partition D+1, so the run first
  waits for D+1 to be complete: its `_SUCCESS` marker, written last (the raw partition
  completion contract, docs/DATA.md). In live operation that is after D+2 00:00; in a
  backfill of past days it is there at once.
- Day D's extract reads the examples of the days before D (history features) and grows
  the shared vocabulary, so extracts run one at a time and in date order: the extract
  task depends on the previous run's extract (`depends_on_past`) and at most one extract
  of this DAG runs at once (`max_active_tis_per_dag=1`), whatever a backfill's
  `--max-active-runs` says; the extract job itself refuses a day whose previous day is
  missing from the lake. Past days are rebuilt with Airflow's own backfill:

      airflow backfill create --dag-id ple_daily --from-date 2026-01-01 --to-date 2026-01-31 --max-active-runs 1 --reprocess-behavior failed

Steps for the run of day D:
1. `wait_for_next_day_raw`: raw/events/dt=D+1/_SUCCESS exists;
2. `extract` D with spark-submit (master and options from the connection `ple_spark`); a day
   that breaches its health checks (exit 4, docs/DATA.md) fails the task at once, without
   retries, and nothing downstream runs;
3. `train` with horovodrun on the examples of [D-train_days, D-2], validating on D-1
   (never on D, the test day); a retried attempt resumes from its last checkpoint; with
   `ple_training_mode` incremental, a warm start from the production model on the days after
   the ones it trained on, or a full retrain when due or when that model is not strictly
   older than the day (backfills; training/incremental.py);
4. `evaluate` the new model on D, against the published one;
5. `quality_gate`: `ple publish --check-only`; exit 3 (the gate refused) skips publishing;
6. `publish`: export, check, register, move the `production` alias.

Settings: airflow_dags/ple_settings.py (Variables `ple_*`, rendered when a task runs).
Connections, defined at deployment (README): `ple_spark` (type spark) and `ple_fs`
(type fs, for the sensor).
"""

from __future__ import annotations

import datetime as dt

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.sensors.filesystem import FileSensor
from airflow.sdk import DAG, CronDataIntervalTimetable
from ple_operators import SparkSubmitFailFastOperator
from ple_settings import (MACROS, code_path, data_path, job_env, model_settings, ple_command, setting, spark_env,
                          spark_jars, var)

GATE_REFUSED_EXIT_CODE = 3  # `ple publish --check-only`: the gate said no (other non-zero exits are errors)
DAY_HEALTH_EXIT_CODE = 4    # `extract`: the day breached its health checks: fail at once, nothing downstream runs

DAY = "{{ data_interval_start | ds }}"          # D: the day this run extracts and tests on
NEXT_DAY = "{{ data_interval_end | ds }}"       # D+1: its raw partition holds D's late engagement
RUN_DIR = data_path("runs", "daily", DAY)
REPORT_DIR = data_path("reports", "daily", DAY)
# the gate's tolerances and floors (empty setting: the checkout's conf/publish.yaml)
PUBLISH_CONFIG = "{{ " + var("publish_config") + " or (" + var("code_dir") + " ~ '/conf/publish.yaml') }}"


def day_offset(days: str) -> str:
    """D + days (a Jinja expression of an int) as YYYY-MM-DD."""
    return "{{ macros.ds_add(data_interval_start | ds, " + days + ") }}"


with DAG(
    dag_id="ple_daily",
    description="extract -> train (Horovod) -> evaluate -> gate -> publish, one day at a time",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    # Past days run through `airflow backfill create` (above), on purpose, not by deploying.
    catchup=False,
    max_active_runs=1,  # scheduled runs share the vocabulary table and the production alias
    user_defined_macros=MACROS,
    default_args={"owner": "ple", "retries": 2, "retry_delay": dt.timedelta(minutes=5),
                  "retry_exponential_backoff": True},
    tags=["ple", "training"],
) as dag:
    wait_for_next_day = FileSensor(
        task_id="wait_for_next_day_raw",
        filepath=data_path("raw", "events", f"dt={NEXT_DAY}", "_SUCCESS"),
        fs_conn_id="ple_fs",
        poke_interval=600,
        timeout=36 * 3600,  # live: D+1 completes after D+2 00:00, 24 h after the run is created
        mode="reschedule",
    )

    extract = SparkSubmitFailFastOperator(
        task_id="extract",
        fail_without_retry_on=DAY_HEALTH_EXIT_CODE,  # retrying cannot help; override: --accept-day-health
        application=code_path("jobs", "extract.py"),
        application_args=["--date", DAY, "--data-dir", setting("data_dir"), "--require-next-day"],
        conn_id="ple_spark",
        jars=spark_jars(),  # Delta Lake's JVM side: the driver needs it at launch
        # The driver JVM starts before the job's own session defaults apply: its heap is set here.
        conf={"spark.driver.memory": setting("spark_driver_memory")},
        name=f"ple-extract-{DAY}",
        env_vars=spark_env(),
        depends_on_past=True,         # day D's history features need day D-1 extracted
        max_active_tis_per_dag=1,     # one extract at a time, even in a backfill with many runs
        execution_timeout=dt.timedelta(hours=2),
    )

    workers = var("train_workers")
    train = BashOperator(
        task_id="train",
        bash_command=ple_command(
            "train",
            "--table", data_path("lake", "examples"),
            "--train-start", day_offset(f"-({var('train_days')} | int)"),
            "--train-end", day_offset("-2"),
            "--validation-date", day_offset("-1"),
            "--spec", "{{ " + var("spec") + " or (" + var("code_dir") + " ~ '/conf/video_spec.yaml') }}",
            model_settings(),
            "--precision", setting("precision"),
            # incremental: warm start from production on the days after its own; full retrain when due or unsafe
            "--training-mode", setting("training_mode"),
            "--full-retrain-every-days", setting("full_retrain_every_days"),
            "--workers", "{{ " + workers + " }}",
            "--hosts", "{{ " + var("horovod_hosts") + " or ('localhost:' ~ " + workers + ") }}",
            "--launcher", "horovodrun",
            "--out", RUN_DIR,
            "--no-progress",
            "--resume",  # a retried attempt continues from its last checkpoint
        ),
        env=job_env(),
        append_env=True,
        execution_timeout=dt.timedelta(hours=6),
    )

    evaluate = BashOperator(
        task_id="evaluate",
        bash_command=ple_command("evaluate", "--model", RUN_DIR, "--date", DAY, "--data-dir", setting("data_dir"),
                                 "--out", REPORT_DIR),
        env=job_env(),
        append_env=True,
        execution_timeout=dt.timedelta(hours=1),
    )

    quality_gate = BashOperator(
        task_id="quality_gate",
        bash_command=ple_command("publish", "--check-only", "--model", RUN_DIR, "--config", PUBLISH_CONFIG,
                                 "--metrics", f"{REPORT_DIR}/metrics.json", "--data-dir", setting("data_dir")),
        skip_on_exit_code=GATE_REFUSED_EXIT_CODE,  # refused: publish is skipped, the run still succeeds
        env=job_env(),
        append_env=True,
        execution_timeout=dt.timedelta(minutes=30),
    )

    publish = BashOperator(
        task_id="publish",
        bash_command=ple_command("publish", "--model", RUN_DIR, "--config", PUBLISH_CONFIG,
                                 "--metrics", f"{REPORT_DIR}/metrics.json", "--data-dir", setting("data_dir")),
        env=job_env(),
        append_env=True,
        execution_timeout=dt.timedelta(minutes=30),
        retries=0,  # publishing is atomic; a failure needs a look, not a retry
    )

    wait_for_next_day >> extract >> train >> evaluate >> quality_gate >> publish
