"""Resolve model references (a run folder / model.pt, or a registry version / alias) and load them.

    runs/ple_2026-01-07           a run folder holding model.pt (and run_record.json)
    runs/ple_2026-01-07/model.pt  the file itself
    models:/ple_video/3           version 3 of a registered model
    models:/ple_video@production  the version an alias points at
    @production                   the same, for the configured registered model

Whatever the reference, the model is loaded with `ple_model.model_file.load_model` from a
local model.pt (registry versions are downloaded first; a published bundle
holds model.pt), with the post-hoc calibration the file carries, if any
(ple_model.calibration). `model_id` is a stable identity for tables keyed by
model: `<name>/v<version>` for registry versions, `sha256:<12 hex>` of model.pt
for files.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ple_model.calibration import Calibration, read_calibration
from ple_runtime.lineage import file_sha256
from ple_model.model_file import LoadedModel, load_model

from ple_runtime.errors import StageError

from .registry import RegistrySettings, download_version, get_version, version_by_alias

_VERSION_REF = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)$")
_ALIAS_REF = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[\w.-]+)$")
_SHORT_ALIAS_REF = re.compile(r"^@(?P<alias>[\w.-]+)$")


@dataclass(frozen=True)
class ModelRef:
    text: str
    path: str | None = None
    registered_name: str | None = None
    version: str | None = None
    alias: str | None = None

    @property
    def is_registry(self) -> bool:
        return self.path is None


def parse_model_ref(text: str, default_registered_name: str) -> ModelRef:
    text = str(text).strip()
    if match := _VERSION_REF.match(text):
        return ModelRef(text, registered_name=match["name"], version=match["version"])
    if match := _ALIAS_REF.match(text):
        return ModelRef(text, registered_name=match["name"], alias=match["alias"])
    if match := _SHORT_ALIAS_REF.match(text):
        return ModelRef(text, registered_name=default_registered_name, alias=match["alias"])
    if text.startswith("models:/"):
        raise ValueError(f"model reference {text!r}: expected models:/<name>/<version> or models:/<name>@<alias>")
    return ModelRef(text, path=text)


@dataclass
class ResolvedModel:
    """A loaded model and where it came from."""

    ref: str
    label: str                         # short name for tables and plots
    model_id: str
    loaded: LoadedModel
    model_file: Path
    sha256: str
    registry: dict[str, Any] | None = None   # {name, version, run_id, alias}
    run_record: dict[str, Any] | None = None
    bundle_dir: Path | None = None     # registry versions: the downloaded bundle
    calibration: Calibration | None = None           # applied to its predictions (evaluation and serving)
    calibration_source: dict[str, Any] | None = None  # {"source": "model file"} or where it was fitted
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def spec(self):
        return self.loaded.spec

    @property
    def is_gated(self) -> bool:
        return bool(getattr(self.loaded.model, "gate_layout", None))

    def identity(self) -> dict[str, Any]:
        return {"ref": self.ref, "label": self.label, "model_id": self.model_id, "model_name": self.loaded.model_name,
                "hyperparameters": self.loaded.hyperparameters, "tasks": self.spec.task_names,
                "model_file": str(self.model_file), "sha256": self.sha256, "registry": self.registry,
                "calibration": self.calibration_source}


def _model_file(path: Path) -> Path:
    if path.is_dir():
        for candidate in (path / "model.pt", path / "bundle" / "model.pt"):
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(f"{path} holds no model.pt (expected a training run folder or a bundle)")
    if not path.is_file():
        raise FileNotFoundError(f"model {path} does not exist")
    return path


def _run_record(model_file: Path) -> dict[str, Any] | None:
    record = model_file.parent / "run_record.json"
    if record.is_file():
        try:
            return json.loads(record.read_text())
        except ValueError:
            return None
    return None


def load_model_ref(text: str, settings: RegistrySettings, download_dir: str | Path | None = None,
                   device: str = "cpu") -> ResolvedModel:
    """Resolve and load a model reference (module doc). Raises LookupError / FileNotFoundError."""
    ref = parse_model_ref(text, settings.model_name)
    registry = None
    bundle_dir = None
    if ref.is_registry:
        if ref.alias is not None:
            model_version = version_by_alias(settings, ref.alias, ref.registered_name)
            if model_version is None:
                raise LookupError(f"registered model {ref.registered_name!r} has no alias {ref.alias!r} "
                                  f"at {settings.tracking_uri}")
        else:
            model_version = get_version(settings, ref.registered_name, ref.version)
        target = Path(download_dir or tempfile.mkdtemp(prefix="ple-model-"))
        target = target / f"{ref.registered_name}-v{model_version.version}"
        bundle_dir = download_version(settings, ref.registered_name, model_version.version, target)
        model_file = _model_file(bundle_dir)
        registry = {"name": ref.registered_name, "version": str(model_version.version),
                    "run_id": model_version.run_id, "alias": ref.alias}
        model_id = f"{ref.registered_name}/v{model_version.version}"
        label = f"{ref.registered_name} v{model_version.version}" + (f" (@{ref.alias})" if ref.alias else "")
    else:
        model_file = _model_file(Path(ref.path))
        model_id = None
        parent = model_file.parent.name if model_file.name == "model.pt" else model_file.stem
        label = parent
    loaded = load_model(model_file, map_location=device)
    calibration = read_calibration(str(model_file))
    sha = file_sha256(model_file)
    if model_id is None:
        model_id = f"sha256:{sha[:12]}"
    return ResolvedModel(ref=text, label=label, model_id=model_id, loaded=loaded, model_file=model_file, sha256=sha,
                         registry=registry, run_record=_run_record(model_file), bundle_dir=bundle_dir,
                         calibration=calibration,
                         calibration_source={"source": "model file", "method": calibration.method}
                         if calibration else None)


class ModelNotFound(StageError):
    """A model reference that cannot be resolved or loaded; the message names the reference and why."""


def load_or_fail(ref: str, settings: RegistrySettings, workdir: Path, device: str) -> ResolvedModel:
    """load_model_ref, with the errors a user can fix as ModelNotFound (the message names the reference)."""
    try:
        return load_model_ref(ref, settings, workdir, device)
    except (LookupError, FileNotFoundError, ValueError) as error:
        raise ModelNotFound(f"model {ref!r}: {error}") from None


def load_production(settings: RegistrySettings, alias: str, workdir: Path,
                    device: str) -> tuple[ResolvedModel | None, str | None]:
    """The published model (registry alias), or (None, why there is none)."""
    if not settings.exists():
        return None, f"no registry at {settings.tracking_uri} yet"
    version = version_by_alias(settings, alias)
    if version is None:
        return None, f"registered model {settings.model_name!r} has no @{alias} alias"
    return load_model_ref(f"models:/{settings.model_name}/{version.version}", settings, workdir, device), None


def find_model_files(paths: list[str]) -> list[Path]:
    """Run folders / model.pt files / folders of run folders -> model.pt files (sorted, unique)."""
    found: list[Path] = []
    for text in paths:
        path = Path(text)
        if path.is_file():
            found.append(path)
        elif (path / "model.pt").is_file():
            found.append(path / "model.pt")
        elif path.is_dir():
            found.extend(sorted(path.glob("*/model.pt")))
        else:
            raise FileNotFoundError(f"{path} does not exist")
    return sorted(dict.fromkeys(p.resolve() for p in found))
