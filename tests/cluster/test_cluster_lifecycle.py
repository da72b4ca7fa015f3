"""scripts/cluster.sh as a user runs it from a fresh shell: `up` starts real servers on
127.0.0.1 (Spark master + 2 workers, the S3 server, the MLflow server), the S3 server refuses
a wrong key, MLflow stores artifacts on the object storage, credentials appear in no command
line or log, and `down` leaves no process behind. That a job submitted with spark-submit runs
on both workers and writes to s3a:// is test_cluster_end_to_end.py's (the extract).

On the folder's one cluster (conftest.py): `up` is the fixture's, and so is `down`, after
the folder's last test, with the checks that `status` then says it is down and that
nothing it ever started, the executors of the end-to-end test's jobs included, is still running."""

from __future__ import annotations

import re

import pytest

from tests.cluster.local_cluster import process_tree

pytestmark = pytest.mark.slow


def test_up_run_down_leaves_nothing_behind(cluster, tmp_path):
    import boto3
    import psutil
    from botocore.exceptions import ClientError
    from mlflow import MlflowClient

    state = cluster.state
    status = cluster.script("status")
    assert status.returncode == 0, status.stdout + status.stderr
    for part in ("s3proxy", "spark-master", "spark-worker-1", "spark-worker-2", "mlflow"):
        assert re.search(rf"^{part}: running", status.stdout, re.M), status.stdout
    again = cluster.script("up")
    assert again.returncode == 0 and "already up" in again.stderr

    s3 = boto3.client("s3", endpoint_url=cluster.env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                      aws_access_key_id=cluster.env["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=cluster.env["AWS_SECRET_ACCESS_KEY"])
    s3.list_objects_v2(Bucket=cluster.bucket)  # the cluster's key is let in, a wrong one is not
    intruder = boto3.client("s3", endpoint_url=cluster.env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                            aws_access_key_id=cluster.env["AWS_ACCESS_KEY_ID"], aws_secret_access_key="wrong")
    with pytest.raises(ClientError):
        intruder.list_objects_v2(Bucket=cluster.bucket)

    # The registry server keeps artifacts on the object storage (proxied: clients need no S3 access).
    client = MlflowClient(tracking_uri=cluster.env["MLFLOW_TRACKING_URI"])
    run = client.create_run(client.create_experiment("cluster-check"))
    artifact = tmp_path / "note.txt"
    artifact.write_text("stored on s3\n")
    client.log_artifact(run.info.run_id, str(artifact))
    # Paged: the folder's other tests publish to the same server (a page holds 1,000 keys).
    stored = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=cluster.bucket, Prefix="mlflow/")
              for o in page.get("Contents", [])]
    assert any(k.endswith(f"{run.info.run_id}/artifacts/note.txt") for k in stored), stored
    fetched = client.download_artifacts(run.info.run_id, "note.txt", str(tmp_path / "back"))
    assert open(fetched).read() == "stored on s3\n"

    # Credentials: in cluster.env (mode 600) and the S3 server's config only.
    secret = cluster.env["AWS_SECRET_ACCESS_KEY"]
    assert (state / "cluster.env").stat().st_mode & 0o077 == 0
    for log in (state / "logs").glob("*.log"):
        assert log.stat().st_size > 0, f"{log} is empty"
        assert secret not in log.read_text(errors="replace"), f"the secret key is in {log}"
    assert secret not in (state / "spark-conf" / "spark-defaults.conf").read_text()
    for pid in process_tree(cluster.server_pids().values()):
        try:
            assert secret not in " ".join(psutil.Process(pid).cmdline()), f"the secret key is on process {pid}'s command line"
        except psutil.NoSuchProcess:
            pass
