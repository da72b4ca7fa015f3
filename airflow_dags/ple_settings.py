"""Settings shared by the project's DAGs: where the `ple` command lives and where
data goes. Each comes from an Airflow Variable, then the environment, then a
default that runs locally from this checkout."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def setting(name: str, default: str) -> str:
    """Airflow Variable `ple_<name>`, else $PLE_<NAME>, else `default`."""
    from airflow.sdk import Variable

    value = Variable.get(f"ple_{name}", default=None)
    if value is None:
        value = os.environ.get(f"PLE_{name.upper()}", default)
    return value


def venv_bin() -> str:
    """bin/ of the environment that has the pipeline installed (ple, spark-submit, horovodrun)."""
    return setting("venv_bin", os.path.join(os.environ.get("PLE_VENV", str(REPO_ROOT / ".venv")), "bin"))


def ple_command(*args: str) -> str:
    return " ".join([os.path.join(venv_bin(), "ple"), *args])
