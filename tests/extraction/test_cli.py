"""`ple extract` as operators run it: the console script and spark-submit (new JVMs: slow)."""

from __future__ import annotations

import subprocess

import pytest

from pathlib import Path
from tests.extraction import scenario as sc

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parents[2]


def _examples_count(spark, data) -> int:
    return spark.read.format("delta").load(str(data / "lake" / "examples")).count()


def test_ple_extract_console_script(spark, tmp_path, venv_bin, subprocess_env):
    sc.write_scenario(tmp_path / "raw")
    result = subprocess.run(
        [str(venv_bin / "ple"), "extract", "--data-dir", str(tmp_path), "--date", sc.DAY],
        capture_output=True, text=True, env=subprocess_env, timeout=600, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "lines_read" in result.stdout
    assert _examples_count(spark, tmp_path) == len(sc.EXPECTED_DAY_LABELS)


def test_spark_submit_extract(spark, tmp_path, venv_bin, subprocess_env):
    # Under spark-submit the driver JVM is already running when get_spark() sets spark.jars,
    # so Delta's classes must come with the submit command (as on a cluster).
    from ple_runtime.spark import delta_jars

    sc.write_scenario(tmp_path / "raw")
    result = subprocess.run(
        [str(venv_bin / "spark-submit"), "--master", "local[1]", "--jars", ",".join(delta_jars()),
         str(REPO_ROOT / "jobs" / "extract.py"),
         "--data-dir", str(tmp_path), "--date", sc.DAY],
        capture_output=True, text=True, env=subprocess_env, timeout=600, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert _examples_count(spark, tmp_path) == len(sc.EXPECTED_DAY_LABELS)
