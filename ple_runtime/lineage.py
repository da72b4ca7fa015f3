"""Lineage for reproducibility: which code, which config, which table versions."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

_REPO_ROOT = Path(__file__).resolve().parent.parent


def code_version() -> dict[str, Any]:
    """The git commit of the code that runs (and whether it had local edits).

    $PLE_CODE_VERSION wins: a deployment without a .git folder (a wheel shipped
    to a cluster) sets it at build time.
    """
    if os.environ.get("PLE_CODE_VERSION"):
        return {"commit": os.environ["PLE_CODE_VERSION"], "dirty": None, "source": "PLE_CODE_VERSION"}
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=_REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=_REPO_ROOT,
            capture_output=True, text=True, check=True,
        ).stdout.strip())
        return {"commit": commit, "dirty": dirty, "source": "git"}
    except (OSError, subprocess.CalledProcessError):
        from importlib.metadata import PackageNotFoundError, version

        try:
            return {"commit": None, "dirty": None, "source": f"ple-pipeline {version('ple-pipeline')}"}
        except PackageNotFoundError:
            return {"commit": None, "dirty": None, "source": "unknown"}


def run_context() -> dict[str, Any]:
    """Where and when a run happened."""
    return {
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "code": code_version(),
    }


def write_json(path: str | Path, record: Any) -> Path:
    """Write a record atomically (temp file + rename): readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)
    return path


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes (model files, bundle manifests), read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
