"""Shared fixtures: one SparkSession for the whole test session (JVM start is the
expensive part), temp folders per test."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent

sys.path.insert(0, str(Path(__file__).resolve().parent))  # evaluation_fixtures, evaluation_tables, next to this file
# The fixtures shared by tests/evaluation, tests/publishing and tests/orchestration (one session instance each).
from evaluation_fixtures import examples_problem, lake_root, mlflow_server, trained_models  # noqa: E402,F401


SHARED_FIXTURE_GROUPS = {"evaluation": "scoring", "publishing": "scoring", "orchestration": "scoring"}


def pytest_collection_modifyitems(config, items):
    """`make test` runs the suite on 2 pytest-xdist workers with `--dist loadgroup`: a group runs on
    one worker, so each folder's session- and package-scoped fixtures (one local cluster, one training
    lake, the scoring folders' trained models) are built once, not once per worker."""
    for item in items:
        folder = Path(item.path).relative_to(REPO_ROOT / "tests").parts[0]
        item.add_marker(pytest.mark.xdist_group(SHARED_FIXTURE_GROUPS.get(folder, folder)))


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
