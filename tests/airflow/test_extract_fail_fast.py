"""The daily DAG's extract task: a day-health breach (exit 4) fails it at once, without the
retries other failures get (airflow_dags/ple_operators.py), through the real SparkSubmitHook."""

from __future__ import annotations

import os
import stat

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException


def _spark_submit_exiting(tmp_path, code: int) -> None:
    """A `spark-submit` first on PATH that exits with `code` (the job's status, as the real one passes it on)."""
    script = tmp_path / "spark-submit"
    script.write_text(f"#!/bin/sh\necho 'extract stopped: day health of 2026-01-04 breached' >&2\nexit {code}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    os.environ["PATH"] = f"{tmp_path}{os.pathsep}{os.environ['PATH']}"


@pytest.mark.parametrize("code, retried", [(4, False), (1, True)])
def test_a_day_health_breach_is_not_retried(tmp_path, monkeypatch, dagbag, code, retried):
    monkeypatch.setenv("PATH", os.environ["PATH"])  # restored after the test
    _spark_submit_exiting(tmp_path, code)
    extract = dagbag.get_dag("ple_daily").get_task("extract")
    assert extract.fail_without_retry_on == 4 and extract.retries > 0
    operator = type(extract)(task_id="extract", application="jobs/extract.py", conn_id="ple_spark",
                             fail_without_retry_on=extract.fail_without_retry_on)
    with pytest.raises(AirflowException) as raised:
        operator.execute({})
    assert isinstance(raised.value, AirflowFailException) is not retried
    if not retried:
        assert "exited 4: a verdict on the data, not retried" in str(raised.value)
