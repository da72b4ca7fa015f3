"""The pipeline on the local cluster, as users run it on a real one.

Cluster up; three days of tiny raw logs (`ple generate`) uploaded to the S3 server; all
extracted by `spark-submit` on the standalone master (2 workers) from s3a:// raw logs into
Delta tables on s3a://; the tables read back through the one Delta log reader and pyarrow's
S3 filesystem, and cross-checked against Spark and the generator's manifest. Then `ple train`
on the cluster's executors from the S3 snapshot (horovod.spark; TorchDistributor runs the same
worker code on executors, tested on local Spark in tests/training/test_torch_distributor.py: on
this one-machine loopback cluster its rendezvous would be the same 127.0.0.1 as there),
`ple evaluate` from S3 and `ple publish` to the cluster's MLflow server (artifacts on S3).

Raw logs on a disk every executor sees (an NFS mount) are read through the same code as in
local mode (tests/extraction); here they come from the object store, where the executors'
own reads of s3a:// are what a cluster adds.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from ple_runtime import arrow_storage, delta_log
from tests.cluster.local_cluster import REPO_ROOT, process_tree
from tests.tiny_spark import tiny_data_spark_conf

pytestmark = pytest.mark.slow

# Three days: training needs a row group per worker, and a day this small is one file. The
# generator writes a fourth, the next day of the last one (its late events and engagement).
START, MIDDLE, END = "2026-01-05", "2026-01-06", "2026-01-07"
DAYS = (START, MIDDLE, END)
# The tests' tiny-data Spark settings (tests/tiny_spark.py), as the Airflow tests' jobs use them: on days
# of a few thousand events they cost less (this folder alone: 305 -> 279 core-seconds,
# docs/measurements/test_suite.md) and give the same rows. What this file proves is the cluster's part:
# the standalone master, executors on both workers, s3a:// reads and Delta writes. The pipeline's own
# settings run in the demo and tests/runtime.
TINY_DATA_CONF = tuple(arg for key, value in tiny_data_spark_conf().items() for arg in ("--conf", f"{key}={value}"))


@pytest.fixture(scope="module")
def raw_logs(tmp_path_factory) -> Path:
    """Four days of tiny raw logs with a few injected faults (the generator's manifest
    says exactly which lines extract must quarantine)."""
    raw = tmp_path_factory.mktemp("generated") / "raw"
    result = subprocess.run(
        [f"{sys.prefix}/bin/ple", "generate", "--raw-dir", str(raw), "--users", "300", "--items", "120",
         "--days", "4", "--impressions-per-day", "3000", "--start-date", START, "--fault-rate", "0.004",
         "--files-per-day", "2"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return raw


def upload(local: Path, uri: str) -> None:
    """Every file under `local` to `uri`, one at a time. Not pyarrow's fs.copy_files:
    with pyarrow 14 and S3 it hung for good on a 2-core CI machine (its nested thread pools)."""
    target, path = arrow_storage.filesystem(uri)
    for file in sorted(p for p in local.rglob("*") if p.is_file()):
        # compression=None: pyarrow's default ("detect") would gzip the .gz files a second time
        with target.open_output_stream(f"{path}/{file.relative_to(local).as_posix()}", compression=None) as out:
            out.write(file.read_bytes())


def spark_submit_extract(cluster, *args: str) -> subprocess.CompletedProcess:
    """spark-submit as users submit a job, with no --master and no --jars: the cluster's
    spark-defaults.conf (SPARK_CONF_DIR) holds them, as a cluster's own configuration would.
    The executors and Python daemons it starts are watched: none may outlive `down` (conftest.py)."""
    command = [f"{sys.prefix}/bin/spark-submit", *TINY_DATA_CONF, str(REPO_ROOT / "jobs" / "extract.py"),
               "--start", START, "--end", END, *args]
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:  # no pipe to fill
        job = subprocess.Popen(command, env=cluster.env, stdout=stdout, stderr=stderr, text=True)
        deadline = time.monotonic() + 900
        while job.poll() is None and time.monotonic() < deadline:
            cluster.watched |= process_tree(cluster.server_pids().values())
            time.sleep(0.5)
        job.wait(timeout=60)
        stdout.seek(0), stderr.seek(0)
        return subprocess.CompletedProcess(command, job.returncode, stdout.read(), stderr.read())


def read_rows(table: str, columns: list[str]) -> list[dict]:
    """A table's latest rows through the reader and pyarrow (no Spark), with partition values."""
    import pyarrow.parquet as pq

    rows = []
    for file in delta_log.snapshot(table).files:
        filesystem, path = arrow_storage.filesystem(file.path)
        part = pq.read_table(path, filesystem=filesystem,
                             columns=[c for c in columns if c not in file.partition_values])
        rows.extend({**r, **file.partition_values} for r in part.to_pylist())
    return rows


@pytest.fixture(scope="module")
def extracted(cluster, raw_logs) -> tuple[str, set]:
    """The days extracted once by spark-submit on the standalone master, from raw logs on the
    object store (<data>/raw) into Delta on it; (data URI, ids of the applications it ran)."""
    data = cluster.uri(f"tests/{uuid.uuid4().hex[:12]}", "data")
    upload(raw_logs, f"{data}/raw")
    before = {a["id"] for a in _master_state(cluster)["completedapps"]}
    started = time.perf_counter()
    result = spark_submit_extract(cluster, "--data-dir", data)
    print(f"\nspark-submit extract: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    assert result.returncode == 0, result.stderr[-5000:]
    return data, {a["id"] for a in _master_state(cluster)["completedapps"]} - before


def test_extract_on_the_cluster_reads_and_writes_object_storage(cluster, s3_spark, extracted, raw_logs):
    data, ran = extracted
    assert len(ran) == 1, f"the extract did not run as one application on the standalone master: {ran}"
    ran = sorted(ran)
    for worker in (1, 2):
        assert (cluster.state / "work" / f"worker-{worker}" / ran[0]).is_dir(), \
            f"worker {worker} ran no executor of the extract"

    manifest = json.loads((raw_logs / "_manifest.json").read_text())["partitions"]
    lake = f"{data}/lake"
    figures = {(r["dt"], r["metric"]): r["value"] for r in read_rows(f"{lake}/data_quality", ["metric", "value"])}
    quarantined = Counter((r["dt"], r["reason"]) for r in read_rows(f"{lake}/quarantine", ["reason"]))
    for day in DAYS:
        assert figures[(day, "lines_read")] == manifest[day]["lines"]
        assert figures[(day, "duplicates")] == manifest[day]["duplicates"]
        assert figures[(day, "quarantined")] == manifest[day]["quarantined"] > 0
        assert {reason: n for (d, reason), n in quarantined.items() if d == day} == manifest[day]["quarantine"]

    examples = delta_log.snapshot(f"{lake}/examples")
    assert {f.partition_values["dt"] for f in examples.files} == set(DAYS)
    spark_counts = {r["dt"]: r["count"] for r in
                    s3_spark.read.format("delta").load(f"{lake}/examples").groupBy("dt").count().collect()}
    ours = Counter()
    for file in examples.files:
        ours[file.partition_values["dt"]] += file.num_records
    assert dict(ours) == spark_counts and all(spark_counts[d] > 1000 for d in DAYS)
    assert delta_log.snapshot(f"{lake}/vocabulary").num_records > 0
    # The days went through one pass: one commit of examples, which the commit scan evaluation
    # pins dates with finds for each of them.
    assert [set(c.partitions_changed) for c in delta_log.commits(f"{lake}/examples")] == [set(DAYS)]


def ple(cluster, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    started = time.perf_counter()
    result = subprocess.run([f"{sys.prefix}/bin/ple", *args], env=cluster.env, capture_output=True, text=True,
                            timeout=timeout, cwd=REPO_ROOT)
    print(f"\nple {' '.join(args[:1])}: {time.perf_counter() - started:.1f} s", file=sys.stderr)  # the phases' cost
    return result


def test_train_on_executors_evaluate_and_publish_to_the_registry_server(cluster, extracted, tmp_path):
    """PLE trained by 2 workers on the standalone cluster's executors from the S3 snapshot with Horovod
    (horovod.spark.run), evaluated from S3, published to the MLflow server (artifacts on S3), and the
    registered version loaded back by reference."""
    data, _ = extracted
    examples = f"{data}/lake/examples"
    def train(launcher: str, out: Path) -> None:
        before = {a["id"] for a in _master_state(cluster)["completedapps"]}
        trained = ple(cluster, "train", "--table", examples, "--train-start", START, "--train-end", MIDDLE,
                      "--validation-date", END, "--spec", str(REPO_ROOT / "conf" / "video_spec.yaml"),
                      "--model", "ple", "--epochs", "1", "--batch-size", "256", "--workers", "2",
                      "--launcher", launcher, "--out", str(out), "--no-progress")
        assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-5000:]
        ran = sorted({a["id"] for a in _master_state(cluster)["completedapps"]} - before)
        assert len(ran) == 1 and all((cluster.state / "work" / f"worker-{w}" / ran[0]).is_dir() for w in (1, 2)), \
            f"{launcher} training did not run on both workers' executors: {ran}"
        record = json.loads((out / "run_record.json").read_text())
        assert record["status"] == "completed" and record["world_size"] == 2 and record["launcher"] == launcher
        assert record["train_snapshot"]["table"].startswith("s3")
        assert record["delta_version"] == delta_log.latest_version(examples)

    run = tmp_path / "ple"
    train("spark", run)                                             # horovod.spark.run

    evaluated = ple(cluster, "evaluate", "--model", str(run), "--table", examples, "--date", END,
                    "--out", str(tmp_path / "evaluation"), "--no-with-production")
    assert evaluated.returncode == 0, evaluated.stderr[-5000:]
    metrics = json.loads((tmp_path / "evaluation" / "metrics.json").read_text())
    assert metrics["snapshot"]["rows"] > 1000 and 0.5 < metrics["model"]["tasks"]["play"]["auc"] <= 1.0

    published = ple(cluster, "publish", "--model", str(run), "--table", examples, "--date", END,
                    "--registered-model", "ple_cluster", "--out", str(tmp_path / "publish"),
                    # one epoch on small days may not clear the floors (tests/publishing/test_publish.py checks them)
                    "--set", "floors={chance_auc: false, prior_logloss_tolerance: null, single_task_tolerance: null, "
                             "calibration_band: null}")
    assert published.returncode == 0, published.stderr[-5000:]
    # Loaded back from the registry server by alias: the same model gives the same figures.
    again = ple(cluster, "evaluate", "--model", "models:/ple_cluster@production", "--table", examples,
                "--date", END, "--out", str(tmp_path / "again"), "--no-with-production")
    assert again.returncode == 0, again.stderr[-5000:]
    reloaded = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert reloaded["model"]["tasks"]["play"]["auc"] == pytest.approx(metrics["model"]["tasks"]["play"]["auc"],
                                                                       abs=1e-9)
    artifacts = {f.path for f in storage_listing(cluster.uri("mlflow"))}
    assert any(p.endswith("model.pt") for p in artifacts), "the registry server kept no artifact on S3"


def storage_listing(uri: str):
    from pyarrow import fs as pafs

    filesystem, path = arrow_storage.filesystem(uri)
    return [i for i in filesystem.get_file_info(pafs.FileSelector(path, recursive=True))
            if i.type == pafs.FileType.File]


def _master_state(cluster) -> dict:
    import urllib.request

    with urllib.request.urlopen(f"{cluster.env['PLE_CLUSTER_MASTER_UI']}/json", timeout=10) as response:
        return json.load(response)
