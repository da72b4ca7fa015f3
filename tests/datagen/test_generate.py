"""The generator: deterministic, realistic enough, and its fault manifest is what
`ple extract` quarantines."""

from __future__ import annotations

import datetime as dt
import gzip
import json

import numpy as np
import pytest
from pyspark.sql import functions as F

from datagen.events import FaultRates, GeneratorSettings, generate
from feature_eng import schema as S
from jobs import extract, generate as generate_job
from ple_runtime.lake import Lake

SMALL = dict(users=300, items=120, days=2, impressions_per_day=3000, start_date=dt.date(2026, 1, 5))


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    settings = GeneratorSettings(**SMALL, faults=FaultRates.uniform(0.003))
    generate(settings, tmp_path / "a")
    generate(settings, tmp_path / "b")
    generate(GeneratorSettings(**{**SMALL, "seed": 1}), tmp_path / "c")
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert a == b
    assert a.keys() == c.keys() and a != c


def test_a_larger_last_day_leaves_the_world_and_the_days_before_it_unchanged(tmp_path):
    last = SMALL["start_date"] + dt.timedelta(days=1)
    generate(GeneratorSettings(**SMALL), tmp_path / "a")
    settings = generate_job.GenerateConfig(**SMALL, impressions_on=f"{{{last}: 9000}}")   # as --impressions-on
    manifest = generate(settings, tmp_path / "b")
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    same = {p for p in a if not str(p).startswith(f"events/dt={last}") and p.name != "_manifest.json"}
    assert same and all(a[p] == b[p] for p in same)   # dimensions and the first day, byte for byte
    assert manifest["partitions"][last.isoformat()]["impressions_simulated"] == 9000
    assert manifest["partitions"][SMALL["start_date"].isoformat()]["impressions_simulated"] == 3000
    with pytest.raises(ValueError, match="2026-01-09, outside the generated days 2026-01-05..2026-01-06"):
        GeneratorSettings(**SMALL, impressions_on={dt.date(2026, 1, 9): 10})


def test_refuses_to_overwrite_without_flag(tmp_path):
    generate(GeneratorSettings(**{**SMALL, "days": 1}), tmp_path)
    with pytest.raises(FileExistsError):
        generate(GeneratorSettings(**{**SMALL, "days": 1}), tmp_path)
    generate(GeneratorSettings(**{**SMALL, "days": 1}), tmp_path, overwrite=True)


def test_lines_follow_the_contract_and_tasks_correlate_like_a_feed(tmp_path):
    manifest = generate(GeneratorSettings(**{**SMALL, "days": 1, "impressions_per_day": 20000}), tmp_path)
    day = SMALL["start_date"].isoformat()
    lines = []
    for path in sorted((tmp_path / "events" / f"dt={day}").glob("*.json.gz")):
        lines += gzip.decompress(path.read_bytes()).decode().splitlines()
    assert len(lines) == manifest["partitions"][day]["lines"]
    events = [json.loads(line) for line in lines]
    for e in events:
        assert set(S.COMMON_FIELDS + S.FIELDS_BY_TYPE[e["event_type"]]) == set(e)
    assert any(isinstance(e["ts"], int) for e in events) and any(isinstance(e["ts"], str) for e in events)
    assert len({e["event_id"] for e in events}) == len(events)
    impressions = [e for e in events if e["event_type"] == "impression"]
    plays = [e for e in events if e["event_type"] == "play"]
    play_rate = len({p["impression_id"] for p in plays}) / len(impressions)
    assert 0.15 < play_rate < 0.5
    # position bias: the top of the feed is played more than the bottom
    played = {p["impression_id"] for p in plays}
    top = np.mean([i["impression_id"] in played for i in impressions if i["position"] < 3])
    low = np.mean([i["impression_id"] in played for i in impressions if i["position"] >= 15])
    assert top > low


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    """Two days generated in chunks of 1,000 impressions (as a 20M-impression day is, by 1M), then
    extracted: a chunk that reused another's event or impression ids would show as duplicates or
    lost engagement in extract's figures, which must equal the manifest's."""
    data = tmp_path_factory.mktemp("generated")
    argv = ["--data-dir", str(data), "--users", "300", "--items", "120", "--days", "2",
            "--impressions-per-day", "3000", "--start-date", "2026-01-05", "--fault-rate", "0.004",
            "--chunk-impressions", "1000"]
    assert generate_job.main(argv) == 0
    manifest = json.loads((data / "raw" / "_manifest.json").read_text())
    files = sorted(p.name for p in (data / "raw" / "events" / "dt=2026-01-05").iterdir())
    assert files == ["_SUCCESS", *(f"part-{i:05d}.json.gz" for i in range(3 * 2))]   # 3 chunks x 2 files
    assert extract.main(["--data-dir", str(data), "--start", "2026-01-05", "--end", "2026-01-06"]) == 0
    return data, manifest


def test_manifest_reasons_are_reasons_extract_knows(faulty):
    _, manifest = faulty
    for part in manifest["partitions"].values():
        assert set(part["quarantine"]) <= S.known_reasons()
        assert part["quarantined"] > 0 and part["duplicates"] > 0


def test_extract_quarantines_exactly_what_was_injected(spark, faulty):
    data, manifest = faulty
    lake = Lake(str(data))
    quarantine = spark.read.format("delta").load(lake.quarantine)
    got = {(r["dt"], r["reason"]): r["count"] for r in quarantine.groupBy("dt", "reason").count().collect()}
    expected = {(day, reason): n for day, part in manifest["partitions"].items()
                for reason, n in part["quarantine"].items()}
    assert got == expected
    dq = spark.read.format("delta").load(lake.data_quality)
    figures = {(r["dt"], r["metric"]): r["value"] for r in dq.collect()}
    for day, part in manifest["partitions"].items():
        assert figures[(day, "lines_read")] == part["lines"]
        assert figures[(day, "duplicates")] == part["duplicates"]
        assert figures[(day, "quarantined")] == part["quarantined"]
    # late engagement moved into the second day's partition is attributed to the first day
    assert manifest["partitions"]["2026-01-05"]["late_moved_to_next_day"] > 0
    assert figures[("2026-01-05", "engagement_attributed_from_next_partition")] >= \
        manifest["partitions"]["2026-01-05"]["late_moved_to_next_day"]
    examples = spark.read.format("delta").load(lake.examples)
    assert examples.where(F.col("play") == 0).where(F.col("watch_ratio").isNotNull()).count() == 0
