"""Backfill evaluation: score one model over a range of past dates, one mapped task per date.

Trigger with parameters, e.g.
    airflow dags trigger ple_backfill_evaluation \
        --conf '{"model": "models:/ple_video/3", "start": "2026-11-01", "end": "2026-11-07"}'

Each mapped task evaluates one date on that date's historical Delta snapshot
(`ple backfill --start D --end D`), writing its rows into the backfill metrics
table; a failed date fails only its own task (and is retried). `summary` then
runs over the whole range: dates already done are skipped, failed ones are tried
once more and listed, and the metrics-over-time plot is drawn.
"""

from __future__ import annotations

import datetime as dt

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, Param, get_current_context, task
from ple_settings import MACROS, job_env, ple_command, setting

with DAG(
    dag_id="ple_backfill_evaluation",
    description="evaluate a model over past dates, one task per date",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    user_defined_macros=MACROS,
    default_args={"owner": "ple", "retries": 2, "retry_delay": dt.timedelta(minutes=2)},
    params={
        "model": Param("@production", type="string",
                       description="run folder, models:/<name>/<version>, models:/<name>@<alias> or @<alias>"),
        "start": Param(type="string", format="date", description="first date, YYYY-MM-DD"),
        "end": Param(type="string", format="date", description="last date, YYYY-MM-DD"),
        "force": Param(False, type="boolean", description="re-evaluate dates already done"),
    },
    render_template_as_native_obj=False,
    tags=["ple", "evaluation"],
) as dag:

    @task
    def dates() -> list[dict[str, str]]:
        """One environment per date of the range (validated here, before mapping)."""
        params = get_current_context()["params"]
        start, end = dt.date.fromisoformat(params["start"]), dt.date.fromisoformat(params["end"])
        if start > end:
            raise ValueError(f"start {start} is after end {end}")
        return [{"PLE_BACKFILL_DATE": (start + dt.timedelta(days=i)).isoformat()}
                for i in range((end - start).days + 1)]

    model = "{{ ple_quote(params.model) }}"
    force = "{{ '--force' if params.force else '' }}"
    evaluate_date = BashOperator.partial(
        task_id="evaluate_date",
        bash_command=ple_command("backfill", "--model", model, "--start", '"$PLE_BACKFILL_DATE"',
                                 "--end", '"$PLE_BACKFILL_DATE"', "--data-dir", setting("data_dir"), force),
        append_env=True,
        execution_timeout=dt.timedelta(hours=1),
    ).expand(env=dates())

    summary = BashOperator(
        task_id="summary",
        bash_command=ple_command("backfill", "--model", model, "--start", "{{ ple_quote(params.start) }}",
                                 "--end", "{{ ple_quote(params.end) }}", "--data-dir", setting("data_dir")),
        env=job_env(),
        append_env=True,
        trigger_rule="all_done",  # report and plot even when some dates failed
        retries=0,
    )

    evaluate_date >> summary
