"""Airflow's real services for a test: the scheduler (LocalExecutor), the DAG processor and
the API server that Airflow 3's task runner reports to, on SQLite in a throw-away
AIRFLOW_HOME, all on loopback. `AirflowServices` starts them in their own process
group and stops every process it started."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

AIRFLOW = Path(sys.executable).with_name("airflow")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AirflowServices:
    def __init__(self, home: Path, dags_folder: Path, extra_env: dict[str, str]):
        self.home = home
        self.port = free_port()
        self.env = {
            **os.environ,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            # the scheduler, DAG processor, API server and CLI all write this one SQLite file: wait up to
            # 60 s for its lock (pysqlite's default is 5 s) rather than fail with "database is locked"
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db?timeout=60",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.port}/execution/",
            # one secret for every process: the scheduler signs task tokens, the API server checks them
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            # The DAG files do not change during a test: parse each once, in one process (by default every
            # 30 s, ~0.7 s of CPU a file, by two processes, while the jobs compete for the 2 cores).
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "3600",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            **extra_env,
        }
        self.env.pop("AIRFLOW__CORE__UNIT_TEST_MODE", None)
        self.processes: dict[str, subprocess.Popen] = {}

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """Run an `airflow` command that is safe to repeat; one that SQLite refused ("database is
        locked": see `create_backfill`) is run again, up to 3 times."""
        for _ in range(3):
            result = self._run(args, timeout)
            if not _locked(result):
                break
            time.sleep(2)
        return _checked(args, result)

    def create_backfill(self, dag_id: str, *args: str, tries: int = 3) -> None:
        """`airflow backfill create`, tried again when SQLite refuses its write: the CLI reads, then
        writes, in one transaction, and SQLite fails such an upgrade at once ("database is locked",
        no busy wait) while the scheduler writes. Airflow leaves the half-made backfill behind (its
        clean-up knows Postgres' and MySQL's lock errors only), and the scheduler marks it complete
        after 2 minutes (Airflow #61375); a new backfill of the same DAG is refused until then.
        Worse, a scheduler running meanwhile may load a run of that backfill that the failed CLI then
        removes, and exit (sqlalchemy ObjectDeletedError, seen 2026-12-06): create backfills before
        `start_scheduler`. A refused try then starts the scheduler, to clear the orphan, once the
        CLI has exited."""
        command = ("backfill", "create", "--dag-id", dag_id, *args)
        for attempt in range(1, tries + 1):
            result = self._run(command, timeout=300)
            if attempt == tries or not _locked(result):
                break
            print(f"backfill create, try {attempt}: database is locked; waiting for the orphan to clear",
                  file=sys.stderr)
            self.start_scheduler()
            self._wait_until_no_active_backfill(dag_id)
        _checked(command, result)

    def _run(self, args, timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run([str(AIRFLOW), *args], env=self.env, capture_output=True, text=True, timeout=timeout)

    def _wait_until_no_active_backfill(self, dag_id: str, timeout: float = 300) -> None:
        deadline = time.time() + timeout
        while self.query("SELECT 1 FROM backfill WHERE dag_id = ? AND completed_at IS NULL", dag_id):
            self.check_alive()
            if time.time() > deadline:
                raise TimeoutError(f"a backfill of {dag_id} still active after {timeout:.0f} s")
            time.sleep(5)

    def start(self, scheduler: bool = True) -> "AirflowServices":
        """The API server and the DAG processor, and the scheduler unless `scheduler` is False
        (then `start_scheduler` later: see `create_backfill`)."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.cli("db", "migrate", timeout=600)
        self._spawn("api-server", "api-server", "--apps", "execution", "--host", "127.0.0.1", "--port", str(self.port),
                    "--workers", "1")
        self._spawn("dag-processor", "dag-processor")
        if scheduler:
            self.start_scheduler()
        self._wait_for_api()
        return self

    def start_scheduler(self) -> None:
        """Start the scheduler, unless it was started already."""
        if "scheduler" not in self.processes:
            self._spawn("scheduler", "scheduler")

    def _spawn(self, name: str, *args: str) -> None:
        log = open(self.home / f"{name}.log", "w")
        self.processes[name] = subprocess.Popen([str(AIRFLOW), *args], env=self.env, stdout=log,
                                                stderr=subprocess.STDOUT, start_new_session=True)

    def _wait_for_api(self, timeout: float = 180) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.check_alive()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/execution/health", timeout=5):
                    return
            except OSError:
                time.sleep(1)
        raise TimeoutError(f"the API server did not answer in {timeout:.0f} s; see {self.home}/api-server.log")

    def check_alive(self) -> None:
        dead = {name: p.returncode for name, p in self.processes.items() if p.poll() is not None}
        if dead:
            raise RuntimeError(f"Airflow services exited: {dead}; logs: {self.log_tails()}")

    def log_tails(self, chars: int = 3000) -> str:
        return "\n".join(f"--- {name}.log\n{(self.home / f'{name}.log').read_text()[-chars:]}"
                         for name in self.processes if (self.home / f"{name}.log").is_file())

    def query(self, sql: str, *args) -> list[sqlite3.Row]:
        """Read the metadata database (SQLite) directly: polling through the CLI costs seconds a call."""
        with sqlite3.connect(f"file:{self.home}/airflow.db?mode=ro", uri=True, timeout=30) as db:
            db.row_factory = sqlite3.Row
            return db.execute(sql, args).fetchall()

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.check_alive()
            if self.query("SELECT 1 FROM serialized_dag WHERE dag_id = ?", dag_id):
                return
            time.sleep(2)
        raise TimeoutError(f"the DAG processor did not register {dag_id} in {timeout:.0f} s")

    def dag_runs(self, dag_id: str) -> list[dict]:
        rows = self.query("SELECT run_id, run_type, state, logical_date, start_date, end_date FROM dag_run "
                          "WHERE dag_id = ? ORDER BY logical_date", dag_id)
        return [dict(r) for r in rows]

    def task_states(self, dag_id: str) -> dict[tuple[str, str], str]:
        rows = self.query("SELECT run_id, task_id, state FROM task_instance WHERE dag_id = ?", dag_id)
        return {(r["run_id"], r["task_id"]): r["state"] for r in rows}

    def stop(self) -> list[int]:
        """Stop every process group started here: TERM, up to 30 s for a graceful exit, then KILL
        for what is left (LocalExecutor's task processes may outlive the scheduler's own exit).
        Returns the groups still alive 10 s after that (none), naming what lingered past TERM."""
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.time() + 30
        for process in self.processes.values():
            try:
                process.wait(timeout=max(1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                pass
        lingering = [name for name, process in self.processes.items() if _group_alive(process.pid)]
        if lingering:
            print(f"after SIGTERM, still running in the groups of: {lingering}; sending SIGKILL", file=sys.stderr)
        for process in self.processes.values():
            if _group_alive(process.pid):
                os.killpg(process.pid, signal.SIGKILL)
        deadline = time.time() + 10
        while (survivors := [p.pid for p in self.processes.values() if _group_alive(p.pid)]) and time.time() < deadline:
            for process in self.processes.values():
                process.poll()  # reap our own children, so a dead leader is not a zombie member
            time.sleep(0.2)
        return survivors


def _locked(result: subprocess.CompletedProcess) -> bool:
    return result.returncode != 0 and "database is locked" in result.stderr + result.stdout


def _checked(args, result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"airflow {' '.join(args)}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


def _group_alive(group: int) -> bool:
    """Whether any process of the group is still running (zombies count as gone)."""
    import psutil

    for process in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(process.info["pid"]) == group and process.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return False
