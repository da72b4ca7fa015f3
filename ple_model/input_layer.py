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

Open vocabularies (`hash_buckets: B` in the spec): a raw id x != 0 goes to
bucket 1 + h(x) mod (B - 1), with r = x mod P, P = 2^31 - 1, and
h(x) = (a r^2 + b r + c) mod P (a degree-2 polynomial hash, constants fixed per
feature from its name); 0 stays 0 (null / OOV / padding). Degree 2, not the
linear (a r + b) mod P: with one fixed `a` a linear hash maps CONSECUTIVE ids
(vocabulary indices are consecutive) onto a lattice that left 89% of buckets
empty in a measurement (20k ids, 10k buckets), the quadratic one spreads them
like random assignment (docs/MODEL.md). The hash is part of the model, not of
the table: the exported TorchScript/ONNX graph hashes exactly as training did
(integer mod/mul/add only; every product has factors < 2^31, so no int64
overflow), the table keeps raw ids, and the bucket count can change without
re-extracting.

Sparse gradients: `set_sparse_gradients(model, True)` makes every table's
backward a sparse tensor holding only the rows a batch touched (what
sparse-aware optimizers and a touched-rows gradient exchange need). Off by
default; it changes no forward result.
"""

from __future__ import annotations

import hashlib
import math
from typing import Dict, List, Sequence, Tuple

import torch
from torch import Tensor, nn

from .spec import FeatureSpec, ModelSpec

HASH_PRIME = 2**31 - 1


def hash_constants(feature_name: str) -> Tuple[int, int, int]:
    """(a, b, c) of the feature's hash, 1 <= a < P, 0 <= b, c < P, fixed by the feature's name."""
    digest = hashlib.sha256(f"ple-hash:{feature_name}".encode()).digest()
    a = 1 + int.from_bytes(digest[:8], "little") % (HASH_PRIME - 1)
    return a, int.from_bytes(digest[8:16], "little") % HASH_PRIME, int.from_bytes(digest[16:24], "little") % HASH_PRIME


def hash_buckets_of(ids: Tensor, a: Tensor, b: Tensor, c: Tensor, buckets: Tensor) -> Tensor:
    """Raw ids -> buckets in [1, buckets) (0 stays 0); a, b, c, buckets broadcast against ids."""
    # 2147483647 = HASH_PRIME (a literal: TorchScript cannot read module-level ints).
    r = torch.remainder(ids, 2147483647)
    square = torch.remainder(r * r, 2147483647)
    mixed = torch.remainder(torch.remainder(square * a, 2147483647) + r * b + c, 2147483647)
    bucket = torch.remainder(mixed, buckets - 1) + 1
    return torch.where(ids == 0, torch.zeros_like(ids), bucket)


class _EmbeddingTable(nn.Module):
    """Shared by the two id-feature modules: the table, the id -> row rule, sparse gradients."""

    def __init__(self, features: Sequence[FeatureSpec], rows: int, dim: int):
        super().__init__()
        self.table = nn.Parameter(_embedding_init(rows, dim))
        self.sparse_gradients: bool = False
        buckets = [int(f.hash_buckets or 2) for f in features]  # 2 for unhashed: never used, never / 0
        constants = [hash_constants(f.name) if f.hash_buckets else (1, 0, 0) for f in features]
        self.any_hashed: bool = any(f.hash_buckets for f in features)
        # Derived from the spec: not persistent, so model files from before hashing existed still load.
        self.register_buffer("is_hashed", torch.tensor([bool(f.hash_buckets) for f in features]), persistent=False)
        self.register_buffer("hash_buckets", torch.tensor(buckets, dtype=torch.long), persistent=False)
        self.register_buffer("hash_a", torch.tensor([c[0] for c in constants], dtype=torch.long), persistent=False)
        self.register_buffer("hash_b", torch.tensor([c[1] for c in constants], dtype=torch.long), persistent=False)
        self.register_buffer("hash_c", torch.tensor([c[2] for c in constants], dtype=torch.long), persistent=False)

    def rows(self, ids: Tensor, in_vocab: Tensor) -> Tensor:
        """ids (batch, F) -> rows of their feature's part of the table: OOV -> 0, hashed -> bucket."""
        rows = torch.where(in_vocab, ids, torch.zeros_like(ids))
        if self.any_hashed:
            hashed = hash_buckets_of(ids, self.hash_a, self.hash_b, self.hash_c, self.hash_buckets)
            rows = torch.where(self.is_hashed, hashed, rows)
        return rows

    def lookup(self, rows: Tensor) -> Tensor:
        return nn.functional.embedding(rows, self.table, sparse=self.sparse_gradients)


class CategoricalGroup(_EmbeddingTable):
    """All categorical features of one embedding_dim: one table, an offset per feature."""

    def __init__(self, features: Sequence[FeatureSpec], dim: int):
        vocab_sizes = [int(f.vocab_size) for f in features]
        super().__init__(features, sum(vocab_sizes), dim)
        self.names: List[str] = [f.name for f in features]
        offsets = [0] + list(_cumsum(vocab_sizes))[:-1]
        self.register_buffer("offsets", torch.tensor(offsets, dtype=torch.long))
        self.register_buffer("vocab_sizes", torch.tensor(vocab_sizes, dtype=torch.long))

    def forward(self, features: Dict[str, Tensor]) -> Tensor:
        embedded = self.embedded(features)
        return embedded.reshape(embedded.shape[0], -1)

    def embedded(self, features: Dict[str, Tensor]) -> Tensor:
        """(batch, n_features, dim): each feature's row of the table."""
        ids = torch.stack([features[name].reshape(-1).long() for name in self.names], dim=1)
        in_vocab = (ids >= 0) & (ids < self.vocab_sizes)
        return self.lookup(self.rows(ids, in_vocab) + self.offsets)


class TaskIdBias(CategoricalGroup):
    """Per-task id biases (the "wide" part of a ranker): one scalar per (id, task) for each named
    categorical feature, summed over the features and added to each task's output.

    The table has K columns (one per task) and starts at zero, so a model with biases starts out
    computing what the model without them does. It is an embedding table like the others: OOV ids
    go to row 0, hashed features hash, sparse gradients and the embedding optimizer apply to it.
    """

    def __init__(self, spec: ModelSpec, feature_names: Sequence[str], num_tasks: int):
        features = _bias_features(spec, feature_names)
        super().__init__(features, num_tasks)
        with torch.no_grad():
            self.table.zero_()

    def forward(self, features: Dict[str, Tensor]) -> Tensor:
        """(batch, K): task k's summed bias."""
        return self.embedded(features).sum(dim=1)   # (batch, n_features, K) summed over the features


def _bias_features(spec: ModelSpec, feature_names: Sequence[str]) -> List[FeatureSpec]:
    if isinstance(feature_names, str) or not all(isinstance(n, str) for n in feature_names):
        raise ValueError(f"task_bias_features must be a list of feature names, got {feature_names!r}")
    by_name = {f.name: f for f in spec.features}
    categorical = [f.name for f in spec.features if f.type == "categorical"]
    wrong = [n for n in feature_names if n not in categorical]
    if wrong:
        raise ValueError(f"task_bias_features {wrong}: not categorical features of the spec; "
                         f"categorical features are {categorical}")
    if len(set(feature_names)) != len(feature_names):
        raise ValueError(f"task_bias_features has duplicates: {list(feature_names)}")
    # In spec order: the table's layout (offset per feature) follows the spec, as in FeatureInput.
    return [by_name[n] for n in categorical if n in set(feature_names)]


class MultiCategoricalFeature(_EmbeddingTable):
    """A fixed-length id array, mean-pooled over its non-padding ids."""

    def __init__(self, feature: FeatureSpec):
        super().__init__([feature], int(feature.vocab_size), int(feature.embedding_dim))
        self.name = feature.name
        self.vocab_size = int(feature.vocab_size)

    def forward(self, features: Dict[str, Tensor]) -> Tensor:
        ids = features[self.name].long()
        rows = self.rows(ids, (ids > 0) & (ids < self.vocab_size))
        present = rows > 0
        embedded = self.lookup(rows)  # (batch, max_len, dim)
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
            self.categorical_groups.append(CategoricalGroup([f for f in categorical if f.embedding_dim == dim], dim))
        self.multi_categorical = nn.ModuleList([
            MultiCategoricalFeature(f) for f in spec.features if f.type == "multi_categorical"])
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


def embedding_tables(module: nn.Module) -> List[Tuple[str, nn.Parameter]]:
    """(name, table) of every embedding table in a model (the rows a batch touches sparsely)."""
    return [(f"{name}.table" if name else "table", sub.table) for name, sub in module.named_modules()
            if isinstance(sub, _EmbeddingTable)]


def set_sparse_gradients(module: nn.Module, enabled: bool) -> None:
    """Make every embedding table of a model produce sparse (touched rows only) or dense gradients."""
    for sub in module.modules():
        if isinstance(sub, _EmbeddingTable):
            sub.sparse_gradients = bool(enabled)


def _embedding_init(rows: int, dim: int) -> Tensor:
    # std 1/sqrt(dim): each embedding has about unit norm, the scale the
    # kaiming-initialised experts that read it expect.
    return torch.randn(rows, dim).div_(math.sqrt(dim))  # in place: no second table-sized buffer


def _cumsum(values):
    total = 0
    for value in values:
        total += value
        yield total
