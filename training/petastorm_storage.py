"""Reading a snapshot's Parquet files with Petastorm and pyarrow, on local disk or S3-compatible storage.

Where a location lives and how it is reached is `ple_runtime.arrow_storage` (pyarrow's
filesystems; S3 settings from the environment as every AWS client reads them:
`AWS_ENDPOINT_URL[_S3]`, `AWS_REGION`, credentials from the default chain, never
from a command line, a config or a record). This module adds what Petastorm needs
on top of it for `s3://` / `s3a://` files, and `open_parquet` for footers and schemas.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence
from urllib.parse import urlparse

from ple_runtime import arrow_storage

REMOTE_SCHEMES = ("s3", "s3a")


def is_remote_url(url: str) -> bool:
    return urlparse(url).scheme in REMOTE_SCHEMES


def check_urls(urls: Sequence[str]) -> None:
    schemes = {urlparse(u).scheme for u in urls}
    unknown = schemes - {"file", *REMOTE_SCHEMES}
    if unknown:
        raise ValueError(f"cannot read {sorted(unknown)} URLs; supported: file://, s3://, s3a:// "
                         f"(e.g. {next(u for u in urls if urlparse(u).scheme in unknown)})")
    if len(schemes) > 1 or len({urlparse(u).netloc for u in urls}) > 1:
        raise ValueError("a snapshot's files must all live in one filesystem (one scheme and bucket)")


def petastorm_filesystem(urls: Sequence[str]):
    """The `filesystem=` argument for petastorm readers: None (its own) for local files, else S3.

    Petastorm 0.13 reads through pyarrow's LEGACY ParquetDataset (`validate_schema=`),
    which pyarrow 14 only keeps for legacy `pyarrow.filesystem` objects: pyarrow's
    S3FileSystem goes in as fsspec (ArrowFSWrapper) inside a legacy adapter;
    anything else makes pyarrow pick its new dataset API and refuse.
    """
    check_urls(urls)
    if not urls or not is_remote_url(urls[0]):
        return None
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the legacy adapter announces its deprecation
        return _legacy_adapter_class()(_fsspec_s3_class()(arrow_storage.filesystem(urls[0])[0]))


@lru_cache(maxsize=1)
def _legacy_adapter_class():
    import pyarrow.filesystem

    class LegacyFilesystem(pyarrow.filesystem.DaskFileSystem):
        """pyarrow's legacy adapter for fsspec filesystems, with the two checks its base leaves out."""

        def isdir(self, path):
            return self.fs.isdir(path)

        def isfile(self, path):
            return self.fs.isfile(path)

    return LegacyFilesystem


@lru_cache(maxsize=1)
def _fsspec_s3_class():
    """pyarrow's S3FileSystem as an fsspec filesystem answering to s3:// and s3a://.

    Petastorm turns every URL into a path with fsspec's `strip_protocol`, which
    imports the class registered for the scheme (s3fs for s3://) even when a
    filesystem is given. Where s3fs is not installed this class is registered
    for s3/s3a, so stripping works and no s3fs is needed (found against a real
    S3 API server: without it every s3:// read failed with "Install s3fs").
    """
    import importlib.util

    import fsspec
    from fsspec.implementations.arrow import ArrowFSWrapper

    class ArrowS3(ArrowFSWrapper):
        protocol = REMOTE_SCHEMES
        root_marker = ""

    if importlib.util.find_spec("s3fs") is None:
        for scheme in REMOTE_SCHEMES:
            fsspec.register_implementation(scheme, ArrowS3, clobber=True)
    return ArrowS3


def open_parquet(url_or_path: str):
    """pyarrow.parquet.ParquetFile of a local path or a file:// / s3:// URL (footer reads, schemas)."""
    import pyarrow.parquet as pq

    filesystem, path = arrow_storage.filesystem(url_or_path)
    return pq.ParquetFile(filesystem.open_input_file(path))
