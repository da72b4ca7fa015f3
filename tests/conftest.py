"""Shared fixtures: one SparkSession for the whole test session (JVM start is the
expensive part), temp folders per test."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Tests run many short JVMs (Spark sessions, spark-submit, the cluster's daemons, Airflow's jobs) on tiny
# data, where the JIT's optimising tier costs more CPU than it saves: C1 only and the serial collector
# took ~20% off a test day's `ple backfill` (docs/measurements/test_suite.md). Jobs users run keep the
# JVM's defaults; a JDK_JAVA_OPTIONS of one's own wins.
os.environ.setdefault("JDK_JAVA_OPTIONS", "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent

sys.path.insert(0, str(Path(__file__).resolve().parent))  # evaluation_fixtures, evaluation_tables, next to this file
# The fixtures shared by tests/evaluation, tests/publishing and tests/orchestration (one session instance each).
from evaluation_fixtures import examples_problem, lake_root, mlflow_server, trained_models  # noqa: E402,F401
from tiny_spark import tiny_data_spark_conf  # noqa: E402


SHARED_FIXTURE_GROUPS = {"evaluation": "scoring", "publishing": "scoring", "orchestration": "scoring"}


def worker_group(nodeid: str) -> str:
    """The test folder of a test (tests/<folder>/...); the folders that share the scoring fixtures are one."""
    parts = nodeid.split("::")[0].split("/")
    folder = parts[1] if len(parts) > 2 else parts[0]
    return SHARED_FIXTURE_GROUPS.get(folder, folder)


# The longest folders first (seconds on a quiet 2-core box, docs/measurements/test_suite.md), so that
# under xdist no long folder starts last while the other worker idles; the rest keep their order.
LONGEST_GROUPS_FIRST = ("cluster", "training", "extraction", "scoring", "runtime")


def pytest_collection_modifyitems(config, items):
    rank = {group: index for index, group in enumerate(LONGEST_GROUPS_FIRST)}
    items.sort(key=lambda item: rank.get(worker_group(item.nodeid), len(rank)))


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: the Airflow environment runs without xdist
def pytest_xdist_make_scheduler(config, log):
    """`make test` runs the main suite on 2 pytest-xdist workers: one test folder runs whole on one
    worker, so its session- and package-scoped fixtures (the local cluster, the training lake, the
    scoring folders' trained models) are built once, not once per worker. Folders go out in
    collection order (`--no-loadscope-reorder`; the longest first: LONGEST_GROUPS_FIRST). A scheduler
    rather than `--dist loadgroup` with xdist_group marks: those are lost with pytest 9.2
    (pytest-xdist issue 1386, the group is written into a node id field pytest no longer reads)."""
    from xdist.scheduler import LoadScopeScheduling

    class FolderScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return worker_group(nodeid)

    return FolderScheduling(config, log)


@pytest.fixture(scope="session")
def spark():
    from ple_runtime.spark import get_spark

    session = get_spark(
        "ple-tests",
        {
            # Tiny days (tests/tiny_spark.py: the Airflow tests' spark-defaults.conf, read here too):
            # one task per shuffle (a second task is only scheduling), no adaptive re-planning, no
            # generated code (Janino compiles cost more than they save; Spark's own tests run both
            # paths). Measured in docs/measurements/test_suite.md. Jobs tests start as users do
            # (tests/runtime, the demo) keep the pipeline's settings.
            **tiny_data_spark_conf(),
            # TorchDistributor's 2 workers each need a task slot.
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
