"""The feature and task spec: what a model reads and what it predicts.

One YAML file (format in docs/ARCHITECTURE.md) is the contract between a table
and a model: feature names and label/mask names are column names.

    spec = ModelSpec.from_yaml("conf/video_spec.yaml")
    spec = spec.with_vocab_sizes({"user_idx": 5012})   # filled by the train job
    spec.check_buildable()                              # build_model calls this
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

FEATURE_TYPES = ("categorical", "numeric", "multi_categorical")
TASK_TYPES = ("binary", "regression")


class SpecError(ValueError):
    """A spec cannot be used (for example a vocab_size is still missing at build time)."""


def _type_validator(allowed: tuple[str, ...], kind: str):
    # A plain Literal gives pydantic's generic message; this names the field and
    # lists the allowed values, which is what someone editing YAML needs.
    def check(value: Any) -> Any:
        if value not in allowed:
            raise ValueError(f"unknown {kind} type {value!r}; expected one of {list(allowed)}")
        return value

    return check


class FeatureSpec(BaseModel):
    """One input column."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    type: Literal["categorical", "numeric", "multi_categorical"]
    # Number of ids, including id 0 (OOV / padding). None only in templates:
    # then `vocabulary` names the vocabulary the train job reads the size from.
    vocab_size: int | None = None
    vocabulary: str | None = None
    embedding_dim: int | None = None
    # multi_categorical only: the fixed array length of the column.
    max_len: int | None = None
    # Open vocabularies: hash each raw id into this many embedding rows (bucket 0 stays
    # the null/OOV/padding id 0). The table then has `hash_buckets` rows whatever the id
    # space; vocab_size is set to it. See ple_model/input_layer.py and docs/MODEL.md.
    hash_buckets: int | None = None

    _check_type = field_validator("type", mode="before")(_type_validator(FEATURE_TYPES, "feature"))

    @model_validator(mode="before")
    @classmethod
    def _hashed_table_size(cls, data: Any) -> Any:
        # A hashed feature's table has hash_buckets rows: that IS its vocab_size.
        if isinstance(data, dict) and data.get("hash_buckets") is not None:
            size = data.get("vocab_size")
            if size is not None and size != data["hash_buckets"]:
                raise ValueError(f"feature {data.get('name')!r}: hash_buckets {data['hash_buckets']} and vocab_size "
                                 f"{size} disagree; give only hash_buckets (the table has that many rows)")
            data = {**data, "vocab_size": data["hash_buckets"]}
        return data

    @field_validator("name")
    @classmethod
    def _non_empty_name(cls, name: str) -> str:
        if not name or not name.strip():
            raise ValueError("feature name must be a non-empty string")
        return name

    @model_validator(mode="after")
    def _check_fields(self) -> "FeatureSpec":
        for field in ("vocab_size", "embedding_dim", "max_len"):
            value = getattr(self, field)
            if value is not None and value <= 0:
                raise ValueError(f"feature {self.name!r}: {field} must be positive, got {value}")
        if self.hash_buckets is not None and self.hash_buckets < 2:
            raise ValueError(f"feature {self.name!r}: hash_buckets must be >= 2 (bucket 0 is the null id), "
                             f"got {self.hash_buckets}")
        if self.type == "numeric":
            extra = [f for f in ("vocab_size", "vocabulary", "embedding_dim", "max_len", "hash_buckets")
                     if getattr(self, f) is not None]
            if extra:
                raise ValueError(f"feature {self.name!r} is numeric and cannot have {extra}")
            return self
        if self.embedding_dim is None:
            raise ValueError(f"feature {self.name!r} ({self.type}) needs an embedding_dim")
        if self.type == "multi_categorical" and self.max_len is None:
            raise ValueError(f"feature {self.name!r} is multi_categorical and needs a max_len")
        if self.type == "categorical" and self.max_len is not None:
            raise ValueError(f"feature {self.name!r} is categorical; max_len is only for multi_categorical")
        if self.vocab_size is None and self.vocabulary is None:
            raise ValueError(
                f"feature {self.name!r} ({self.type}) needs a vocab_size, or a `vocabulary` "
                "naming where the train job reads the size from")
        return self

    @property
    def output_dim(self) -> int:
        """Width this feature adds to the input vector."""
        return 1 if self.type == "numeric" else int(self.embedding_dim)


class TaskSpec(BaseModel):
    """One prediction target."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    type: Literal["binary", "regression"]
    label: str
    # Column holding the task's sample space (Eq. 9): 1 = in the space. None = every row.
    mask: str | None = None
    # Eq. 10: w_k(t) = weight * decay ** epoch.
    weight: float = 1.0
    decay: float = 1.0

    _check_type = field_validator("type", mode="before")(_type_validator(TASK_TYPES, "task"))

    @model_validator(mode="before")
    @classmethod
    def _label_defaults_to_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("label") is None and "name" in data:
            data = {**data, "label": data["name"]}
        return data

    @model_validator(mode="after")
    def _check_fields(self) -> "TaskSpec":
        if not self.name or not self.name.strip():
            raise ValueError("task name must be a non-empty string")
        if self.weight < 0:
            raise ValueError(f"task {self.name!r}: weight must be >= 0, got {self.weight}")
        if not 0.0 < self.decay <= 1.0:
            raise ValueError(f"task {self.name!r}: decay must be in (0, 1], got {self.decay}")
        return self


class ModelSpec(BaseModel):
    """Features and tasks of one model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    features: list[FeatureSpec]
    tasks: list[TaskSpec]

    @model_validator(mode="after")
    def _check_names(self) -> "ModelSpec":
        if not self.features:
            raise ValueError("spec has no features; a model needs at least one input")
        if not self.tasks:
            raise ValueError("spec has no tasks; a model needs at least one task")
        for kind, names in (("feature", [f.name for f in self.features]),
                            ("task", [t.name for t in self.tasks])):
            duplicates = sorted(n for n, c in Counter(names).items() if c > 1)
            if duplicates:
                raise ValueError(f"duplicate {kind} names: {duplicates}")
        feature_names = set(self.feature_names)
        for task in self.tasks:
            # A label that is also an input is a label leak.
            if task.label in feature_names:
                raise ValueError(f"task {task.name!r}: label column {task.label!r} is also an input feature")
            if task.mask is not None and task.mask in feature_names:
                raise ValueError(f"task {task.name!r}: mask column {task.mask!r} is also an input feature")
        return self

    # --- construction -------------------------------------------------------

    @classmethod
    def from_yaml(cls, path: str | Path) -> "ModelSpec":
        with open(path) as handle:
            data = yaml.safe_load(handle)
        if not isinstance(data, dict):
            raise SpecError(f"{path}: expected a mapping with `features` and `tasks`, got {type(data).__name__}")
        return cls.model_validate(data)

    def to_yaml(self, path: str | Path) -> None:
        with open(path, "w") as handle:
            yaml.safe_dump(self.model_dump(exclude_none=True), handle, sort_keys=False)

    def with_vocab_sizes(self, sizes: Mapping[str, int]) -> "ModelSpec":
        """A new spec with the given features' vocab_size set (the spec is immutable)."""
        unknown = sorted(set(sizes) - set(self.feature_names))
        if unknown:
            raise SpecError(f"with_vocab_sizes: unknown features {unknown}; features are {self.feature_names}")
        features = []
        for feature in self.features:
            if feature.name in sizes:
                if feature.type == "numeric":
                    raise SpecError(f"with_vocab_sizes: feature {feature.name!r} is numeric and has no vocabulary")
                if feature.hash_buckets is not None:
                    raise SpecError(f"with_vocab_sizes: feature {feature.name!r} is hashed into "
                                    f"{feature.hash_buckets} buckets; its size does not come from a vocabulary")
                feature = FeatureSpec.model_validate({**feature.model_dump(), "vocab_size": int(sizes[feature.name])})
            features.append(feature)
        return ModelSpec(features=features, tasks=list(self.tasks))

    def with_task_weights(self, weights: Mapping[str, float]) -> "ModelSpec":
        """A new spec with the given tasks' loss `weight` replaced (a run's setting over the spec file's)."""
        unknown = sorted(set(weights) - set(self.task_names))
        if unknown:
            raise SpecError(f"task weights name unknown tasks {unknown}; tasks are {self.task_names}")
        tasks = [TaskSpec.model_validate({**task.model_dump(), "weight": float(weights[task.name])})
                 if task.name in weights else task for task in self.tasks]
        return ModelSpec(features=list(self.features), tasks=tasks)

    def check_buildable(self) -> None:
        """Raise SpecError unless every id feature has a vocab_size."""
        for feature in self.features:
            if feature.type != "numeric" and feature.vocab_size is None:
                raise SpecError(
                    f"feature {feature.name!r} has no vocab_size; fill it before building a model, e.g. "
                    f"spec.with_vocab_sizes({{{feature.name!r}: <size of vocabulary "
                    f"{feature.vocabulary!r}>}})")

    # --- lookups ------------------------------------------------------------

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    @property
    def input_dim(self) -> int:
        """Width of the input vector built by ple_model.input_layer.FeatureInput."""
        return sum(f.output_dim for f in self.features)

    def task(self, name: str) -> TaskSpec:
        for task in self.tasks:
            if task.name == name:
                return task
        raise KeyError(f"unknown task {name!r}; tasks are {self.task_names}")
