"""Settings shared by the project's DAGs, as Jinja templates: nothing is looked up
when a DAG file is parsed (Airflow's convention: parsing runs every few seconds on
the DAG processor and must not hit the metadata database or depend on its host).

Each setting is the Airflow Variable `ple_<name>` (Admin -> Variables, or the
environment variable `AIRFLOW_VAR_PLE_<NAME>` on the workers), rendered when the
task runs; its default runs locally from the checkout these DAG files live in.
The DAG files only wire jobs together: every real step is a `ple` command (or
`spark-submit jobs/extract.py`) of the pipeline's environment.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

# Where these DAG files were deployed from: the defaults point into that checkout.
REPO_ROOT = Path(__file__).resolve().parent.parent

DEFAULTS: dict[str, str] = {
    "venv_bin": str(REPO_ROOT / ".venv" / "bin"),   # ple, spark-submit, horovodrun, python
    "code_dir": str(REPO_ROOT),                      # jobs/*.py (spark-submit's application), conf/
    "data_dir": str(REPO_ROOT / "ple_data"),         # raw logs, lake, runs, reports, registry
    "spark_jars": "",                                # empty: the Delta jars fetched by `make setup`
    "spark_driver_memory": "4g",
    "train_workers": "2",
    "horovod_hosts": "",                             # empty: localhost:<train_workers>
    "model": "",                                     # empty: the train config's (model, epochs, batch size:
    "epochs": "",                                    # a Variable you set wins over the file)
    "batch_size": "",
    "precision": "fp32",                             # fp32 | bf16 | auto (bf16 where the CPU has AMX)
    "train_days": "7",
    "training_mode": "full",                         # full | incremental (warm start from production)
    "full_retrain_every_days": "7",                  # incremental: retrain the whole window this often
    "spec": "",                                      # empty: <code_dir>/conf/video_spec.yaml
    "train_config": "",                              # empty: <code_dir>/conf/train.yaml (the tuned defaults);
                                                     # or a `ple train --config` file, e.g. `ple tune`'s best_train.yaml
    "maintain_retention_hours": "168",               # ple maintain's VACUUM retention (Delta's minimum)
    "maintain_target_file_mb": "128",                # ple maintain's compaction target file size
    "publish_config": "",                            # empty: <code_dir>/conf/publish.yaml (gate tolerances, floors)
}


def var(name: str) -> str:
    """The Jinja expression of setting `name` (a Variable, else its default)."""
    return f"var.value.get('ple_{name}', {DEFAULTS[name]!r})"


def setting(name: str) -> str:
    """A template that renders to setting `name`."""
    return "{{ " + var(name) + " }}"


def venv_path(*parts: str) -> str:
    return "{{ " + var("venv_bin") + " }}/" + "/".join(parts)


def code_path(*parts: str) -> str:
    return "{{ " + var("code_dir") + " }}/" + "/".join(parts)


def data_path(*parts: str) -> str:
    return "/".join([setting("data_dir"), *parts])


def model_settings() -> str:
    """`--config FILE` (the train_config setting, default conf/train.yaml), then `--model`, `--epochs` and
    `--batch-size` for those of the model, epochs and batch_size settings that are set (they win over the file)."""
    config = var("train_config") + " or (" + var("code_dir") + " ~ '/conf/train.yaml')"
    flags = "".join(f" ~ ((' --{flag} ' ~ ple_quote({var(name)})) if {var(name)} else '')"
                    for name, flag in (("model", "model"), ("epochs", "epochs"), ("batch_size", "batch-size")))
    return "{{ '--config ' ~ ple_quote(" + config + ")" + flags + " }}"


def ple_command(*args: str) -> str:
    """A shell command running `ple <args>` from the pipeline's environment.

    Arguments are templates or plain words without spaces (quoted by the caller
    where needed); Airflow renders the templates before bash runs the line."""
    return " ".join([venv_path("ple"), *args])


# --- rendered on the worker, when a task runs (DAG-level user_defined_macros) --------

def _delta_jars() -> str:
    """The Delta jars `make setup` fetched on this worker (ple_runtime.spark.delta_jars
    reads the same cache; this module runs in Airflow's environment, without it)."""
    cache = os.environ.get("PLE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "ple-pipeline")
    folder = os.path.join(cache, "jars", "delta-3.3.2")
    return ",".join(os.path.join(folder, name) for name in ("delta-spark_2.12-3.3.2.jar", "delta-storage-3.3.2.jar"))


def _worker_path() -> str:
    return os.environ.get("PATH", "")


# ple_quote: shell-quote a value that comes from a user (DAG run params).
MACROS = {"ple_delta_jars": _delta_jars, "ple_worker_path": _worker_path, "ple_quote": shlex.quote}


def spark_jars() -> str:
    return "{{ " + var("spark_jars") + " or ple_delta_jars() }}"


def spark_env() -> dict[str, str]:
    """spark-submit's environment: the pipeline's venv first on PATH (spark-submit is
    found there) and as the driver's and executors' Python."""
    python = venv_path("python")
    return {"PATH": "{{ " + var("venv_bin") + " }}:{{ ple_worker_path() }}", "PYSPARK_PYTHON": python,
            "PYSPARK_DRIVER_PYTHON": python, "PLE_DATA_DIR": setting("data_dir"), "PYTHONUNBUFFERED": "1"}


def job_env() -> dict[str, str]:
    """Extra environment of `ple` commands (BashOperator, append_env=True keeps the worker's)."""
    return {"PLE_DATA_DIR": setting("data_dir"), "PYTHONUNBUFFERED": "1"}
