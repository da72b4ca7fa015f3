"""The model registry: MLflow (SQLite by default under <data>/registry/, or a tracking server).

    tracking URI   config > $MLFLOW_TRACKING_URI > sqlite:///<data>/registry/mlflow.db
    artifacts      <data>/registry/artifacts for the local SQLite registry; a tracking server
                   (http[s]://) keeps them in its own artifact store (proxied uploads)
    publish lease  registered model `<name>.publish-lease` (publishing/lease.py)

A published version is a run whose artifacts hold one complete bundle under
`bundle/` (logged in ONE `log_artifacts` call from a finished temp folder),
registered as a model version whose source is that folder. The `production`
alias is moved last, so whoever resolves it sees the old version or a complete
new one, never half of one.

Publishers serialise through the registry itself (publishing/lease.py).
Training (warm start), evaluation and publishing all read the registry through
this package (model_registry/), so none of them imports another to find a model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    artifact_location: str | None          # None: the tracking server's default artifact store
    model_name: str = DEFAULT_MODEL_NAME
    experiment: str = EXPERIMENT_NAME

    @property
    def lease_name(self) -> str:
        return f"{self.model_name}.publish-lease"

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
                      artifact_location: str | None = None) -> RegistrySettings:
    registry = Path(Lake(data_dir).registry).resolve()
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{registry / 'mlflow.db'}"
    server = uri.startswith(("http://", "https://"))
    artifacts = artifact_location or (None if server else (registry / "artifacts").as_uri())
    return RegistrySettings(tracking_uri=uri, artifact_location=artifacts, model_name=model_name)


_READY_SQLITE: set[Path] = set()


def client(settings: RegistrySettings):
    from mlflow import MlflowClient

    path = settings.sqlite_path
    if path is None or path in _READY_SQLITE:
        return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    # The first use of a SQLite store creates it and runs MLflow's schema migrations; two processes doing that at
    # once on a new file break each other's migration. A lock file next to the database (local by definition,
    # like the database) serialises that first use in each process; a tracking server migrates on its own.
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.init.lock", timeout=300):
        mlflow_client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
        mlflow_client.search_experiments(max_results=1)
        mlflow_client.search_registered_models(max_results=1)
    _READY_SQLITE.add(path)
    return mlflow_client


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
    except Exception:  # noqa: BLE001 (created meanwhile by another publisher)
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
        if not _already_exists(error):
            raise
    return mlflow_client.create_model_version(settings.model_name, source=f"runs:/{run_id}/{BUNDLE_ARTIFACT_PATH}",
                                              run_id=run_id, tags=tags, description=description)


def move_alias(settings: RegistrySettings, version: str | int, alias: str = DEFAULT_ALIAS) -> None:
    client(settings).set_registered_model_alias(settings.model_name, alias, str(version))


def _already_exists(error: Exception) -> bool:
    return ("RESOURCE_ALREADY_EXISTS" in (getattr(error, "error_code", "") or "")
            or "already exists" in str(error).lower())
