"""Petastorm over a pinned file list: sharded, shuffled, deterministic per (seed, epoch).

- `make_batch_reader` reads the snapshot's Parquet files (file:// URLs), one
  row group at a time; rank r of N reads the row groups whose index (in
  Petastorm's own order: files as given x row groups) is r mod N.
- A petastorm TransformSpec (runs on the reader thread) turns the table's
  columns into what the model needs: features cleaned (null categorical -> 0,
  the OOV id; null numeric -> 0.0), and per task `label__<task>` (float32,
  0 where undefined) and `mask__<task>` (float32 1/0: the task's sample-space
  column AND a non-null label). Null labels are therefore never learned from.
- `BatchedDataLoader(shuffling_queue_capacity=...)` mixes rows across row
  groups. Its buffer draws from torch's GLOBAL generator (torch.randperm);
  `DeterministicBatches` swaps in its own generator state around each batch so
  the data order depends only on (seed, epoch, rank), never on the model's
  own random draws, and replaying k batches after a resume consumes nothing
  of the model's randomness.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from ple_model import ModelSpec

# petastorm 0.13 drives pyarrow's legacy ParquetDataset: one FutureWarning per row group otherwise.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"petastorm(\..*)?$")
warnings.filterwarnings("ignore", category=FutureWarning, message=r".*(legacy|deprecated as of pyarrow).*")
# petastorm hands torch read-only Arrow buffers; the batches are never written to in place.
warnings.filterwarnings("ignore", category=UserWarning, message=r"The given NumPy array is not writable")

LABEL_PREFIX = "label__"
MASK_PREFIX = "mask__"


def epoch_seed(seed: int, epoch: int, purpose: str = "train") -> int:
    """A nonzero 31-bit seed per (seed, epoch): Petastorm treats seed 0/None as 'unseeded'."""
    import hashlib

    digest = hashlib.sha256(f"{seed}:{epoch}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:4], "little") % (2**31 - 1) + 1


def source_columns(spec: ModelSpec, row_id_column: str | None = None) -> list[str]:
    """Columns read from the table: features, labels, masks (each once)."""
    columns: list[str] = []
    for name in [*spec.feature_names, *(t.label for t in spec.tasks),
                 *(t.mask for t in spec.tasks if t.mask), row_id_column]:
        if name and name not in columns:
            columns.append(name)
    return columns


def output_columns(spec: ModelSpec, row_id_column: str | None = None) -> list[str]:
    names = [*spec.feature_names, *(LABEL_PREFIX + t.name for t in spec.tasks),
             *(MASK_PREFIX + t.name for t in spec.tasks)]
    return names + ([row_id_column] if row_id_column else [])


def _as_float(series) -> np.ndarray:
    import pandas as pd

    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def make_transform_spec(spec: ModelSpec, row_id_column: str | None = None):
    """The reader-thread transform: table columns -> model columns (see module doc)."""
    from petastorm.transform import TransformSpec

    def transform(frame):
        import pandas as pd

        out = {}
        for feature in spec.features:
            column = frame[feature.name]
            if feature.type == "numeric":
                out[feature.name] = np.nan_to_num(_as_float(column), nan=0.0).astype(np.float32)
            elif feature.type == "categorical":
                out[feature.name] = np.nan_to_num(_as_float(column), nan=0.0).astype(np.int64)
            else:
                out[feature.name] = column  # fixed-length id arrays pass through
        for task in spec.tasks:
            label = _as_float(frame[task.label])
            in_space = ~np.isnan(label)
            if task.mask is not None:
                in_space &= np.nan_to_num(_as_float(frame[task.mask]), nan=0.0) > 0
            out[LABEL_PREFIX + task.name] = np.where(in_space, label, 0.0).astype(np.float32)
            out[MASK_PREFIX + task.name] = in_space.astype(np.float32)
        if row_id_column:
            out[row_id_column] = frame[row_id_column].to_numpy().astype(np.int64)
        return pd.DataFrame(out, index=frame.index)

    edit_fields = [(f.name, np.float32 if f.type == "numeric" else np.int64, (), False)
                   for f in spec.features if f.type != "multi_categorical"]
    edit_fields += [(prefix + t.name, np.float32, (), False)
                    for t in spec.tasks for prefix in (LABEL_PREFIX, MASK_PREFIX)]
    if row_id_column:
        edit_fields.append((row_id_column, np.int64, (), False))
    return TransformSpec(transform, edit_fields=edit_fields, selected_fields=output_columns(spec, row_id_column))


# --- sharding -----------------------------------------------------------------------

@lru_cache(maxsize=4096)
def _row_group_rows(path: str) -> tuple[int, ...]:
    import pyarrow.parquet as pq

    metadata = pq.ParquetFile(path).metadata
    return tuple(metadata.row_group(i).num_rows for i in range(metadata.num_row_groups))


def row_groups_in_petastorm_order(urls: Sequence[str]) -> list[tuple[str, int, int]]:
    """(path, row group, rows) in the order Petastorm indexes row groups (its sharding unit).

    Uses Petastorm's own `load_row_groups` on the same file list, so the shard
    assignment computed here is the one its readers apply.
    """
    import pyarrow.parquet as pq
    from petastorm.etl.dataset_metadata import load_row_groups
    from petastorm.fs_utils import get_filesystem_and_path_or_paths
    from petastorm.reader import normalize_dataset_url_or_urls

    filesystem, paths = get_filesystem_and_path_or_paths(normalize_dataset_url_or_urls(list(urls)))
    dataset = pq.ParquetDataset(paths, filesystem=filesystem, validate_schema=False, metadata_nthreads=4)
    pieces = load_row_groups(dataset)
    return [(piece.path, piece.row_group, _row_group_rows(piece.path)[piece.row_group]) for piece in pieces]


@dataclass(frozen=True)
class ShardLayout:
    """Who reads what: rows per shard, and how many shards the table can feed."""

    shard_count: int                 # Petastorm shard_count to use (<= world size)
    rows_per_shard: tuple[int, ...]  # one per rank; 0 for ranks beyond shard_count
    num_row_groups: int

    @property
    def total_rows(self) -> int:
        return sum(self.rows_per_shard)


def shard_layout(urls: Sequence[str], world_size: int) -> ShardLayout:
    pieces = row_groups_in_petastorm_order(urls)
    shard_count = max(1, min(world_size, len(pieces)))
    rows = [0] * world_size
    for index, (_, _, count) in enumerate(pieces):
        rows[index % shard_count] += count
    return ShardLayout(shard_count=shard_count, rows_per_shard=tuple(rows), num_row_groups=len(pieces))


# --- reading --------------------------------------------------------------------------

class DeterministicBatches:
    """Batches of one shard of one epoch as {column: tensor}; a context manager.

    `limit` batches are yielded at most; `skip` first batches are read and dropped
    (resume inside an epoch). With `infinite=True` the reader loops over the shard
    (used when small shards must keep up with large ones).
    """

    def __init__(self, urls: Sequence[str], spec: ModelSpec, *, rank: int, layout: ShardLayout,
                 batch_size: int, seed: int, shuffle: bool, shuffle_buffer: int = 0,
                 infinite: bool = False, reader_workers: int = 1, row_id_column: str | None = None,
                 drop_last: bool = True):
        self.urls = list(urls)
        self.spec = spec
        self.rank = rank
        self.layout = layout
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.shuffle_buffer = shuffle_buffer if shuffle else 0
        self.infinite = infinite
        self.reader_workers = reader_workers
        self.row_id_column = row_id_column
        self.drop_last = drop_last
        self._reader = None
        # The shuffling buffer's own torch generator state (see module doc).
        generator = torch.Generator().manual_seed(seed)
        self._rng_state = generator.get_state()

    @property
    def has_data(self) -> bool:
        return self.rank < self.layout.shard_count and self.layout.rows_per_shard[self.rank] > 0

    def __enter__(self) -> "DeterministicBatches":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._reader is not None:
            self._reader.stop()
            self._reader.join()
            self._reader = None

    def _open(self):
        from petastorm import make_batch_reader
        from petastorm.pytorch import BatchedDataLoader

        from .petastorm_fix import install

        install()

        sharded = self.layout.shard_count > 1
        self._reader = make_batch_reader(
            self.urls,
            schema_fields=[f"^{re.escape(c)}$" for c in source_columns(self.spec, self.row_id_column)],
            reader_pool_type="thread", workers_count=self.reader_workers,
            results_queue_size=max(4, 2 * self.reader_workers),
            seed=self.seed, shuffle_rows=self.shuffle, shuffle_row_groups=self.shuffle,
            num_epochs=None if self.infinite else 1,
            cur_shard=self.rank if sharded else None, shard_count=self.layout.shard_count if sharded else None,
            transform_spec=make_transform_spec(self.spec, self.row_id_column),
        )
        return BatchedDataLoader(self._reader, batch_size=self.batch_size,
                                 shuffling_queue_capacity=self.shuffle_buffer)

    def batches(self, limit: int | None = None, skip: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        if not self.has_data:
            return
        loader = iter(self._open())
        produced = 0
        try:
            while limit is None or produced < limit:
                saved = torch.get_rng_state()
                torch.set_rng_state(self._rng_state)
                try:
                    batch = next(loader)
                except StopIteration:
                    return
                finally:
                    self._rng_state = torch.get_rng_state()
                    torch.set_rng_state(saved)
                if self.drop_last and len(next(iter(batch.values()))) < self.batch_size:
                    return
                produced += 1
                if produced > skip:
                    yield batch
        finally:
            self.close()


def split_batch(batch: dict[str, torch.Tensor], spec: ModelSpec, device: torch.device | str = "cpu"):
    """-> (features, labels, masks), every task with a mask (see module doc)."""
    non_blocking = torch.device(device).type == "cuda"
    features = {name: batch[name].to(device, non_blocking=non_blocking) for name in spec.feature_names}
    labels = {t.name: batch[LABEL_PREFIX + t.name].to(device, non_blocking=non_blocking) for t in spec.tasks}
    masks = {t.name: batch[MASK_PREFIX + t.name].to(device, non_blocking=non_blocking) for t in spec.tasks}
    return features, labels, masks


def read_columns(urls: Sequence[str], columns: Sequence[str]) -> dict[str, Any]:
    """Whole columns of a (small) file list as numpy arrays, via pyarrow (vocab fallbacks, tests)."""
    import pyarrow.parquet as pq
    import pyarrow as pa

    tables = [pq.read_table(_path(u), columns=list(columns)) for u in urls]
    table = pa.concat_tables(tables) if tables else None
    return {c: (table.column(c).to_numpy(zero_copy_only=False) if table is not None else np.array([]))
            for c in columns}


def _path(url: str) -> str:
    from urllib.parse import unquote, urlparse

    return unquote(urlparse(url).path) if url.startswith("file:") else url
