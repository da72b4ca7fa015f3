"""Where the snapshot's Parquet files are read from: the local disk or S3-compatible object storage.

A snapshot's files are `file://` URLs (local tables) or `s3://` / `s3a://`
URLs (tables on object storage). Local files go through Petastorm's own local
filesystem. Remote ones through pyarrow's S3FileSystem (C++ AWS SDK, no s3fs),
handed to Petastorm wrapped as an fsspec filesystem (what its legacy
ParquetDataset code path accepts), and used directly for footers and schemas.

Configuration comes from the environment only, the AWS SDK's usual names, so
no secret ever appears in a command line, a config file or a run record:
- credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN,
  or ~/.aws/credentials, or the instance role (the AWS SDK's default chain;
  this module never reads them);
- endpoint of an S3-compatible server (s3proxy, MinIO, Ceph):
  AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL, e.g. http://127.0.0.1:9000
  (path-style addressing is then used, as those servers expect);
- region: AWS_REGION or AWS_DEFAULT_REGION (default us-east-1).
`describe_s3_settings()` says what is configured without the secrets.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Sequence
from urllib.parse import unquote, urlparse

REMOTE_SCHEMES = ("s3", "s3a")
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


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


def s3_options(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Keyword arguments for pyarrow.fs.S3FileSystem from the environment (credentials left to the AWS SDK)."""
    environ = dict(os.environ if environ is None else environ)
    options = {"region": environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or "us-east-1"}
    endpoint = next((environ[v] for v in ENDPOINT_VARIABLES if environ.get(v)), None)
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        options["endpoint_override"] = parsed.netloc
        options["scheme"] = parsed.scheme
    return options


def describe_s3_settings(environ: dict[str, str] | None = None) -> dict[str, str | bool]:
    """What would be used, for logs and run records: endpoint and region, never the keys."""
    environ = dict(os.environ if environ is None else environ)
    options = s3_options(environ)
    return {"endpoint": f"{options.get('scheme', 'https')}://{options['endpoint_override']}"
            if "endpoint_override" in options else "AWS default",
            "region": options["region"],
            "credentials": "from environment" if environ.get("AWS_ACCESS_KEY_ID") else "AWS SDK default chain"}


@lru_cache(maxsize=4)
def _s3_filesystem(options: tuple[tuple[str, str], ...]):
    import pyarrow.fs

    return pyarrow.fs.S3FileSystem(**dict(options))


def arrow_filesystem(url: str):
    """(pyarrow.fs filesystem, path inside it) for a file:// or s3(a):// URL."""
    parsed = urlparse(url)
    if parsed.scheme in REMOTE_SCHEMES:
        return _s3_filesystem(tuple(sorted(s3_options().items()))), f"{parsed.netloc}{unquote(parsed.path)}"
    import pyarrow.fs

    return pyarrow.fs.LocalFileSystem(), local_path(url)


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
        return _legacy_adapter_class()(_fsspec_s3_class()(arrow_filesystem(urls[0])[0]))


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

    if "://" not in url_or_path:
        return pq.ParquetFile(url_or_path)
    filesystem, path = arrow_filesystem(url_or_path)
    return pq.ParquetFile(filesystem.open_input_file(path))


def local_path(url: str) -> str:
    return unquote(urlparse(url).path) if url.startswith("file:") else url
