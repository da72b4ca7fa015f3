"""A publish bundle: everything a serving system or an auditor needs, in one folder.

    model.pt               the native model file (ple_model.model_file.load_model reads it)
    model.torchscript.pt   TorchScript (positional features in spec order -> per-task predictions)
    model.onnx             ONNX, same signature
    signature.json         input names/dtypes/shapes, output names and meaning
    spec.yaml              the feature and task spec (vocab sizes filled)
    vocabulary.parquet     the vocabulary table's rows (vocabulary, value, id, ...) at the version the model was
                           trained with (its plan pins it), when the table exists
    config.json            model hyperparameters, the training config (from its run record), the publish config
    metrics.json           the candidate's evaluation, the production comparison and the gate result
    lineage.json           evaluation snapshot (table, date, Delta version), training snapshot, code version
    export.json            what the export checks measured
    manifest.json          sha256 and size of every other file (written last; `verify_bundle` checks it)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ple_runtime.lineage import file_sha256, write_json

MANIFEST = "manifest.json"
REQUIRED_FILES = ("model.pt", "model.torchscript.pt", "model.onnx", "signature.json", "spec.yaml", "config.json",
                  "metrics.json", "lineage.json", "export.json")


def write_manifest(bundle: Path) -> dict[str, Any]:
    files = {str(p.relative_to(bundle)): {"sha256": file_sha256(p), "bytes": p.stat().st_size}
             for p in sorted(bundle.rglob("*")) if p.is_file() and p.name != MANIFEST}
    manifest = {"format": "ple-bundle/1", "files": files}
    write_json(bundle / MANIFEST, manifest)
    return manifest


def verify_bundle(bundle: str | Path) -> list[str]:
    """Problems with a bundle folder (empty list = complete and intact)."""
    bundle = Path(bundle)
    manifest_path = bundle / MANIFEST
    if not manifest_path.is_file():
        return [f"{bundle} has no {MANIFEST}"]
    manifest = json.loads(manifest_path.read_text())
    problems = [f"required file {name} is missing" for name in REQUIRED_FILES if name not in manifest["files"]]
    for name, expected in manifest["files"].items():
        path = bundle / name
        if not path.is_file():
            problems.append(f"{name} is listed in the manifest but missing")
        elif path.stat().st_size != expected["bytes"] or file_sha256(path) != expected["sha256"]:
            problems.append(f"{name} does not match its manifest checksum")
    return problems


def model_vocabulary_version(metadata: dict[str, Any] | None, run_record: dict[str, Any] | None) -> int | None:
    """The vocabulary version a model was trained with: its model file's metadata, else its run record."""
    for pinned in ((metadata or {}).get("vocabulary"), ((run_record or {}).get("vocab") or {}).get("vocabulary_table")):
        if isinstance(pinned, dict) and pinned.get("version") is not None:
            return int(pinned["version"])
    return None


def export_vocabulary(table: str, destination: Path, spark=None, version: int | None = None) -> dict[str, Any] | None:
    """Copy the vocabulary Delta table's rows at `version` (the model's own; None: latest, for models that
    record none) into destination (Parquet); None if no table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ple_runtime.config import absolute_location
    from ple_runtime.snapshot import SnapshotError, is_delta_table, resolve_delta_snapshot

    local, asked = absolute_location(table), version
    if not is_delta_table(local):
        return None
    try:
        snapshot = resolve_delta_snapshot(local, version)
        parts = []
        for file in snapshot.files:
            part = pq.read_table(file.path)
            for column, value in file.partition_values.items():  # partition columns live in the log, not the files
                part = part.append_column(column, pa.array([value] * part.num_rows, pa.string()))
            parts.append(part)
        rows = pa.concat_tables(parts, promote_options="default") if parts else None
        version, how = snapshot.version, "arrow"
    except SnapshotError:
        from ple_runtime.spark import get_spark
        from ple_runtime.snapshot import latest_delta_version

        version = latest_delta_version(local) if version is None else version
        spark = spark or get_spark("ple-publish")
        spark.conf.set("spark.sql.execution.arrow.pyspark.enabled", "true")
        rows = pa.Table.from_pandas(spark.read.format("delta").option("versionAsOf", version).load(table).toPandas(),
                                    preserve_index=False)
        how = "spark"
    pinned_by = "the model's training plan" if asked is not None else "latest (the model records no version)"
    if rows is None:
        return {"table": table, "version": version, "pinned_by": pinned_by, "rows": 0, "file": None}
    pq.write_table(rows, destination)
    return {"table": table, "version": version, "pinned_by": pinned_by, "rows": rows.num_rows,
            "file": destination.name, "reader": how}
