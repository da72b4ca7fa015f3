"""`ple doctor`: a missing component fails with its fix. The full run, every component present, is
tests/airflow/test_dag_import.py's (the doctor DAG runs `ple doctor` as a deployed worker would)."""


def test_doctor_fails_with_the_fix_when_the_airflow_environment_is_missing(tmp_path, monkeypatch, capsys):
    """The doctor's own exit path with only its Airflow check (the others start Spark and Horovod: the
    doctor DAG's test runs them all)."""
    import ple_runtime.doctor
    from jobs.doctor import main

    monkeypatch.setenv("PLE_AIRFLOW_VENV", str(tmp_path / "no-such-venv"))
    monkeypatch.setattr(ple_runtime.doctor, "CHECKS", [ple_runtime.doctor.check_airflow])
    assert main([]) == 1
    captured = capsys.readouterr()
    assert "Airflow" in captured.out and "FAIL" in captured.out and str(tmp_path / "no-such-venv") in captured.out
    assert "make setup" in captured.out and "1 component(s) missing or broken: Airflow" in captured.err
