"""Health check of a worker's stack: `ple doctor` (Java, Spark + Delta, Petastorm,
Horovod, GPU, Airflow). Trigger it by hand after deploying to a new worker."""

from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG
from ple_settings import MACROS, ple_command

with DAG(
    dag_id="ple_doctor",
    description="check every component of the PLE pipeline's stack on a worker",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    user_defined_macros=MACROS,
    tags=["ple", "ops"],
) as dag:
    BashOperator(task_id="doctor", bash_command=ple_command("doctor"))
