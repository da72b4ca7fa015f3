"""Input layer: {feature_name: tensor} -> one dense vector per sample.

- categorical (batch,) int ids: one embedding row each. Ids outside
  [0, vocab_size) are mapped to id 0, the OOV id (torch.where, so the mapping
  exports to ONNX / TorchScript), which lets a model keep serving after the
  vocabulary grew.
- multi_categorical (batch, max_len) int ids: mean of the embeddings of the
  non-zero ids (0 = padding/OOV, excluded; all-padding rows give zeros).
- numeric (batch,) floats: concatenated as they are (feature_eng scales them).

Categorical features with the same embedding_dim share ONE table (rows laid
end to end, an offset per feature) so a batch costs one gather instead of one
per feature. Output order: categorical groups (by dim), multi_categorical,
numeric; `FeatureInput.output_dim == spec.input_dim`.
"""

from __future__ import annotations

import math
from typing import Dict, List

import torch
from torch import Tensor, nn

from .spec import ModelSpec


class CategoricalGroup(nn.Module):
    """All categorical features of one embedding_dim: one table, an offset per feature."""

    def __init__(self, names: List[str], vocab_sizes: List[int], dim: int):
        super().__init__()
        self.names: List[str] = list(names)
        offsets = [0] + list(_cumsum(vocab_sizes))[:-1]
        self.table = nn.Parameter(_embedding_init(sum(vocab_sizes), dim))
        self.register_buffer("offsets", torch.tensor(offsets, dtype=torch.long))
        self.register_buffer("vocab_sizes", torch.tensor(vocab_sizes, dtype=torch.long))

    def forward(self, features: Dict[str, Tensor]) -> Tensor:
        ids = torch.stack([features[name].reshape(-1).long() for name in self.names], dim=1)
        in_vocab = (ids >= 0) & (ids < self.vocab_sizes)
        ids = torch.where(in_vocab, ids, torch.zeros_like(ids)) + self.offsets
        embedded = nn.functional.embedding(ids, self.table)  # (batch, n_features, dim)
        return embedded.reshape(embedded.shape[0], -1)


class MultiCategoricalFeature(nn.Module):
    """A fixed-length id array, mean-pooled over its non-padding ids."""

    def __init__(self, name: str, vocab_size: int, dim: int):
        super().__init__()
        self.name = name
        self.vocab_size = vocab_size
        self.table = nn.Parameter(_embedding_init(vocab_size, dim))

    def forward(self, features: Dict[str, Tensor]) -> Tensor:
        ids = features[self.name].long()
        present = (ids > 0) & (ids < self.vocab_size)
        ids = torch.where(present, ids, torch.zeros_like(ids))
        embedded = nn.functional.embedding(ids, self.table)  # (batch, max_len, dim)
        weights = present.to(embedded.dtype).unsqueeze(-1)
        count = weights.sum(dim=1).clamp_min(1.0)
        return (embedded * weights).sum(dim=1) / count


class FeatureInput(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        spec.check_buildable()
        categorical = [f for f in spec.features if f.type == "categorical"]
        self.categorical_groups = nn.ModuleList()
        for dim in sorted({int(f.embedding_dim) for f in categorical}):
            group = [f for f in categorical if f.embedding_dim == dim]
            self.categorical_groups.append(CategoricalGroup(
                [f.name for f in group], [int(f.vocab_size) for f in group], dim))
        self.multi_categorical = nn.ModuleList([
            MultiCategoricalFeature(f.name, int(f.vocab_size), int(f.embedding_dim))
            for f in spec.features if f.type == "multi_categorical"])
        self.numeric_names: List[str] = [f.name for f in spec.features if f.type == "numeric"]
        self.output_dim = spec.input_dim

    def forward(self, features: Dict[str, Tensor]) -> Tensor:
        parts: List[Tensor] = []
        for group in self.categorical_groups:
            parts.append(group(features))
        for feature in self.multi_categorical:
            parts.append(feature(features))
        if len(self.numeric_names) > 0:
            parts.append(torch.stack(
                [features[name].reshape(-1).to(torch.float32) for name in self.numeric_names], dim=1))
        return torch.cat(parts, dim=1)


def _embedding_init(rows: int, dim: int) -> Tensor:
    # std 1/sqrt(dim): each embedding has about unit norm, the scale the
    # kaiming-initialised experts that read it expect.
    return torch.randn(rows, dim) / math.sqrt(dim)


def _cumsum(values):
    total = 0
    for value in values:
        total += value
        yield total
