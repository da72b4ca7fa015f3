"""Extract writes row groups of a bounded size (`ExtractConfig.row_group_mb`), so a day of any size is
read by training as row groups of the same rows; the setting does not leak into the shared session."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from extraction.extract import ExtractConfig
from extraction.tables import replace_where


def _row_groups(table: Path) -> list[int]:
    return [pq.ParquetFile(f).metadata.row_group(i).num_rows
            for f in sorted(table.rglob("*.parquet")) for i in range(pq.ParquetFile(f).metadata.num_row_groups)]


def test_row_groups_end_at_the_asked_size(spark, tmp_path):
    rows = 60_000
    df = spark.range(rows).selectExpr("id", "cast(id * 7919 % 1000003 as double) as value", "'2026-01-01' as dt")
    bounded, default = tmp_path / "bounded", tmp_path / "default"
    replace_where(df, str(bounded), "dt = '2026-01-01'", files=1, row_group_bytes=256 * 1024)
    replace_where(df, str(default), "dt = '2026-01-01'", files=1)
    groups = _row_groups(bounded)
    # 16 B a row before encoding: 256 KiB holds ~16k rows (parquet checks the size every few thousand rows).
    assert sum(groups) == rows and len(groups) >= 3 and max(groups) < 30_000
    assert _row_groups(default) == [rows]  # the session's setting is back to Parquet's default (128 MB)
    assert spark.sparkContext._jsc.hadoopConfiguration().get("parquet.block.size") is None


def test_a_bound_of_zero_fails_naming_the_setting():
    with pytest.raises(ValidationError, match="row_group_mb"):
        ExtractConfig(date="2026-01-01", data_dir="/tmp/unused", row_group_mb=0)
