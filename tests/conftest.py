"""Shared fixtures: one SparkSession for the whole test session (JVM start is the
expensive part), temp folders per test."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def spark():
    from ple_runtime.spark import get_spark

    session = get_spark(
        "ple-tests",
        {
            "spark.sql.shuffle.partitions": "2",
            "spark.default.parallelism": "2",
            "spark.driver.memory": "2g",
        },
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def venv_bin() -> Path:
    """The bin/ folder of the environment running the tests (horovodrun, ple, spark-submit)."""
    return VENV_BIN


@pytest.fixture()
def subprocess_env() -> dict[str, str]:
    """Environment for launching the project's own commands from a test."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env
