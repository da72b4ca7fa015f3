"""`ple doctor` really checks: every component present here, and a missing one fails with its fix."""

import subprocess


def test_doctor_reports_every_component_present(venv_bin, subprocess_env):
    result = subprocess.run([str(venv_bin / "ple"), "doctor"], capture_output=True, text=True, timeout=600,
                            env=subprocess_env)
    assert result.returncode == 0, result.stdout + result.stderr
    for component in ("Java", "Spark", "Delta Lake", "Petastorm", "PyTorch", "Horovod", "GPU/CUDA/NCCL", "Airflow"):
        assert component in result.stdout
    assert "FAIL" not in result.stdout


def test_doctor_fails_with_the_fix_when_the_airflow_environment_is_missing(tmp_path, monkeypatch, capsys):
    """The doctor's own exit path with only its Airflow check (the others are the test above's: running them
    again would start a second Spark application to look at one line)."""
    import ple_runtime.doctor
    from jobs.doctor import main

    monkeypatch.setenv("PLE_AIRFLOW_VENV", str(tmp_path / "no-such-venv"))
    monkeypatch.setattr(ple_runtime.doctor, "CHECKS", [ple_runtime.doctor.check_airflow])
    assert main([]) == 1
    captured = capsys.readouterr()
    assert "Airflow" in captured.out and "FAIL" in captured.out and str(tmp_path / "no-such-venv") in captured.out
    assert "make setup" in captured.out and "1 component(s) missing or broken: Airflow" in captured.err
