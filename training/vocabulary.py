"""The vocabulary version a training plan pins, and the (value -> id) maps of a version.

Extract writes a pass of days in this order: the vocabulary MERGE (the pass's new ids),
then the pass's examples (extraction/tables.py). So the vocabulary a day's examples were
written against is the newest vocabulary version committed at or before the examples
commit that last wrote that day. A plan pins, for the days it reads (training and
validation), the newest such version:

    the newest examples commit <= the pinned examples version that changed one of the
    plan's days  ->  its commit time  ->  the vocabulary version current then
    (Delta's timestampAsOf rule, `ple_runtime.delta_log.version_at`).

Later days' commits (examples and vocabulary alike) come after it, so a re-run of an old
day, after the lake has grown, pins the same version and sizes its embeddings the same;
a re-extract of one of its days moves it (the plan reads other files then anyway).
Everything is read through the one Delta log reader (`ple_runtime.delta_log`).
"""

from __future__ import annotations

from typing import Any

from ple_runtime import delta_log
from ple_runtime.config import ConfigError
from ple_runtime.snapshot import Snapshot, last_commit_writing, resolve_snapshot

from .petastorm_storage import open_parquet

NAME_COLUMNS = ("vocabulary", "vocab", "feature", "name")
ID_COLUMNS = ("id", "idx", "index")
VALUE_COLUMNS = ("value", "raw", "key")
FIX = "run `ple extract` for the plan's days first (it writes <lake>/vocabulary), or give --vocabulary-table"


def missing_table_error(table: str | None, features: list[str], why: str) -> ConfigError:
    where = f"vocabulary table {table}" if table else "no vocabulary table (--train-path data, no --vocabulary-table)"
    return ConfigError(f"{where}: {why}. Features {features} take their vocab_size from it: {FIX}; "
                       "or give their sizes with --vocab-sizes, or --vocab-sizes-from-data for tables that "
                       "have no vocabulary")


def pin_version(table: str, train: Snapshot, days: set[str] | None, partition_column: str,
                explicit: int | None = None) -> dict[str, Any]:
    """{"version", "pinned_by", ...}: the vocabulary version the plan uses (module doc). `days`: the
    partition values the plan reads (None: data without dates, pinned against its own version)."""
    if explicit is not None:
        return {"version": explicit, "pinned_by": "--vocabulary-version"}
    if train.format != "delta":
        version = delta_log.latest_version(table)
        return {"version": version, "pinned_by": "latest at plan time (the training data is plain Parquet: "
                                                 "no commit to pin against; pass --vocabulary-version to repeat)"}
    commit = last_commit_writing(train.table, partition_column, days, train.version)
    if commit is None:
        raise ConfigError(f"the commits of {train.table} that wrote the plan's days are no longer in its log "
                          "(log retention): the vocabulary version cannot be derived; pin it with "
                          "--vocabulary-version (the first run's plan.json records it under vocab.vocabulary_table)")
    try:
        version = delta_log.version_at(table, _utc(commit.timestamp_ms))
    except delta_log.DeltaLogError as error:
        raise ConfigError(f"vocabulary table {table} has no version committed at or before examples version "
                          f"{commit.version}, which wrote the plan's days ({error}): the examples were not "
                          f"written by `ple extract` against it. {FIX}; or pin one with --vocabulary-version") from None
    return {"version": version, "pinned_by": f"newest vocabulary commit at or before examples version "
                                             f"{commit.version} (the last write of the plan's days)",
            "examples_version": commit.version}


def _utc(timestamp_ms: int):
    import datetime as dt

    return dt.datetime.fromtimestamp(timestamp_ms / 1000, dt.timezone.utc)


def read_rows(table: str, version: int, columns: tuple[str, ...] = ("name", "id")):
    """The vocabulary table's rows at `version` as one Arrow table with columns renamed to
    vocabulary/value/id (those asked), partition columns included."""
    import pyarrow as pa

    snapshot = resolve_snapshot(table, version=version)
    if not snapshot.files:
        raise ConfigError(f"vocabulary table {table} is empty at version {version}: {FIX}")
    names = open_parquet(snapshot.files[0].url).schema_arrow.names + list(snapshot.partition_columns)
    wanted = {"name": NAME_COLUMNS, "id": ID_COLUMNS, "value": VALUE_COLUMNS}
    found = {key: next((c for c in wanted[key] if c in names), None) for key in columns}
    if None in found.values():
        raise ConfigError(f"vocabulary table {table} has columns {names}; expected one of "
                          + " and one of ".join(str(list(wanted[k])) for k in columns))
    parts = []
    for file in snapshot.files:
        stored = [c for c in found.values() if c not in snapshot.partition_columns]
        part = open_parquet(file.url).read(columns=stored)
        for column in (c for c in found.values() if c in snapshot.partition_columns):
            part = part.append_column(column, pa.array([file.partition_values[column]] * part.num_rows, pa.string()))
        parts.append(part.select(list(found.values())).rename_columns(
            ["vocabulary" if k == "name" else k for k in found]))
    return pa.concat_tables(parts), snapshot


def ids_by_vocabulary(table: str, version: int) -> dict[str, dict[str, int]]:
    """{vocabulary: {raw value: id}} of every vocabulary at one version of the table, in one read.

    The table gains a file a day (each extract's MERGE of new ids), so a read costs more as the lake
    ages: a warm start reads each version once for all its features, not once per feature."""
    rows, _ = read_rows(table, version, ("name", "value", "id"))
    return group_ids(rows)


def group_ids(rows) -> dict[str, dict[str, int]]:
    """{vocabulary: {value: id}} of an Arrow table with columns vocabulary, value, id."""
    import pyarrow.compute as pc

    grouped = {}
    for name in pc.unique(rows.column("vocabulary")).to_pylist():
        part = rows.filter(pc.equal(rows.column("vocabulary"), name))
        grouped[name] = dict(zip(part.column("value").to_pylist(), part.column("id").to_pylist()))
    return grouped
