"""The local cluster (scripts/cluster.sh) as a fixture: real servers on 127.0.0.1,
started once for the tests of this folder that need them and stopped after the last
of them, with a check that nothing it started is left running."""

from __future__ import annotations

import sys

import pytest

from tests.cluster.local_cluster import process_tree, start_cluster, stop_cluster


@pytest.fixture(scope="package")
def cluster(tmp_path_factory):
    """The whole cluster, started once for the tests of this folder and stopped after
    the last of them; os.environ points in-process readers (pyarrow, delta-rs, boto3)
    at its object storage while it lives."""
    state = tmp_path_factory.mktemp("cluster")
    cluster, up_seconds = start_cluster(state)
    print(f"\ncluster up in {up_seconds:.1f} s ({state})", file=sys.stderr)
    patch = pytest.MonkeyPatch()
    for key in ("AWS_ENDPOINT_URL", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                "MLFLOW_S3_ENDPOINT_URL"):
        patch.setenv(key, cluster.env[key])
    patch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    # Every process the cluster started (tests add the executors of the jobs they watch): none may
    # outlive `down`.
    cluster.watched = process_tree(cluster.server_pids().values())
    try:
        yield cluster
    finally:
        patch.undo()
        down_seconds, left = stop_cluster(cluster, cluster.watched)
        print(f"\ncluster down in {down_seconds:.1f} s", file=sys.stderr)
        assert not left, f"scripts/cluster.sh down left processes running: {left}"
        status = cluster.script("status")
        assert status.returncode == 1, f"`status` after `down` exits {status.returncode}: {status.stdout}"


@pytest.fixture(scope="package")
def s3_spark(spark, cluster):
    """The session's SparkSession, reaching the cluster's object storage through s3a://.

    The session may have started before the cluster (other test folders first), so the
    settings go into its Hadoop configuration now; credentials only there, in memory."""
    from ple_runtime.spark import object_storage_conf, s3a_jars

    if not s3a_jars():
        pytest.fail("hadoop-aws and the AWS SDK bundle are missing: run `scripts/setup.sh jars`")
    hadoop = spark.sparkContext._jsc.hadoopConfiguration()
    for key, value in object_storage_conf(cluster.env).items():
        if key.startswith("spark.hadoop."):
            hadoop.set(key[len("spark.hadoop."):], value)
    hadoop.set("fs.s3a.access.key", cluster.env["AWS_ACCESS_KEY_ID"])
    hadoop.set("fs.s3a.secret.key", cluster.env["AWS_SECRET_ACCESS_KEY"])
    return spark
