"""Every DAG in airflow_dags/ imports cleanly, and one really runs: the doctor DAG, whose
`ple doctor` checks the whole stack from the task's environment (the only full run of the
doctor in the suites; tests/runtime/test_doctor.py checks its table and its failure path)."""

from airflow.utils.state import DagRunState


def test_dags_import_without_errors(dagbag):
    assert dagbag.import_errors == {}, dagbag.import_errors
    assert "ple_doctor" in dagbag.dags


def test_doctor_dag_runs_end_to_end(dagbag):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    dag = dagbag.get_dag("ple_doctor")
    run = dag.test()
    assert run.state == DagRunState.SUCCESS
    with create_session() as session:  # BashOperator pushes the command's last line
        value = session.scalar(select(XComModel.value).where(
            XComModel.dag_id == "ple_doctor", XComModel.run_id == run.run_id, XComModel.task_id == "doctor"))
    assert value is not None and "every component present" in str(value), value
