"""Reading a snapshot from object storage (training/petastorm_storage.py on ple_runtime.arrow_storage): the whole read path
for s3:// and s3a:// URLs.

The end-to-end test against a real S3 API server (s3proxy) belongs to the cluster test (issue 11). Here the
s3:// URLs are served by pyarrow's own SubTreeFileSystem over a local folder in place of the S3 client, so
everything of ours runs as it does on S3: URL -> filesystem resolution, Petastorm's path handling and legacy
adapter, footers, schema checks, listing a Parquet folder, sharding and a training run.
"""

from __future__ import annotations

import json

import pyarrow.fs
import pytest

import training_tables as synth
from ple_runtime.snapshot import resolve_parquet_snapshot
from training import petastorm_storage

def test_urls_of_one_snapshot_must_share_one_supported_filesystem():
    petastorm_storage.check_urls(["s3a://b/t/1.parquet", "s3a://b/t/2.parquet"])
    with pytest.raises(ValueError, match="cannot read \\['hdfs'\\] URLs"):
        petastorm_storage.check_urls(["hdfs://nn/t/1.parquet"])
    with pytest.raises(ValueError, match="one filesystem"):
        petastorm_storage.check_urls(["s3://a/1.parquet", "s3://b/2.parquet"])


@pytest.fixture
def bucket(tmp_path, monkeypatch):
    """s3://ple-bucket/... served from tmp_path/ple-bucket (see module doc)."""
    from ple_runtime import arrow_storage as locations

    served = pyarrow.fs.SubTreeFileSystem(str(tmp_path), pyarrow.fs.LocalFileSystem())
    monkeypatch.setattr(locations, "_s3", lambda endpoint, region: served)
    return tmp_path


@pytest.mark.parametrize("scheme", ["s3", "s3a"])
def test_a_run_reads_its_snapshot_through_s3_urls(bucket, tmp_path, scheme):
    from ple_model import ModelSpec
    from ple_runtime.config import parse_job_config
    from training.config import TrainConfig
    from training.data import shard_layout
    from training.plan import TrainingPlan, VocabRecord, check_columns
    from training.trainer import train_worker

    synth.write_parquet_folder(synth.make_rows(900, 1), bucket / "ple-bucket" / "train", files=3)
    synth.write_parquet_folder(synth.make_rows(300, 2, start_id=10**6), bucket / "ple-bucket" / "valid", files=1)
    (bucket / "ple-bucket" / "train" / "_SUCCESS").write_text("")
    train = resolve_parquet_snapshot(f"{scheme}://ple-bucket/train")        # listed through the store
    valid = resolve_parquet_snapshot(f"{scheme}://ple-bucket/valid")
    assert train.urls == [f"{scheme}://ple-bucket/train/part-0000{i}.parquet" for i in range(3)]
    assert [f.size for f in train.files] == [(bucket / "ple-bucket" / "train" / f"part-0000{i}.parquet").stat().st_size
                                             for i in range(3)]
    spec = json.loads(json.dumps(synth.SPEC))
    spec["features"][0]["vocab_size"] = synth.USERS + 1
    spec = ModelSpec.model_validate(spec)
    check_columns(spec, train, ("row_id",), "training")           # footer/schema reads over the URLs
    assert shard_layout(train.urls, 2).rows_per_shard == (600, 300)  # 3 row groups: ranks get 2 and 1
    (tmp_path / "spec.yaml").write_text("{}")
    config = parse_job_config(TrainConfig, [
        "--train-path", str(tmp_path), "--validation-path", str(tmp_path), "--spec", str(tmp_path / "spec.yaml"),
        "--out", str(tmp_path / "out"), "--epochs", "1", "--batch-size", "100", "--no-progress",
        "--set", "model_params.expert_hidden=[8]", "--set", "model_params.tower_hidden=[8]"], prog="ple train")
    plan = TrainingPlan(config=config, spec=spec, vocab=VocabRecord(sizes={}, sources={}), train_snapshot=train,
                        validation_snapshot=valid, model_parameters=0)
    result = train_worker(plan, "single", "single")
    record = json.loads((tmp_path / "out" / "run_record.json").read_text())
    assert result["status"] == "completed" and record["rows_per_shard"] == [900]
    assert record["epochs"][0]["validation"]["play"]["count"] == 300           # every validation row, read from S3
    assert record["train_snapshot"]["table"] == f"{scheme}://ple-bucket/train"
