"""Daily PLE pipeline: extract -> train -> evaluate -> (gate) -> publish.

For the data interval [D, D+1) (D = `ds`):

1. wait for raw day D+1 to land: late plays/shares/comments of D's impressions
   arrive in D+1's partition (attribution window up to 6 h across midnight);
2. `extract` D with spark-submit (master and options from the Airflow connection
   `ple_spark`, local[2] when it is not defined);
3. `train` with horovodrun on the examples of [D-train_days, D-2], validating on
   D-1 (never on D, which is the test day);
4. `evaluate` the new model on D, against the published one;
5. `quality_gate` (short circuit): publish only when no task got worse than the
   production model by more than the tolerance;
6. `publish`: export, check, register, move the `production` alias.

Catch-up is on: Airflow's own backfill (`airflow backfill create --dag-id ple_daily
--from-date ... --to-date ...`) rebuilds past days; every job is idempotent per day.
Settings: airflow_dags/ple_settings.py (Variables `ple_*`, env `PLE_*`, defaults).
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess

import pendulum
from airflow.exceptions import AirflowException
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.operators.python import ShortCircuitOperator
from airflow.providers.standard.sensors.filesystem import FileSensor
from airflow.sdk import DAG
from ple_settings import data_dir, job_env, ple_command, repo_path, setting, spark_jars

GATE_FAILED_EXIT_CODE = 3  # `ple publish --check-only`: the gate said no (anything else non-zero is an error)

SPARK_CONN_ID = setting("spark_conn_id", "ple_spark")
TRAIN_DAYS = int(setting("train_days", "7"))
RUN_DIR = f"{data_dir()}/runs/daily/{{{{ ds }}}}"
REPORT_DIR = f"{data_dir()}/reports/daily/{{{{ ds }}}}"

FS_CONN_ID = setting("fs_conn_id", "ple_fs")
# Local defaults so the DAG runs out of the box. Define the connections (Admin ->
# Connections, or AIRFLOW_CONN_PLE_SPARK / AIRFLOW_CONN_PLE_FS) to point the
# extract at a cluster (host = the master URL: yarn, spark://..., k8s://...).
os.environ.setdefault(f"AIRFLOW_CONN_{SPARK_CONN_ID.upper()}", '{"conn_type": "spark", "host": "local[2]"}')
os.environ.setdefault(f"AIRFLOW_CONN_{FS_CONN_ID.upper()}", '{"conn_type": "fs", "extra": {"path": "/"}}')

default_args = {
    "owner": "ple",
    "retries": int(setting("retries", "2")),
    "retry_delay": dt.timedelta(minutes=5),
    "retry_exponential_backoff": True,
}


def _gate(**context) -> bool:
    """True: publish. False: skip publishing (the gate refused). Raise: a real error."""
    command = ple_command("publish", "--check-only", "--model", f"{RUN_DIR}/model.pt",
                          "--metrics", f"{REPORT_DIR}/metrics.json")
    rendered = context["task"].render_template(command, context)
    result = subprocess.run(rendered, shell=True, capture_output=True, text=True, env={**os.environ, **job_env()})
    print(result.stdout, result.stderr)
    if result.returncode == 0:
        return True
    if result.returncode == GATE_FAILED_EXIT_CODE:
        return False
    raise AirflowException(f"quality gate check failed to run (exit {result.returncode})")


with DAG(
    dag_id="ple_daily",
    description="extract -> train (Horovod) -> evaluate -> gate -> publish, one day at a time",
    schedule="@daily",
    start_date=pendulum.parse(setting("start_date", "2026-11-01")),
    catchup=True,
    max_active_runs=1,  # runs share the vocabulary table and the production alias
    default_args=default_args,
    tags=["ple", "training"],
) as dag:
    wait_for_next_day = FileSensor(
        task_id="wait_for_next_day_raw",
        filepath=f"{data_dir()}/raw/events/dt={{{{ macros.ds_add(ds, 1) }}}}",
        fs_conn_id=FS_CONN_ID,
        poke_interval=int(setting("sensor_poke_seconds", "600")),
        timeout=int(setting("sensor_timeout_seconds", str(12 * 3600))),
        mode="reschedule",
    )

    extract = SparkSubmitOperator(
        task_id="extract",
        application=repo_path("jobs", "extract.py"),
        application_args=["--date", "{{ ds }}", "--data-dir", data_dir(), "--require-next-day"],
        conn_id=SPARK_CONN_ID,
        jars=spark_jars(),  # Delta Lake's JVM side: the driver needs it at launch
        # spark-submit starts the driver JVM, so its heap must be set here (the
        # session builder's default comes too late); 1g, spark's own, is too small.
        driver_memory=setting("spark_driver_memory", "4g"),
        name="ple-extract-{{ ds }}",
        env_vars=job_env(),
        execution_timeout=dt.timedelta(hours=2),
    )

    train = BashOperator(
        task_id="train",
        bash_command=ple_command(
            "train",
            "--table", f"{data_dir()}/lake/examples",
            "--train-start", f"{{{{ macros.ds_add(ds, -{TRAIN_DAYS}) }}}}",
            "--train-end", "{{ macros.ds_add(ds, -2) }}",
            "--validation-date", "{{ macros.ds_add(ds, -1) }}",
            "--spec", setting("spec", repo_path("conf", "video_spec.yaml")),
            "--model", setting("model", "ple"),
            "--epochs", setting("epochs", "2"),
            "--batch-size", setting("batch_size", "1024"),
            "--workers", setting("train_workers", "2"),
            "--hosts", setting("horovod_hosts", "localhost:" + setting("train_workers", "2")),
            "--launcher", "horovodrun",
            "--out", RUN_DIR,
            "--no-progress",
        ) + " --resume",  # a retried attempt continues from its last checkpoint
        env=job_env(),
        append_env=True,
        execution_timeout=dt.timedelta(hours=6),
    )

    evaluate = BashOperator(
        task_id="evaluate",
        bash_command=ple_command("evaluate", "--model", RUN_DIR, "--date", "{{ ds }}",
                                 "--data-dir", data_dir(), "--out", REPORT_DIR),
        env=job_env(),
        append_env=True,
        execution_timeout=dt.timedelta(hours=1),
    )

    quality_gate = ShortCircuitOperator(task_id="quality_gate", python_callable=_gate)

    publish = BashOperator(
        task_id="publish",
        bash_command=ple_command("publish", "--model", RUN_DIR, "--metrics", f"{REPORT_DIR}/metrics.json",
                                 "--data-dir", data_dir()),
        env=job_env(),
        append_env=True,
        execution_timeout=dt.timedelta(minutes=30),
        retries=0,  # publishing is atomic; a failure needs a look, not a retry
    )

    wait_for_next_day >> extract >> train >> evaluate >> quality_gate >> publish

