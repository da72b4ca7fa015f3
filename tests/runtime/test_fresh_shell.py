"""The README's ad hoc commands, exactly as a user types them in a fresh shell: no
activated environment, another working directory, relative paths."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parents[2]
DAYS = ["2026-01-01", "2026-01-02", "2026-01-03"]


def _fresh_shell_env() -> dict[str, str]:
    """What a new login shell has: no venv on PATH, no PYTHONPATH, no SPARK_HOME. The machine's own
    settings a profile exports pass through: Java's home and options (the suite's JIT tier, tests/conftest.py:
    the extract's JVM 86 -> 44 CPU-s), the cache and temp folders."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ["HOME"], "LANG": "C.UTF-8"}
    for name in ("JAVA_HOME", "JDK_JAVA_OPTIONS", "PLE_CACHE_DIR", "TMPDIR"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def _run(command: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=_fresh_shell_env(), capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


def test_jobs_run_from_a_fresh_shell_in_another_directory_with_relative_paths(tmp_path, venv_bin):
    cwd = tmp_path / "somewhere"
    cwd.mkdir()
    ple = str(venv_bin / "ple")
    _run([ple, "generate", "--data-dir", "data", "--days", "3", "--users", "60", "--items", "30",
          "--impressions-per-day", "500", "--files-per-day", "2", "--seed", "5"], cwd)
    # The README's spark-submit form: the wrapper sets SPARK_HOME, the Python and the Delta jars.
    _run([str(venv_bin / "ple-spark-submit"), "--master", "local[1]", str(REPO_ROOT / "jobs" / "extract.py"),
          "--data-dir", "data", "--start", DAYS[0], "--end", DAYS[-1]], cwd)
    _run([ple, "train", "--table", "data/lake/examples", "--train-start", DAYS[0], "--train-end", DAYS[0],
          "--validation-date", DAYS[1], "--spec", str(REPO_ROOT / "conf" / "video_spec.yaml"), "--model", "mmoe",
          "--epochs", "1", "--batch-size", "64", "--out", "runs/mmoe", "--no-progress",
          "--set", "model_params.expert_hidden=[8]", "--set", "model_params.tower_hidden=[8]"], cwd)
    _run([ple, "evaluate", "--model", "runs/mmoe", "--date", DAYS[2], "--data-dir", "data", "--out", "report"], cwd)

    # Everything landed under the working directory, nowhere else.
    assert (cwd / "data" / "lake" / "examples" / "_delta_log").is_dir()
    assert (cwd / "data" / "lake" / "vocabulary" / "_delta_log").is_dir()
    assert not (REPO_ROOT / "data").exists() and not (REPO_ROOT / "runs").exists()
    record = json.loads((cwd / "runs" / "mmoe" / "run_record.json").read_text())
    assert record["train_snapshot"]["table"] == str(cwd / "data" / "lake" / "examples")
    metrics = json.loads((cwd / "report" / "metrics.json").read_text())
    assert metrics["snapshot"]["date"] == DAYS[2] and metrics["snapshot"]["rows"] > 0
    assert (cwd / "report" / "report.html").is_file()


def test_spark_submit_wrapper_keeps_what_the_user_gave(monkeypatch):
    from ple_runtime.spark import delta_jars, local_driver_memory
    from ple_runtime.spark_submit import submit_command

    monkeypatch.delenv("SPARK_HOME", raising=False)
    command, env = submit_command(["--master", "yarn", "--jars", "/x/mine.jar", "--driver-memory", "9g", "job.py",
                                   "--date", "2026-01-01"])
    assert command[0].endswith("pyspark/bin/spark-submit") and Path(command[0]).is_file()
    assert command.count("--jars") == 1
    jars = command[command.index("--jars") + 1].split(",")
    assert jars[0] == "/x/mine.jar" and set(delta_jars()) <= set(jars)
    assert command.count("--driver-memory") == 1 and command[command.index("--driver-memory") + 1] == "9g"
    assert command[-3:] == ["job.py", "--date", "2026-01-01"]
    assert env["SPARK_HOME"] == str(Path(command[0]).parent.parent)
    assert Path(env["PYSPARK_PYTHON"]).name.startswith("python")

    command, _ = submit_command(["--packages", "io.delta:delta-spark_2.12:3.3.2", "--master", "yarn", "job.py"])
    assert "--jars" not in command and command[command.index("--driver-memory") + 1] == "4g"
    command, _ = submit_command(["--master", "local[2]", "job.py"])
    assert command[command.index("--driver-memory") + 1] == local_driver_memory()
