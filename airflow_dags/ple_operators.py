"""Operators the DAGs wire in: thin subclasses that map a job's exit status to Airflow's task outcome."""

from __future__ import annotations

import re

from airflow.sdk.exceptions import AirflowException, AirflowFailException
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator


class SparkSubmitFailFastOperator(SparkSubmitOperator):
    """spark-submit whose exit with `fail_without_retry_on` fails the task at once, without its
    retries: the job's verdict on the data (e.g. extract's day-health breach, exit 4), which a
    retry would only repeat. Other failures keep the task's retries."""

    def __init__(self, *, fail_without_retry_on: int, **kwargs):
        super().__init__(**kwargs)
        self.fail_without_retry_on = fail_without_retry_on

    def execute(self, context):
        try:
            return super().execute(context)
        except AirflowException as error:
            # the hook reports the exit status only in its message ("... Error code is: N.")
            found = re.search(r"Error code is: (\d+)", str(error))
            if found and int(found.group(1)) == self.fail_without_retry_on:
                raise AirflowFailException(f"{self.task_id} exited {self.fail_without_retry_on}: a verdict on the "
                                           "data, not retried; its log says what breached and how to override it"
                                           ) from error
            raise
