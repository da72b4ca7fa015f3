"""The rows an evaluation reads: one date partition of a Delta table, pinned at one version by
`ple_runtime.snapshot.resolve_date_snapshot` (the version choice is documented there).

Rows are read either with pyarrow from the Parquet files of that version (no JVM: the default)
or with Spark + Delta (`versionAsOf` + a `dt` filter + toPandas over Arrow). `reader="auto"` uses
pyarrow and falls back to Spark for tables the log reader refuses (deletion vectors, column
mapping). Both read the same version.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import pandas as pd

from ple_runtime import arrow_storage
from ple_runtime.config import absolute_location
from ple_runtime.snapshot import DateSnapshot, SnapshotError, check_readable_as_parquet

READERS = ("auto", "arrow", "spark")


# --- reading the rows --------------------------------------------------------------------

def read_date_snapshot(snapshot: DateSnapshot, columns: Sequence[str], reader: str = "auto",
                       spark=None) -> pd.DataFrame:
    """The snapshot's rows (only `columns`) as pandas; sets snapshot.rows and snapshot.reader."""
    columns = list(dict.fromkeys(columns))
    frame = _arrow_else_spark(snapshot, reader, lambda: _read_with_arrow(snapshot, columns),
                              lambda: _read_with_spark(snapshot, columns, spark))
    snapshot.rows = int(len(frame))
    return frame


def iter_date_snapshot(snapshot: DateSnapshot, columns: Sequence[str], rows_per_batch: int, reader: str = "auto",
                       spark=None) -> Iterator[pd.DataFrame]:
    """The snapshot's rows (only `columns`) as pandas frames of `rows_per_batch` rows (the last shorter), read
    batch by batch (evaluation/streaming.py); sets snapshot.reader, and snapshot.rows after the last batch."""
    from ple_runtime.arrow_storage import parquet_batches

    from .streaming import frame_batches

    columns = list(dict.fromkeys(columns))

    def arrow_batches():
        _check_plain_parquet(snapshot)
        return parquet_batches(snapshot.files, columns, rows_per_batch)

    batches = _arrow_else_spark(snapshot, reader, arrow_batches,
                                lambda: frame_batches(_read_with_spark(snapshot, columns, spark), rows_per_batch))
    rows = 0
    try:
        for batch in batches:
            rows += len(batch)
            yield batch
    except KeyError as error:
        raise KeyError(f"{snapshot.table} ({snapshot.partition_column}={snapshot.date}, version "
                       f"{snapshot.version}): {error.args[0]}") from None
    snapshot.rows = rows


def _arrow_else_spark(snapshot: DateSnapshot, reader: str, with_arrow, with_spark):
    """with_arrow() where `reader` allows it and the version reads as plain Parquet (else its SnapshotError
    with reader "arrow"), with_spark() otherwise; records which in snapshot.reader."""
    if reader not in READERS:
        raise ValueError(f"unknown reader {reader!r}; valid: {list(READERS)}")
    if reader in ("auto", "arrow"):
        try:
            result = with_arrow()
            snapshot.reader = "arrow"
            return result
        except SnapshotError:
            if reader == "arrow":
                raise
    result = with_spark()
    snapshot.reader = "spark"
    return result


def _check_plain_parquet(snapshot: DateSnapshot) -> None:
    if snapshot.version is not None:
        check_readable_as_parquet(absolute_location(snapshot.table), snapshot.version)


def _read_with_arrow(snapshot: DateSnapshot, columns: list[str]) -> pd.DataFrame:
    _check_plain_parquet(snapshot)
    try:
        return arrow_storage.read_parquet(snapshot.files, columns).to_pandas()
    except KeyError as error:
        raise KeyError(f"{snapshot.table} ({snapshot.partition_column}={snapshot.date}, version "
                       f"{snapshot.version}): {error.args[0]}") from None


def _read_with_spark(snapshot: DateSnapshot, columns: list[str], spark=None) -> pd.DataFrame:
    from pyspark.sql import functions as F

    if spark is None:
        from ple_runtime.spark import get_spark

        spark = get_spark("ple-evaluate")
    spark.conf.set("spark.sql.execution.arrow.pyspark.enabled", "true")
    reader = spark.read.format("delta" if snapshot.version is not None else "parquet")
    if snapshot.version is not None:
        reader = reader.option("versionAsOf", snapshot.version)
    frame = reader.load(snapshot.table).where(F.col(snapshot.partition_column) == snapshot.date)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise KeyError(f"{snapshot.table} lacks columns {missing}; it has {sorted(frame.columns)}")
    return frame.select(*columns).toPandas()
