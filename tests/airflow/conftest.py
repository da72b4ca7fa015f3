"""The Airflow tests run in the Airflow environment (.venv-airflow), against a
throw-away metadata database. Environment variables must be set before Airflow
is imported, hence at module import time."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DAGS_FOLDER = REPO_ROOT / "airflow_dags"
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="ple-airflow-home-"))
# The DAGs read their settings (ple_settings.py) when they are parsed: point them
# at a throw-away data root and a tiny configuration before the DagBag loads.
PLE_DATA_DIR = Path(tempfile.mkdtemp(prefix="ple-airflow-data-"))

os.environ.update({
    "AIRFLOW_HOME": str(AIRFLOW_HOME),
    "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{AIRFLOW_HOME}/airflow.db",
    "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
})
os.environ.setdefault("PLE_VENV", str(REPO_ROOT / ".venv"))
os.environ.update({
    "PLE_DATA_DIR": str(PLE_DATA_DIR),
    "PLE_EPOCHS": "1",
    "PLE_BATCH_SIZE": "128",  # ~600 rows per worker in the tiny data set
    "PLE_TRAIN_DAYS": "3",
    "PLE_TRAIN_WORKERS": "2",
    "PLE_RETRIES": "0",
    "PLE_SENSOR_POKE_SECONDS": "5",
    "PLE_SENSOR_TIMEOUT_SECONDS": "60",
    "PLE_START_DATE": "2026-01-01",  # the tiny data set's first day
})
sys.path.insert(0, str(DAGS_FOLDER))


@pytest.fixture(scope="session", autouse=True)
def airflow_db():
    """A migrated metadata database, once per test session."""
    airflow = Path(sys.executable).with_name("airflow")
    result = subprocess.run([str(airflow), "db", "migrate"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    yield AIRFLOW_HOME


@pytest.fixture(scope="session")
def dagbag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_FOLDER))
