"""Compatibility import: the model file format lives in `ple_model.model_file` now."""

from ple_model.model_file import MODEL_FORMAT, LoadedModel, load_model, save_model  # noqa: F401

__all__ = ["MODEL_FORMAT", "LoadedModel", "load_model", "save_model"]
