"""Every DAG in airflow_dags/ imports cleanly, and one really runs."""

from airflow.utils.state import DagRunState


def test_dags_import_without_errors(dagbag):
    assert dagbag.import_errors == {}, dagbag.import_errors
    assert "ple_doctor" in dagbag.dags


def test_doctor_dag_runs_end_to_end(dagbag):
    dag = dagbag.get_dag("ple_doctor")
    run = dag.test()
    assert run.state == DagRunState.SUCCESS
