"""The table versions registered models pin: what `ple maintain` must not vacuum.

Each published version's bundle carries lineage.json (model_registry/bundle.py): the evaluation
snapshot (table, date, version), the training and validation snapshots from the run record
(table, version) and the vocabulary table version it shipped. Every version of every
registered model counts (not only the aliased one: a rollback moves the alias back to an
older version, which must still evaluate on its own snapshot).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Iterator

from ple_runtime.config import absolute_location
from ple_runtime.maintenance import Pin

from .registry import BUNDLE_ARTIFACT_PATH, RegistrySettings, client

LEASE_SUFFIX = ".publish-lease"


def lineage_pins(model: str, lineage: dict[str, Any], tags: dict[str, str]) -> Iterator[Pin]:
    """(table, version) pairs named by one version's lineage.json (and its tags, for bundles
    whose lineage lacks a section)."""
    evaluation = lineage.get("evaluation_snapshot") or {}
    table, version = evaluation.get("table") or tags.get("ple.eval_table"), evaluation.get("version")
    if version is None and tags.get("ple.eval_table_version", "None") not in ("None", ""):
        version = tags["ple.eval_table_version"]
    if table and version is not None:
        yield Pin(absolute_location(table), int(version), model, "evaluation")
    training = lineage.get("training") or {}
    for role, key in (("train", "train_snapshot"), ("validation", "validation_snapshot"),
                      ("train", "snapshot")):
        snapshot = training.get(key) or {}
        if snapshot.get("table") and snapshot.get("version") is not None:
            yield Pin(absolute_location(snapshot["table"]), int(snapshot["version"]), model, role)
    vocabulary = lineage.get("vocabulary") or {}
    if vocabulary.get("table") and vocabulary.get("version") is not None:
        yield Pin(absolute_location(vocabulary["table"]), int(vocabulary["version"]), model, "vocabulary")


def registered_pins(settings: RegistrySettings) -> list[Pin]:
    """Every pin of every version of every registered model in the registry (none without one)."""
    import mlflow.artifacts

    if not settings.exists():
        return []
    mlflow_client = client(settings)
    pins: set[Pin] = set()
    with tempfile.TemporaryDirectory(prefix="ple-pins-") as workdir:
        for registered in mlflow_client.search_registered_models():
            if registered.name.endswith(LEASE_SUFFIX):
                continue
            for version in mlflow_client.search_model_versions(f"name='{registered.name}'"):
                folder = Path(workdir, registered.name, str(version.version))
                folder.mkdir(parents=True)
                try:
                    path = mlflow.artifacts.download_artifacts(
                        artifact_uri=f"runs:/{version.run_id}/{BUNDLE_ARTIFACT_PATH}/lineage.json",
                        dst_path=str(folder), tracking_uri=settings.tracking_uri)
                    lineage = json.loads(Path(path).read_text())
                except Exception:  # noqa: BLE001 - a bundle without lineage: its tags still pin the evaluation
                    lineage = {}
                pins.update(lineage_pins(f"{registered.name} v{version.version}", lineage, dict(version.tags)))
    return sorted(pins, key=lambda p: (p.table, p.version, p.model, p.role))
