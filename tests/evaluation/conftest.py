"""Fixtures for the evaluation tests (helpers in evaluation_tables.py, next to this file)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # evaluation_tables, next to this file
from evaluation_tables import DATES, problem, day_frame, train_tiny, write_days  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    # Tiny models on a shared 2-core box: more threads only add contention.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def examples_problem():
    return problem()


@pytest.fixture(scope="session")
def lake_root(tmp_path_factory, spark, examples_problem) -> Path:
    """<root>/lake/examples with three days, written in one commit per day (versions 0, 1, 2)."""
    root = tmp_path_factory.mktemp("ple_data")
    _, columns = examples_problem
    table = str(root / "lake" / "examples")
    for index, date in enumerate(DATES):
        write_days(spark, table, [day_frame(columns, index, date)])
    return root


@pytest.fixture(scope="session")
def trained_models(tmp_path_factory) -> dict[str, Path]:
    """Run folders: a good PLE, a worse (untrained) PLE, a second good PLE, single-task baselines."""
    runs = tmp_path_factory.mktemp("runs")
    return {
        "ple": train_tiny("ple", runs / "ple_good", seed=0).parent,
        "ple_other": train_tiny("ple", runs / "ple_other", seed=1).parent,
        # Untrained: clearly worse on every task, but its metrics are finite.
        "ple_bad": train_tiny("ple", runs / "ple_bad", steps=0, seed=2).parent,
        "mmoe": train_tiny("mmoe", runs / "mmoe", seed=3, num_experts=3).parent,
        "single_task": train_tiny("single_task", runs / "single" / "single_task_all", seed=4).parent,
    }


@pytest.fixture()
def mlflow_server(tmp_path_factory, venv_bin, subprocess_env):
    """A real `mlflow server` on loopback: SQL backend store in a temp SQLite file, artifacts served by the
    server from a temp folder (clients upload through it: no shared filesystem). Stopped, with its workers,
    at the end; the test fails if any of its processes is left."""
    import os
    import signal
    import socket
    import subprocess
    import time
    import urllib.request

    root = tmp_path_factory.mktemp("mlflow_server")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = open(root / "server.log", "w")
    process = subprocess.Popen(
        [str(venv_bin / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{root / 'registry.db'}",
         "--artifacts-destination", (root / "artifacts").as_uri(), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "2"],
        cwd=root, env=subprocess_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 240
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                break
        except OSError:
            if process.poll() is not None or time.time() > deadline:
                os.killpg(process.pid, signal.SIGKILL)
                pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
    yield url
    os.killpg(process.pid, signal.SIGTERM)  # its own process group: the server and its workers
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    log.close()
    time.sleep(0.5)
    try:
        os.killpg(process.pid, 0)
    except ProcessLookupError:
        return
    os.killpg(process.pid, signal.SIGKILL)
    pytest.fail("mlflow server processes were left running after SIGTERM")
