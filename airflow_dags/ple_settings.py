"""Settings shared by the project's DAGs. Each comes from an Airflow Variable
`ple_<name>`, then the environment `PLE_<NAME>`, then a default that runs locally
from this checkout. The DAG files only wire jobs together: every real step is a
`ple` command (or `spark-submit jobs/<name>.py`) of the pipeline's environment."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def setting(name: str, default: str) -> str:
    """Airflow Variable `ple_<name>`, else $PLE_<NAME>, else `default`.

    Read when a task's command is rendered or a DAG file is parsed; the Variable
    lookup falls back quietly when there is no metadata database (DAG parsing in
    a bare environment)."""
    try:
        from airflow.sdk import Variable

        value = Variable.get(f"ple_{name}", default=None)
    except Exception:  # noqa: BLE001 (no DB/API server reachable: use env/defaults)
        value = None
    if value is None:
        value = os.environ.get(f"PLE_{name.upper()}", default)
    return str(value)


def venv_bin() -> str:
    """bin/ of the environment that has the pipeline installed (ple, spark-submit, horovodrun)."""
    return setting("venv_bin", os.path.join(os.environ.get("PLE_VENV", str(REPO_ROOT / ".venv")), "bin"))


def data_dir() -> str:
    return setting("data_dir", str(REPO_ROOT / "ple_data"))


def repo_path(*parts: str) -> str:
    """A file of the deployed pipeline code (jobs/*.py for spark-submit, conf/*)."""
    return str(Path(setting("code_dir", str(REPO_ROOT)), *parts))


def spark_jars() -> str:
    """Delta Lake's jars for spark-submit (fetched by `make setup`); a Variable
    `ple_spark_jars` overrides (e.g. jars on HDFS/S3 for a cluster)."""
    # Mirrors ple_runtime.spark.delta_jars(): this module runs in Airflow's own
    # environment, where the pipeline's packages are not installed.
    cache = os.environ.get("PLE_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "ple-pipeline"))
    default = ",".join(
        os.path.join(cache, "jars", "delta-3.3.2", name)
        for name in ("delta-spark_2.12-3.3.2.jar", "delta-storage-3.3.2.jar")
    )
    return setting("spark_jars", default)


def ple_command(*args: str) -> str:
    """A shell command line running `ple <args>` from the pipeline's environment.

    Arguments may hold Jinja templates ({{ ds }}); they are quoted for the shell
    only when they contain no template (Airflow renders templates first)."""
    quoted = [a if "{{" in a else shlex.quote(a) for a in args]
    return " ".join([shlex.quote(os.path.join(venv_bin(), "ple")), *quoted])


def job_env() -> dict[str, str]:
    """Environment for job processes: the pipeline's venv first on PATH (spark-submit,
    horovodrun, python) and as Spark's Python; the data root."""
    env = {
        "PATH": f"{venv_bin()}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYSPARK_PYTHON": os.path.join(venv_bin(), "python"),
        "PYSPARK_DRIVER_PYTHON": os.path.join(venv_bin(), "python"),
        "PLE_DATA_DIR": data_dir(),
        "PYTHONUNBUFFERED": "1",
    }
    for passthrough in ("JAVA_HOME", "PLE_CACHE_DIR", "PLE_DELTA_JARS", "HOME"):
        if passthrough in os.environ:
            env[passthrough] = os.environ[passthrough]
    return env
