"""Petastorm over a pinned file list: sharded, shuffled, deterministic per (seed, epoch).

- `make_batch_reader` reads the snapshot's Parquet files (file:// or s3://
  URLs, see training/petastorm_storage.py), one row group at a time; rank r of N reads
  the row groups whose index (in Petastorm's own order: files as given x row
  groups) is r mod N.
- A petastorm TransformSpec (runs on the reader thread) turns the table's
  columns into what the model needs with `ple_model.model_inputs` (the one
  sample-space rule, shared with evaluation): features cleaned (null
  categorical -> 0, the OOV id; null numeric -> 0.0; id arrays padded to
  max_len), and per task `label__<task>` (float32, 0 where undefined) and
  `mask__<task>` (float32 1/0: the task's sample-space column AND a non-null
  label). Null labels are therefore never learned from. Columns a callback
  asked for (`extra_columns`) pass through unchanged.
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
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import torch

from ple_model import ModelSpec, model_inputs
from ple_model.model_inputs import source_columns as spec_columns

from .petastorm_storage import open_parquet, petastorm_filesystem

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


def source_columns(spec: ModelSpec, extra_columns: Sequence[str] = ()) -> list[str]:
    """Columns read from the table: features, labels, masks, then extra columns (each once)."""
    return list(dict.fromkeys([*spec_columns(spec), *extra_columns]))


def output_columns(spec: ModelSpec, extra_columns: Sequence[str] = ()) -> list[str]:
    names = [*spec.feature_names, *(LABEL_PREFIX + t.name for t in spec.tasks),
             *(MASK_PREFIX + t.name for t in spec.tasks)]
    return list(dict.fromkeys([*names, *extra_columns]))


def make_transform_spec(spec: ModelSpec, extra_columns: Sequence[str] = ()):
    """The reader-thread transform: table columns -> model columns (ple_model.model_inputs)."""
    import pandas as pd
    from petastorm.transform import TransformSpec

    def transform(frame: pd.DataFrame) -> pd.DataFrame:
        features, labels, masks = model_inputs(frame, spec)
        out = {}
        for feature in spec.features:
            values = features[feature.name]
            out[feature.name] = list(values) if values.ndim == 2 else values  # id arrays: one array per row
        for task in spec.tasks:
            out[LABEL_PREFIX + task.name] = labels[task.name]
            out[MASK_PREFIX + task.name] = masks[task.name]
        for column in extra_columns:
            if column not in out:
                out[column] = frame[column].to_numpy()
        return pd.DataFrame(out, index=frame.index)

    edit_fields = [(f.name, np.float32 if f.type == "numeric" else np.int64,
                    (int(f.max_len),) if f.type == "multi_categorical" else (), False) for f in spec.features]
    edit_fields += [(prefix + t.name, np.float32, (), False)
                    for t in spec.tasks for prefix in (LABEL_PREFIX, MASK_PREFIX)]
    return TransformSpec(transform, edit_fields=edit_fields, selected_fields=output_columns(spec, extra_columns))


# --- sharding -----------------------------------------------------------------------

@lru_cache(maxsize=4096)
def _row_group_rows(url: str) -> tuple[int, ...]:
    metadata = open_parquet(url).metadata
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

    urls = normalize_dataset_url_or_urls(list(urls))
    filesystem, paths = get_filesystem_and_path_or_paths(urls, filesystem=petastorm_filesystem(urls))
    with warnings.catch_warnings():  # the legacy dataset is what petastorm itself uses: same pieces, same order
        warnings.simplefilter("ignore", FutureWarning)
        dataset = pq.ParquetDataset(paths, filesystem=filesystem, validate_schema=False, metadata_nthreads=4)
    pieces = load_row_groups(dataset)
    url_of = dict(zip(paths, urls))
    return [(url_of.get(piece.path, piece.path), piece.row_group,
             _row_group_rows(url_of.get(piece.path, piece.path))[piece.row_group]) for piece in pieces]


@dataclass(frozen=True)
class ShardLayout:
    """Who reads what: rows per shard, and how many shards the table can feed."""

    shard_count: int                 # Petastorm shard_count to use (<= world size)
    rows_per_shard: tuple[int, ...]  # one per rank; 0 for ranks beyond shard_count
    num_row_groups: int
    largest_row_group: int = 0

    @property
    def total_rows(self) -> int:
        return sum(self.rows_per_shard)


def shard_layout(urls: Sequence[str], world_size: int) -> ShardLayout:
    pieces = row_groups_in_petastorm_order(urls)
    shard_count = max(1, min(world_size, len(pieces)))
    rows = [0] * world_size
    for index, (_, _, count) in enumerate(pieces):
        rows[index % shard_count] += count
    return ShardLayout(shard_count=shard_count, rows_per_shard=tuple(rows), num_row_groups=len(pieces),
                       largest_row_group=max((count for _, _, count in pieces), default=0))


def auto_shuffle_buffer(layout: ShardLayout, rank: int, row_groups: int = 4, minimum: int = 20000,
                        maximum: int | None = None) -> int:
    """Rows the shuffling buffer holds by default: `row_groups` of the largest row group (>= minimum), at most the
    shard and `maximum` (memory: tables written before extract bounded its row groups have 1M-row groups).

    Petastorm reads one row group after another; the buffer is all that mixes rows ACROSS row
    groups. With a buffer smaller than a row group (the old default 20000 vs. one 20-23k row file per
    day in the demo lake) every batch comes from one or two days, in a per-epoch order, and the
    weights at an epoch's end are tuned to the last days read: measured, the std of the per-batch
    mean of user_hist_impressions_log (which grows day by day) over an epoch was 0.66 with 20000,
    0.068 with 4 row groups, 0.044 with the whole table.
    """
    shard_rows = layout.rows_per_shard[rank] if rank < len(layout.rows_per_shard) else 0
    wanted = max(minimum, row_groups * layout.largest_row_group)
    return min(shard_rows, wanted if maximum is None else min(wanted, maximum))


def reader_queue_size(layout: ShardLayout, reader_workers: int, queue_rows: int | None) -> int:
    """Row groups Petastorm's results queue may hold: `queue_rows` rows of the largest row group, at least 1, at
    most the usual max(4, 2 x workers). Each entry is a decoded row group, so rows, not entries, cost memory."""
    usual = max(4, 2 * reader_workers)
    if queue_rows is None:
        return usual
    return max(1, min(usual, queue_rows // max(1, layout.largest_row_group)))


# --- reading --------------------------------------------------------------------------

class DeterministicBatches:
    """Batches of one shard of one epoch as {column: tensor}; a context manager.

    `limit` batches are yielded at most; `skip` first batches are read and dropped
    (resume inside an epoch). With `infinite=True` the reader loops over the shard
    (used when small shards must keep up with large ones).
    """

    def __init__(self, urls: Sequence[str], spec: ModelSpec, *, rank: int, layout: ShardLayout,
                 batch_size: int, seed: int, shuffle: bool, shuffle_buffer: int = 0,
                 infinite: bool = False, reader_workers: int = 1, extra_columns: Sequence[str] = (),
                 drop_last: bool = True, reader_queue_rows: int | None = None):
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
        self.extra_columns = tuple(extra_columns)
        self.drop_last = drop_last
        self.reader_queue_rows = reader_queue_rows
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
            self.urls, filesystem=petastorm_filesystem(self.urls),
            schema_fields=[f"^{re.escape(c)}$" for c in source_columns(self.spec, self.extra_columns)],
            reader_pool_type="thread", workers_count=self.reader_workers,
            results_queue_size=reader_queue_size(self.layout, self.reader_workers, self.reader_queue_rows),
            seed=self.seed, shuffle_rows=self.shuffle, shuffle_row_groups=self.shuffle,
            num_epochs=None if self.infinite else 1,
            cur_shard=self.rank if sharded else None, shard_count=self.layout.shard_count if sharded else None,
            transform_spec=make_transform_spec(self.spec, self.extra_columns),
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


class Batch(NamedTuple):
    """One batch as a step reads it: tensors on the training device; labels/masks keyed by task."""

    features: dict[str, torch.Tensor]
    labels: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    extra: dict[str, torch.Tensor]   # columns callbacks asked for (on CPU)

    @property
    def rows(self) -> int:
        return len(next(iter(self.labels.values())))


def to_batch(columns: dict[str, torch.Tensor], spec: ModelSpec, device: torch.device | str = "cpu",
             extra_columns: Sequence[str] = ()) -> Batch:
    """A loader batch ({column: tensor}, columns as `make_transform_spec` names them) -> Batch on `device`."""
    non_blocking = torch.device(device).type == "cuda"

    def move(name: str) -> torch.Tensor:
        return columns[name].to(device, non_blocking=non_blocking)

    return Batch(features={name: move(name) for name in spec.feature_names},
                 labels={t.name: move(LABEL_PREFIX + t.name) for t in spec.tasks},
                 masks={t.name: move(MASK_PREFIX + t.name) for t in spec.tasks},
                 extra={name: columns[name] for name in extra_columns})
