"""`ple doctor` really checks: every component present here, and a missing one fails with its fix."""

import subprocess


def test_doctor_reports_every_component_present(venv_bin, subprocess_env):
    result = subprocess.run([str(venv_bin / "ple"), "doctor"], capture_output=True, text=True, timeout=600,
                            env=subprocess_env)
    assert result.returncode == 0, result.stdout + result.stderr
    for component in ("Java", "Spark", "Delta Lake", "Petastorm", "PyTorch", "Horovod", "GPU/CUDA/NCCL", "Airflow"):
        assert component in result.stdout
    assert "FAIL" not in result.stdout


def test_doctor_fails_with_the_fix_when_the_airflow_environment_is_missing(venv_bin, subprocess_env, tmp_path):
    env = {**subprocess_env, "PLE_AIRFLOW_VENV": str(tmp_path / "no-such-venv")}
    result = subprocess.run([str(venv_bin / "ple"), "doctor"], capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 1
    assert "Airflow" in result.stdout and "FAIL" in result.stdout
    assert "make setup" in result.stdout
