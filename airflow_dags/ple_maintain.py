"""Weekly lake maintenance: `ple maintain` compacts the lake's Delta tables (OPTIMIZE) and
VACUUMs them, keeping the files of every version a registered model pins (docs/PIPELINE.md,
"Lake maintenance"). Sundays 03:00 UTC, away from the daily run's extract (after D+1 00:00).

Settings (ple_settings.py, Variables `ple_*`): maintain_retention_hours (default 168, Delta's
own minimum), maintain_target_file_mb (128). A VACUUM and an extract of the same table at once
is safe in Delta (VACUUM only deletes files no version newer than the retention references),
but a compaction may conflict with a concurrent re-extract of the same partition: the
maintenance task then fails and its retry runs it again.
"""

from __future__ import annotations

import datetime as dt

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG
from ple_settings import MACROS, job_env, ple_command, setting

with DAG(
    dag_id="ple_maintain",
    description="compact and vacuum the lake's Delta tables, keeping the versions registered models pin",
    schedule="0 3 * * 0",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    user_defined_macros=MACROS,
    default_args={"owner": "ple", "retries": 1, "retry_delay": dt.timedelta(minutes=30)},
    tags=["ple", "ops"],
) as dag:
    BashOperator(
        task_id="maintain",
        bash_command=ple_command("maintain", "--data-dir", setting("data_dir"),
                                 "--retention-hours", setting("maintain_retention_hours"),
                                 "--target-file-mb", setting("maintain_target_file_mb")),
        env=job_env(),
        append_env=True,
        execution_timeout=dt.timedelta(hours=6),
    )
