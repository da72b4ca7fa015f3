"""Where a file or table lives, and how Python code (not Spark) reaches it.

One location string names data everywhere in the pipeline: a plain path
(`/data/lake/examples`), a `file://` URI, or an object-store URI (`s3://bucket/key`,
`s3a://bucket/key`: Spark needs `s3a://`; Python readers take either). This module
turns a location into a `pyarrow.fs` filesystem + path (pyarrow's own S3 client, so
no extra package and the same reader petastorm and pyarrow.parquet already use),
and into what delta-rs needs (a URI and storage options).

Object-store settings come from the environment, as for every AWS client:
`AWS_ENDPOINT_URL` (or `AWS_ENDPOINT_URL_S3`) for an S3-compatible server,
`AWS_REGION`, and credentials from the default chain (`AWS_ACCESS_KEY_ID` /
`AWS_SECRET_ACCESS_KEY`, `~/.aws/credentials`, an instance profile). Nothing here
takes or prints a credential.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path
from typing import Iterator, Sequence
from urllib.parse import unquote, urlparse

from ple_runtime.errors import StageError

S3_SCHEMES = ("s3", "s3a", "s3n")


class StorageError(StageError, ValueError):
    """A location cannot be reached as given; the message names it and says why."""


def scheme(location: str) -> str:
    """'' for a plain path, else the URI scheme ('file', 's3a', ...)."""
    return urlparse(location).scheme.lower() if "://" in location or location.startswith("file:") else ""


def is_local(location: str) -> bool:
    return scheme(location) in ("", "file")


def local_path(location: str) -> str:
    """The absolute local path of a plain path or a file: URI."""
    if not is_local(location):
        raise StorageError(f"{location} is not on the local filesystem")
    path = unquote(urlparse(location).path) if location.startswith("file:") else location
    return str(Path(path).resolve())


def join(location: str, *parts: str) -> str:
    """`location`/part/... keeping a URI's scheme and authority (Path() would drop a '/')."""
    if is_local(location) and not location.startswith("file:"):
        return str(Path(location, *parts))
    return posixpath.join(location.rstrip("/"), *parts)


def _endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def _region() -> str | None:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")


def _s3(endpoint: str | None, region: str | None):
    from pyarrow import fs

    options = {}
    if endpoint:
        parsed = urlparse(endpoint)
        options.update(endpoint_override=parsed.netloc or parsed.path, scheme=parsed.scheme or "https")
    if region:
        options["region"] = region
    return fs.S3FileSystem(**options)


def filesystem(location: str):
    """(pyarrow.fs.FileSystem, path inside it) for a path or URI."""
    from pyarrow import fs

    kind = scheme(location)
    if kind in ("", "file"):
        return fs.LocalFileSystem(), local_path(location)
    if kind in S3_SCHEMES:
        parsed = urlparse(location)
        if not parsed.netloc:
            raise StorageError(f"{location} names no bucket (expected {kind}://BUCKET/KEY)")
        return _s3(_endpoint(), _region()), f"{parsed.netloc}{parsed.path}".rstrip("/")
    try:  # gs://, hdfs://, ...: whatever this pyarrow build supports
        return fs.FileSystem.from_uri(location)
    except Exception as err:  # noqa: BLE001 - pyarrow raises ArrowInvalid/ArrowNotImplementedError/OSError
        raise StorageError(f"cannot open {location}: {err}") from err


def to_uri(location: str) -> str:
    """A URI for Python readers (pyarrow, delta-rs): s3a:// and s3n:// become s3://,
    local paths become absolute paths (delta-rs and pyarrow take them as they are)."""
    kind = scheme(location)
    if kind in ("", "file"):
        return local_path(location)
    if kind in S3_SCHEMES:
        return "s3://" + location.split("://", 1)[1]
    return location


def delta_rs_storage_options(location: str) -> dict[str, str] | None:
    """Options for delta-rs (object_store) matching `filesystem()`; credentials are left
    to delta-rs's own environment lookup."""
    if scheme(location) not in S3_SCHEMES:
        return None
    options: dict[str, str] = {}
    endpoint = _endpoint()
    if endpoint:
        options["AWS_ENDPOINT_URL"] = endpoint
        options["AWS_ALLOW_HTTP"] = str(endpoint.startswith("http://")).lower()
    region = _region()
    if region:
        options["AWS_REGION"] = region
    return options


def read_parquet(locations, columns: list[str]):
    """`columns` of the given Parquet files (paths or URIs) as one pyarrow Table. A file that
    lacks a column raises KeyError naming the file, the missing and the present columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for location in locations:
        source, path = filesystem(location)
        present = pq.read_schema(path, filesystem=source).names
        missing = [c for c in columns if c not in present]
        if missing:
            raise KeyError(f"{location} lacks columns {missing}; it has {sorted(present)}")
        tables.append(pq.read_table(path, columns=columns, filesystem=source))
    return pa.concat_tables(tables, promote_options="default") if tables else pa.table({c: [] for c in columns})


def _rebatched(tables: Iterator, rows: int) -> Iterator:
    """pyarrow tables of any sizes -> tables of exactly `rows` rows (the last one shorter)."""
    import pyarrow as pa

    pending: list = []
    held = 0
    for table in tables:
        if table.num_rows == 0:
            continue
        pending.append(table)
        held += table.num_rows
        while held >= rows:
            whole = pa.concat_tables(pending, promote_options="default") if len(pending) > 1 else pending[0]
            yield whole.slice(0, rows)
            rest = whole.slice(rows)
            pending, held = ([rest], rest.num_rows) if rest.num_rows else ([], 0)
    if held:
        yield pa.concat_tables(pending, promote_options="default") if len(pending) > 1 else pending[0]


def parquet_batches(locations: Sequence[str], columns: list[str], rows: int) -> Iterator:
    """`columns` of the Parquet files, in file order, as pandas frames of `rows` rows (the last shorter), read
    one Parquet batch at a time: memory is a batch's, whatever the files' size.
    A file that lacks a column raises KeyError naming it (as `read_parquet`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def tables():
        for location in locations:
            source, path = filesystem(location)
            with source.open_input_file(path) as handle:
                parquet = pq.ParquetFile(handle)
                present = parquet.schema_arrow.names
                missing = [c for c in columns if c not in present]
                if missing:
                    raise KeyError(f"{location} lacks columns {missing}; it has {sorted(present)}")
                for batch in parquet.iter_batches(batch_size=rows, columns=columns):
                    yield pa.Table.from_batches([batch])

    for table in _rebatched(tables(), rows):
        yield table.to_pandas()
