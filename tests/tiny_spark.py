"""The Spark settings of the tests' tiny days, in one place: tests/airflow/spark-conf/spark-defaults.conf
(the Airflow tests' SPARK_CONF_DIR) holds them; the tests' own SparkSession (conftest.py) and the cluster
test's spark-submit (tests/cluster) read them from there."""

from __future__ import annotations

from pathlib import Path

SPARK_DEFAULTS = Path(__file__).resolve().parent / "airflow" / "spark-conf" / "spark-defaults.conf"


def tiny_data_spark_conf() -> dict[str, str]:
    """{key: value} of the file's settings (spark-defaults.conf syntax: key, whitespace, value)."""
    settings = {}
    for line in SPARK_DEFAULTS.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, value = line.split(None, 1)
            settings[key] = value.strip()
    return settings
