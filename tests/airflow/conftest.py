"""The Airflow tests run in the Airflow environment (.venv-airflow), against a
throw-away metadata database. Environment variables must be set before Airflow
is imported, hence at module import time."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DAGS_FOLDER = REPO_ROOT / "airflow_dags"
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="ple-airflow-home-"))
# A throw-away data root for the jobs the DAGs run.
PLE_DATA_DIR = Path(tempfile.mkdtemp(prefix="ple-airflow-data-"))

os.environ.update({
    "AIRFLOW_HOME": str(AIRFLOW_HOME),
    "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{AIRFLOW_HOME}/airflow.db",
    "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
})
os.environ.setdefault("PLE_VENV", str(REPO_ROOT / ".venv"))
# Spark as a deployment configures it (spark-defaults.conf): settings for the tests' tiny days; every
# spark-submit and `ple` job started here (by the tests or by Airflow's tasks) reads it.
os.environ["SPARK_CONF_DIR"] = str(REPO_ROOT / "tests" / "airflow" / "spark-conf")
# The DAGs' settings are Airflow Variables (rendered when a task runs); Airflow reads
# AIRFLOW_VAR_<NAME> from the environment. A tiny configuration for the tiny data set.
TINY_SETTINGS = {
    "venv_bin": str(Path(os.environ["PLE_VENV"]) / "bin"),
    "epochs": "1",
    "batch_size": "128",  # ~600 rows per worker in the tiny data set
    "train_days": "3",
    "train_workers": "2",
    "spark_driver_memory": "1g",
}
# A model trained one epoch on days of 600 impressions may not clear the gate's floors (an AUC
# interval containing 0.5): these tests check the wiring, so the floors are off here
# (tests/publishing/test_publish.py checks them). The ONNX export by TorchScript: the default
# (dynamo) export is ~10 s of CPU a publish, and is tested in tests/publishing, tests/cluster and the demo.
NO_FLOORS_CONFIG = AIRFLOW_HOME / "publish_no_floors.yaml"
NO_FLOORS_CONFIG.write_text(yaml.safe_dump({
    **yaml.safe_load((REPO_ROOT / "conf" / "publish.yaml").read_text()),
    "onnx_exporter": "torchscript",
    "floors": {"chance_auc": False, "prior_logloss_tolerance": None, "single_task_tolerance": None,
               "calibration_band": None}}))
TINY_SETTINGS["publish_config"] = str(NO_FLOORS_CONFIG)
os.environ.update({f"AIRFLOW_VAR_PLE_{name.upper()}": value for name, value in TINY_SETTINGS.items()})
os.environ["AIRFLOW_VAR_PLE_DATA_DIR"] = str(PLE_DATA_DIR)
# Connections are defined at deployment (README); here, through Airflow's environment form.
os.environ.update({
    "AIRFLOW_CONN_PLE_SPARK": '{"conn_type": "spark", "host": "local[2]"}',
    "AIRFLOW_CONN_PLE_FS": '{"conn_type": "fs", "extra": {"path": "/"}}',
})
sys.path.insert(0, str(DAGS_FOLDER))  # ple_settings, as a DAG bundle puts its folder on sys.path


@pytest.fixture(scope="session", autouse=True)
def airflow_db():
    """A migrated metadata database, once per test session; the session's Airflow home and data root
    (made at import, above) are removed at its end, so runs leave nothing in the temp folder."""
    airflow = Path(sys.executable).with_name("airflow")
    try:
        result = subprocess.run([str(airflow), "db", "migrate"], capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        yield AIRFLOW_HOME
    finally:
        for folder in (AIRFLOW_HOME, PLE_DATA_DIR):
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def dagbag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_FOLDER))

