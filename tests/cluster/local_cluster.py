"""Driving scripts/cluster.sh from tests: start, read its environment, stop, and
find what it left running."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CLUSTER_SH = REPO_ROOT / "scripts" / "cluster.sh"
VENV = Path(sys.executable).parent.parent


@dataclass
class Cluster:
    state: Path
    env: dict[str, str]                     # the caller's environment + cluster.env: for subprocesses

    @property
    def bucket(self) -> str:
        return self.env["PLE_CLUSTER_BUCKET"]

    @property
    def master(self) -> str:
        return self.env["PLE_SPARK_MASTER"]

    def uri(self, *parts: str, scheme: str = "s3a") -> str:
        return "/".join([f"{scheme}://{self.bucket}", *parts])

    def script(self, command: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return run_script(command, self.state, timeout)

    def server_pids(self) -> dict[str, int]:
        return {p.stem: int(p.read_text()) for p in (self.state / "pids").glob("*.pid")}


def script_env(state: Path) -> dict[str, str]:
    """What a user's fresh shell would have: no AWS credentials of their own (the
    cluster makes its own), this checkout first on the import path (the executors
    the workers start inherit it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_", "SPARK_", "PYSPARK_"))}
    env.update(PLE_CLUSTER_DIR=str(state), PLE_VENV=str(VENV), PYTHONPATH=str(REPO_ROOT),
               PATH=f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    return env


def run_script(command: str, state: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(CLUSTER_SH), command], env=script_env(state), capture_output=True,
                          text=True, timeout=timeout)


def read_cluster_env(state: Path) -> dict[str, str]:
    values = {}
    for line in (state / "cluster.env").read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            values[key] = value
    return values


def process_tree(pids) -> set[int]:
    """The given processes and all their descendants, alive now."""
    import psutil

    found = set()
    for pid in pids:
        try:
            process = psutil.Process(pid)
            found.add(pid)
            found.update(child.pid for child in process.children(recursive=True))
        except psutil.NoSuchProcess:
            pass
    return found


def alive(pids) -> list[str]:
    """Descriptions of the processes among `pids` still running (zombies count as gone)."""
    import psutil

    left = []
    for pid in pids:
        try:
            process = psutil.Process(pid)
            if process.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{pid} {' '.join(process.cmdline())[:160]}")
        except psutil.NoSuchProcess:
            pass
    return left


def start_cluster(state: Path) -> tuple[Cluster, float]:
    started = time.perf_counter()
    result = run_script("up", state)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        run_script("down", state)
        pytest.fail(f"scripts/cluster.sh up failed ({state}/logs):\n{result.stderr[-4000:]}")
    env = script_env(state)
    env.update(read_cluster_env(state))
    return Cluster(state=state, env=env), seconds


def stop_cluster(cluster: Cluster, watched: set[int]) -> tuple[float, list[str]]:
    """`down`, then what is still running of everything the cluster ever started."""
    watched = watched | process_tree(cluster.server_pids().values())
    started = time.perf_counter()
    result = cluster.script("down")
    seconds = time.perf_counter() - started
    assert result.returncode == 0, result.stderr[-3000:]
    deadline = time.monotonic() + 10
    while (left := alive(watched)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return seconds, left
