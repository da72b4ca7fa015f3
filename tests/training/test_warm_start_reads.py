"""A warm start's cost must not grow with the lake's age times its feature count.

The vocabulary table gains a file a day (each extract's MERGE of new ids), so each read of one of
its versions costs more as the lake ages. The warm start used to read both pinned versions once per
vocabulary-backed feature (8 features in conf/video_spec.yaml: 16 reads of ~30 files on day 30 of
bench/month.py); it reads each version once for all features (training/warm_start.py).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import training_tables as synth
from ple_runtime.config import parse_job_config
from training import vocabulary
from training.config import TrainConfig
from training.launch import run_training
from training.plan import prepare_plan

DAYS = ["2026-03-01", "2026-03-02", "2026-03-03"]
# Two vocabulary-backed features: users and (multi-valued) tags take their sizes and rows from the table.
SPEC = {**synth.SPEC, "features": [
    {**f, "vocab_size": None, "vocabulary": "tag"} if f["name"] == "tag_idx" else f for f in synth.SPEC["features"]]}


def write_tags(path: str, day: str) -> None:
    import pyarrow as pa
    from deltalake import write_deltalake

    values = [f"t{i}" for i in range(1, synth.TAGS)]
    write_deltalake(path, pa.table({"vocabulary": ["tag"] * len(values), "value": values,
                                    "id": pa.array(range(1, synth.TAGS), pa.int32()),
                                    "first_seen_dt": [day] * len(values)}), mode="append")


def config(root: Path, out: str, train_day: str, validation_day: str, *extra: str) -> TrainConfig:
    return parse_job_config(TrainConfig, [
        "--table", str(root / "lake" / "examples"), "--train-start", train_day, "--train-end", train_day,
        "--validation-date", validation_day, "--spec", str(root / "spec.yaml"), "--out", str(root / out),
        "--epochs", "1", "--max-steps-per-epoch", "1", "--batch-size", "32", "--calibration", "none",
        "--no-progress", "--seed", "3", "--set", "model_params.expert_hidden=[8]",
        "--set", "model_params.tower_hidden=[8]", *extra], prog="ple train")


def test_a_warm_start_reads_each_vocabulary_version_once_for_all_features(tmp_path, monkeypatch):
    root = tmp_path
    (root / "spec.yaml").write_text(json.dumps(SPEC))
    examples, table = str(root / "lake" / "examples"), str(root / "lake" / "vocabulary")
    synth.write_vocabulary_rs(table, 1, 30, DAYS[0])
    write_tags(table, DAYS[0])                                              # version 1: users and tags
    synth.write_day_rs(examples, DAYS[0], 0, users=30)
    synth.write_day_rs(examples, DAYS[1], 1, users=30)
    assert run_training(config(root, "day1", DAYS[0], DAYS[1])) == 0
    steps = json.loads((root / "day1" / "run_record.json").read_text())["driver_seconds"]
    assert set(steps) == {"plan", "workers", "calibration"} and steps["workers"] > 0   # where the time went
    synth.write_vocabulary_rs(table, 31, 50, DAYS[2])                       # version 2: more users
    synth.write_day_rs(examples, DAYS[2], 2, users=50)

    reads = Counter()
    read_rows = vocabulary.read_rows

    def counted(table_path, version, columns=("name", "id")):
        reads[version] += 1
        return read_rows(table_path, version, columns)

    monkeypatch.setattr(vocabulary, "read_rows", counted)
    plan = prepare_plan(config(root, "day2", DAYS[1], DAYS[2], "--init-from", str(root / "day1")))

    rows = plan.warm_start.rows
    assert rows["user_idx"] == {"carried": 30, "new": 20, "dropped": 0, "by": "raw value"}
    assert rows["tag_idx"]["by"] == "raw value" and rows["tag_idx"]["carried"] == synth.TAGS - 1
    assert plan.warm_start.source_vocabulary["version"] == 1 and plan.vocab.vocabulary_table["version"] == 2
    # the old model's version once (both features), the plan's twice: its sizes, then the warm start's ids
    assert reads == {1: 1, 2: 2}, reads
