"""Helpers for Airflow tests that call the pipeline's own environment (.venv): the jobs
the DAGs' tasks run, and readers of the Delta tables they write."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path


def ple(*args: str, timeout: float = 900) -> str:
    """Run `ple <args>` in the pipeline's environment (.venv), as the DAGs' tasks do."""
    command = [str(Path(os.environ["PLE_VENV"], "bin", "ple")), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"ple {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def main_env_python(code: str, *args: str):
    """Run Python in the pipeline's environment (Delta/Parquet readers live there); returns the
    JSON its last output line holds."""
    python = Path(os.environ["PLE_VENV"], "bin", "python")
    result = subprocess.run([str(python), "-c", code, *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])
