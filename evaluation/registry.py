"""The model registry: MLflow (SQLite by default) under <data>/registry/.

    tracking URI   config > $MLFLOW_TRACKING_URI > sqlite:///<data>/registry/mlflow.db
    artifacts      <data>/registry/artifacts (the experiment's artifact location)
    lock file      <data>/registry/publish.lock

A published version is a run whose artifacts hold one complete bundle under
`bundle/` (logged in ONE `log_artifacts` call from a finished temp folder),
registered as a model version whose source is that folder. The `production`
alias is moved last, so whoever resolves it sees the old version or a complete
new one, never half of one.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ple_runtime.lake import Lake

BUNDLE_ARTIFACT_PATH = "bundle"
DEFAULT_MODEL_NAME = "ple_video"
DEFAULT_ALIAS = "production"
EXPERIMENT_NAME = "ple_publish"

# Artifact downloads print tqdm bars by default; job logs do not want them.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@dataclass(frozen=True)
class RegistrySettings:
    tracking_uri: str
    artifact_location: str
    model_name: str = DEFAULT_MODEL_NAME
    lock_file: str | None = None
    experiment: str = EXPERIMENT_NAME

    @property
    def sqlite_path(self) -> Path | None:
        if self.tracking_uri.startswith("sqlite:///"):
            return Path(self.tracking_uri[len("sqlite:///"):])
        return None

    def exists(self) -> bool:
        """False when the default SQLite registry was never created (nothing published yet).

        Checked before any client call: opening a missing SQLite store creates it
        (and runs MLflow's migrations), which a read-only evaluation must not do.
        """
        path = self.sqlite_path
        return path is None or path.is_file()


def registry_settings(data_dir: str, tracking_uri: str | None = None, model_name: str = DEFAULT_MODEL_NAME,
                      artifact_location: str | None = None, lock_file: str | None = None) -> RegistrySettings:
    registry = Path(Lake(data_dir).registry).resolve()
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{registry / 'mlflow.db'}"
    artifacts = artifact_location or (registry / "artifacts").as_uri()
    return RegistrySettings(tracking_uri=uri, artifact_location=artifacts, model_name=model_name,
                            lock_file=lock_file or str(registry / "publish.lock"))


def client(settings: RegistrySettings):
    from mlflow import MlflowClient

    if settings.sqlite_path is not None:
        settings.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)


def _not_found(error: Exception) -> bool:
    code = getattr(error, "error_code", "") or ""
    return "RESOURCE_DOES_NOT_EXIST" in code or "not found" in str(error).lower()


def version_by_alias(settings: RegistrySettings, alias: str = DEFAULT_ALIAS, name: str | None = None):
    """The ModelVersion the alias points at, or None (no registry, no model, no alias)."""
    if not settings.exists():
        return None
    try:
        return client(settings).get_model_version_by_alias(name or settings.model_name, alias)
    except Exception as error:  # noqa: BLE001 (mlflow raises MlflowException subclasses)
        if _not_found(error):
            return None
        raise


def get_version(settings: RegistrySettings, name: str, version: str | int):
    if not settings.exists():
        raise LookupError(f"no model registry at {settings.tracking_uri} (nothing was published yet)")
    try:
        return client(settings).get_model_version(name, str(version))
    except Exception as error:  # noqa: BLE001
        if _not_found(error):
            raise LookupError(f"registered model {name!r} has no version {version} at {settings.tracking_uri}") from None
        raise


def list_versions(settings: RegistrySettings, name: str | None = None) -> list:
    if not settings.exists():
        return []
    return list(client(settings).search_model_versions(f"name='{name or settings.model_name}'"))


def download_version(settings: RegistrySettings, name: str, version: str | int, dst: str | Path) -> Path:
    """Download one version's bundle into dst; returns the bundle folder."""
    import mlflow.artifacts

    model_version = get_version(settings, name, version)
    Path(dst).mkdir(parents=True, exist_ok=True)
    local = mlflow.artifacts.download_artifacts(artifact_uri=model_version.source, dst_path=str(dst),
                                                tracking_uri=settings.tracking_uri)
    return Path(local)


def _experiment_id(mlflow_client, settings: RegistrySettings) -> str:
    experiment = mlflow_client.get_experiment_by_name(settings.experiment)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return mlflow_client.create_experiment(settings.experiment, artifact_location=settings.artifact_location)
    except Exception:  # noqa: BLE001 (created meanwhile by a publisher without the lock, e.g. another host)
        return mlflow_client.get_experiment_by_name(settings.experiment).experiment_id


def register_bundle(settings: RegistrySettings, bundle_dir: str | Path, *, tags: dict[str, str],
                    params: dict[str, Any], metrics: dict[str, float], description: str = "") -> Any:
    """Log the finished bundle in one step and register it as a new version (no alias yet)."""
    mlflow_client = client(settings)
    experiment_id = _experiment_id(mlflow_client, settings)
    run = mlflow_client.create_run(experiment_id, tags={"ple.kind": "publish", **tags})
    run_id = run.info.run_id
    try:
        for key, value in params.items():
            mlflow_client.log_param(run_id, key, str(value)[:6000])
        for key, value in metrics.items():
            mlflow_client.log_metric(run_id, key, float(value))
        mlflow_client.log_artifacts(run_id, str(bundle_dir), BUNDLE_ARTIFACT_PATH)
    except BaseException:
        mlflow_client.set_terminated(run_id, "FAILED")
        raise
    mlflow_client.set_terminated(run_id, "FINISHED")
    try:
        mlflow_client.create_registered_model(settings.model_name)
    except Exception as error:  # noqa: BLE001
        if "RESOURCE_ALREADY_EXISTS" not in (getattr(error, "error_code", "") or "") and "already exists" not in str(error):
            raise
    return mlflow_client.create_model_version(settings.model_name, source=f"runs:/{run_id}/{BUNDLE_ARTIFACT_PATH}",
                                              run_id=run_id, tags=tags, description=description)


def move_alias(settings: RegistrySettings, version: str | int, alias: str = DEFAULT_ALIAS) -> None:
    client(settings).set_registered_model_alias(settings.model_name, alias, str(version))


@contextlib.contextmanager
def publish_lock(settings: RegistrySettings, timeout_s: float = 600.0) -> Iterator[dict[str, float]]:
    """Exclusive lock around gate check + register + alias move; yields {acquired_at, waited_s}.

    `filelock` (an OS-level lock: released by the kernel if the holder dies, so a
    crashed publish never leaves the registry locked). It only serialises
    publishers that share the lock file's filesystem; with a remote tracking
    server and publishers on several hosts, put the lock file on shared storage.
    """
    from filelock import FileLock, Timeout

    path = Path(settings.lock_file or "publish.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), timeout=timeout_s)
    started = time.time()
    try:
        lock.acquire()
    except Timeout:
        raise TimeoutError(f"another publish held {path} for more than {timeout_s:.0f} s") from None
    info = {"acquired_at": time.time(), "waited_s": time.time() - started}
    try:
        yield info
    finally:
        info["released_at"] = time.time()
        lock.release()
