"""A model file (`<run>/model.pt`): a model that loads without the training code or its config.

    {"format": "ple-model/1", "model_name": "ple", "hyperparameters": {...},
     "spec": {...filled spec...}, "state_dict": {...}, "metadata": {epoch, metrics, snapshot, ...}}

`save_model(path, model, spec, name, hyperparameters, metadata)` writes it
(temp file + rename); `load_model(path)` rebuilds the model with
`build_model` and loads the weights (training, evaluate and publish use these).
`read_model_file(path)` returns the raw payload (training merges per-task
weights into an existing file).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .models import build_model
from .spec import ModelSpec

MODEL_FORMAT = "ple-model/1"


@dataclass
class LoadedModel:
    model: torch.nn.Module          # in eval mode
    spec: ModelSpec                 # vocab sizes filled
    model_name: str
    hyperparameters: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def save_model(path: str | Path, model: torch.nn.Module, spec: ModelSpec, model_name: str,
               hyperparameters: dict[str, Any], metadata: dict[str, Any] | None = None,
               state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Write a model file; `state_dict` (default: the model's own) lets a caller save merged weights."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": MODEL_FORMAT,
        "model_name": model_name,
        "hyperparameters": _json_safe(hyperparameters),
        "spec": spec.model_dump(mode="json"),
        "state_dict": {k: v.detach().cpu() for k, v in (state_dict or model.state_dict()).items()},
        "metadata": metadata or {},
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def read_model_file(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The raw payload of a model file (or of the model.pt in a run folder), format checked."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"
    payload = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path} is not a {MODEL_FORMAT} file (format {found!r})")
    return payload


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> LoadedModel:
    """Load <out>/model.pt (or a run folder holding one) into an eval-mode model."""
    payload = read_model_file(path, map_location)
    spec = ModelSpec.model_validate(payload["spec"])
    model = build_model(payload["model_name"], spec, **payload["hyperparameters"])
    model.load_state_dict(payload["state_dict"])
    model.to(map_location).eval()
    return LoadedModel(model=model, spec=spec, model_name=payload["model_name"],
                       hyperparameters=dict(payload["hyperparameters"]), metadata=dict(payload["metadata"]))
