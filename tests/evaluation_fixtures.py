"""Fixtures of the tests that score models (tests/evaluation, tests/publishing, tests/orchestration): a tiny
examples table, tiny trained runs, a real MLflow tracking server. Imported into tests/conftest.py so their
session-scoped instances are shared across those folders; helpers in evaluation_tables.py, next to this file."""

from __future__ import annotations

from pathlib import Path

import pytest

# torch and the helpers are imported inside the fixtures: tests/conftest.py imports this module in every
# environment, the Airflow one (no torch) included.


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():  # autouse in the folders whose conftest imports it
    # Tiny models on a shared 2-core box: more threads only add contention.
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def examples_problem():
    from evaluation_tables import problem

    return problem()


@pytest.fixture(scope="session")
def lake_root(tmp_path_factory, spark, examples_problem) -> Path:
    """<root>/lake/examples with three days, written in one commit per day (versions 0, 1, 2)."""
    from evaluation_tables import DATES, day_frame, write_days

    root = tmp_path_factory.mktemp("ple_data")
    _, columns = examples_problem
    table = str(root / "lake" / "examples")
    for index, date in enumerate(DATES):
        write_days(spark, table, [day_frame(columns, index, date)])
    return root


@pytest.fixture(scope="session")
def trained_models(tmp_path_factory) -> dict[str, Path]:
    """Run folders: a good PLE, a worse (untrained) PLE, a second good PLE, single-task baselines."""
    from evaluation_tables import train_tiny

    runs = tmp_path_factory.mktemp("runs")
    return {
        "ple": train_tiny("ple", runs / "ple_good", seed=0).parent,
        "ple_other": train_tiny("ple", runs / "ple_other", seed=1).parent,
        # Untrained: clearly worse on every task, but its metrics are finite.
        "ple_bad": train_tiny("ple", runs / "ple_bad", steps=0, seed=2).parent,
        "mmoe": train_tiny("mmoe", runs / "mmoe", seed=3, num_experts=3).parent,
        "single_task": train_tiny("single_task", runs / "single" / "single_task_all", seed=4).parent,
    }


def _live_processes(session: int) -> list[int]:
    """Processes of a session that are not zombies (a zombie only waits for its parent to reap it)."""
    import os

    live = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == session and fields[0] != "Z":   # fields: state, ppid, pgrp, session, ...
                live.append(int(entry))
    return live


@pytest.fixture()
def mlflow_server(tmp_path_factory, venv_bin, subprocess_env):
    """A real `mlflow server` on loopback: SQL backend store in a temp SQLite file, artifacts served by the
    server from a temp folder (clients upload through it: no shared filesystem). Its own session, stopped with
    every process in it at the end; the test fails if any is left.

    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false: the server's job runner (GenAI jobs, seven huey worker
    processes; the registry does not use it) would otherwise double its start time on a busy 2-core box."""
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
        cwd=root, env=dict(subprocess_env, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"), stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True)

    def stop() -> list[int]:
        for sig, patience in ((signal.SIGTERM, 60), (signal.SIGKILL, 20)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                pass
            deadline = time.time() + patience
            while time.time() < deadline:
                process.poll()  # reap the server itself
                if not _live_processes(process.pid):
                    return []
                time.sleep(0.5)
        return _live_processes(process.pid)

    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                break
        except OSError:
            if process.poll() is not None or time.time() > deadline:
                stop()
                pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
    yield url
    left = stop()
    log.close()
    assert not left, f"mlflow server processes {left} still running after SIGTERM and SIGKILL"
