"""<out>/model.pt: a model that loads without the training code's config.

    {"format": "ple-model/1", "model_name": "ple", "hyperparameters": {...},
     "spec": {...filled spec...}, "state_dict": {...}, "metadata": {epoch, metrics, snapshot, ...}}

`load_model(path)` rebuilds it with ple_model.build_model and loads the weights
(evaluate / publish use this).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ple_model import ModelSpec, build_model

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
               hyperparameters: dict[str, Any], metadata: dict[str, Any] | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": MODEL_FORMAT,
        "model_name": model_name,
        "hyperparameters": _json_safe(hyperparameters),
        "spec": spec.model_dump(mode="json"),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metadata": metadata or {},
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> LoadedModel:
    """Load <out>/model.pt (or a run folder holding one) into an eval-mode model."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"
    payload = torch.load(path, map_location=map_location, weights_only=False)
    if payload.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path} is not a {MODEL_FORMAT} file (format {payload.get('format')!r})")
    spec = ModelSpec.model_validate(payload["spec"])
    model = build_model(payload["model_name"], spec, **payload["hyperparameters"])
    model.load_state_dict(payload["state_dict"])
    model.to(map_location).eval()
    return LoadedModel(model=model, spec=spec, model_name=payload["model_name"],
                       hyperparameters=dict(payload["hyperparameters"]), metadata=dict(payload["metadata"]))
