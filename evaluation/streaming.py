"""Scoring a date snapshot batch by batch, keeping only what the exact metrics need.

An evaluation used to read the whole day into pandas (about 2.3-3 KB a row: every column
of the day, every model's features) before scoring. Here the day is read in batches of
`rows_per_batch` rows (`ple_runtime.arrow_storage.parquet_batches`: pyarrow's `iter_batches` over each Parquet file, re-cut so that every
batch but the last has exactly that many rows); each batch is turned into model inputs and
scored by EVERY model (candidate, published, baselines, compared) before the next is read,
and then dropped. What stays, per row, is what AUC/DeLong, GAUC, NDCG, calibration and the
bootstrap are computed from:

- per task of the candidate's spec: the label (float32, as `model_inputs` gives it) and the
  sample-space mask (bool);
- per model and task: the prediction (float32, as the model gives it; a post-hoc calibration
  is applied to the whole array afterwards, as before);
- the user id (its column's integer type, 8 bytes) and the ranking utility (float64).

Those arrays grow in chunks (`GrowingArray`); past `memory_budget_bytes` of them in memory,
every array continues in a file under a temporary directory and is read back as a read-only
`np.memmap` (the page cache, not the heap, then holds it). The metrics are then computed from
those arrays by the same code as before, so they are the numbers the in-memory path gave:
`rows_per_batch` is a multiple of the forward pass's batch size, so every forward pass sees
the same rows, and the gates' usage is averaged over the same per-pass parts.

The Spark reader (used only for tables whose Parquet files are not the table's rows: deletion
vectors, column mapping) still collects the day to the driver and is then cut into batches.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd


DEFAULT_ROWS_PER_BATCH = 65536
DEFAULT_MEMORY_BUDGET_MB = 2048


class CompactStore:
    """Named growing arrays sharing one memory budget; past it, every array spills to a file."""

    def __init__(self, memory_budget_bytes: int | None = None, directory: str | None = None):
        self.memory_budget_bytes = memory_budget_bytes
        self._directory = directory
        self._temporary: tempfile.TemporaryDirectory | None = None
        self.arrays: dict[tuple[str, str, str], GrowingArray] = {}
        self.spilled = False

    def array(self, key: tuple[str, str, str], dtype) -> "GrowingArray":
        """The array of (kind, owner, task), created on first use."""
        if key not in self.arrays:
            self.arrays[key] = GrowingArray("/".join(key), np.dtype(dtype), self)
        return self.arrays[key]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())

    def check_budget(self) -> None:
        """Called after each batch: the first time the arrays pass the budget, all of them move to files."""
        if self.spilled or self.memory_budget_bytes is None or self.nbytes <= self.memory_budget_bytes:
            return
        self.spilled = True
        for array in self.arrays.values():
            array.spill()

    def spill_path(self, name: str) -> Path:
        if self._temporary is None:
            self._temporary = tempfile.TemporaryDirectory(prefix="ple-evaluate-", dir=self._directory)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        return Path(self._temporary.name) / f"{len(self.arrays)}-{safe}.bin"

    def close(self) -> None:
        for array in self.arrays.values():
            array.close()
        self.arrays.clear()
        if self._temporary is not None:
            self._temporary.cleanup()  # memmaps still open keep their pages (Linux unlink semantics)
            self._temporary = None

    def __enter__(self) -> "CompactStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class GrowingArray:
    """A 1-d array appended to in chunks: in memory, or (after `spill`) in a file."""

    name: str
    dtype: np.dtype
    store: CompactStore
    chunks: list[np.ndarray] = field(default_factory=list)
    rows: int = 0
    path: Path | None = None
    _file: Any = None

    @property
    def nbytes(self) -> int:
        return self.rows * self.dtype.itemsize

    def append(self, values: np.ndarray) -> None:
        values = np.asarray(values).reshape(-1)
        if values.dtype != self.dtype and not np.can_cast(values.dtype, self.dtype, casting="same_kind"):
            raise ValueError(f"{self.name}: a batch has values of type {values.dtype}, earlier batches "
                             f"{self.dtype}")
        values = np.ascontiguousarray(values, dtype=self.dtype)
        self.rows += values.size
        if self._file is not None:
            values.tofile(self._file)
        else:
            self.chunks.append(values)

    def spill(self) -> None:
        if self._file is not None or self.dtype.hasobject:  # object ids (strings) stay in memory
            return
        self.path = self.store.spill_path(self.name)
        self._file = open(self.path, "wb")
        for chunk in self.chunks:
            chunk.tofile(self._file)
        self.chunks = []

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def finish(self) -> np.ndarray:
        """The whole array: one in-memory array, or a read-only memmap of the spilled file."""
        if self._file is None:
            whole = np.concatenate(self.chunks) if self.chunks else np.zeros(0, dtype=self.dtype)
            self.chunks = [whole]
            return whole
        self._file.flush()
        if self.rows == 0:
            return np.zeros(0, dtype=self.dtype)
        return np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self.rows,))


# --- reading the snapshot in batches ------------------------------------------------------

def frame_batches(frame: pd.DataFrame, rows: int) -> Iterator[pd.DataFrame]:
    """An in-memory frame cut into batches (the Spark reader's day, or a caller's frame)."""
    for start in range(0, len(frame), rows):
        yield frame.iloc[start:start + rows]


# --- one pass over the day: every model on every batch ------------------------------------

@dataclass
class ScoredModel:
    """What the pass needs of a model: its key, torch module and spec; error set when it cannot score."""

    key: str
    model: Any
    spec: Any
    error: str | None = None
    gate_parts: list = field(default_factory=list)


@dataclass
class DayArrays:
    """The compact arrays of one pass (module doc), keyed as the pass was asked."""

    rows: int
    labels: dict[str, dict[str, np.ndarray]]        # label spec name -> task -> label
    masks: dict[str, dict[str, np.ndarray]]         # label spec name -> task -> bool sample space
    predictions: dict[str, dict[str, np.ndarray]]   # model key -> task -> prediction (models that scored)
    gates: dict[str, list | None]
    users: np.ndarray | None = None
    utility: np.ndarray | None = None
    ranking_note: str | None = None
    compact_bytes: int = 0
    spilled: bool = False
    rows_per_batch: int = 0


@dataclass
class PassSettings:
    batch_size: int = 8192
    device: str = "cpu"
    user_column: str | None = None      # None: no users, no utility
    ranking: Any = None                 # RankingSettings, for the utility
    ranking_spec: Any = None            # the spec whose binary labels make the default utility
    required: tuple[str, ...] = ()      # keys whose failure fails the pass (the candidate)


def score_day(batches: Iterator[pd.DataFrame], models: list[ScoredModel], label_specs: dict[str, Any],
              store: CompactStore, settings: PassSettings) -> DayArrays:
    """Read each batch once, score it with every model, keep the compact arrays (module doc)."""
    rows = 0
    note = None
    for frame in batches:
        rows += len(frame)
        _keep_labels(frame, label_specs, store)
        if settings.user_column is not None:
            note = _keep_users(frame, settings, store, note)
        for scored in models:
            if scored.error is None:
                _keep_predictions(frame, scored, store, settings)
        store.check_budget()
    arrays = {name: array.finish() for name, array in store.arrays.items()}
    failed = {m.key for m in models if m.error is not None}

    def keyed(prefix: str) -> dict[str, dict[str, np.ndarray]]:
        out: dict[str, dict[str, np.ndarray]] = {}
        for (kind, owner, task), values in arrays.items():
            if kind == prefix and owner not in failed:
                out.setdefault(owner, {})[task] = values
        return out

    from ple_model.prediction import average_gate_usage

    predictions = keyed("prediction")
    return DayArrays(rows=rows, labels=keyed("label"), masks=keyed("mask"), predictions=predictions,
                     gates={m.key: average_gate_usage(m.gate_parts) for m in models if m.error is None},
                     users=arrays.get(("users", "", "")), utility=arrays.get(("utility", "", "")), ranking_note=note,
                     compact_bytes=store.nbytes, spilled=store.spilled)


def _keep_labels(frame: pd.DataFrame, label_specs: dict[str, Any], store: CompactStore) -> None:
    from ple_model import model_inputs

    for name, spec in label_specs.items():
        _, labels, masks = model_inputs(frame, spec)
        for task in spec.task_names:
            store.array(("label", name, task), labels[task].dtype).append(labels[task])
            store.array(("mask", name, task), bool).append(masks[task] > 0)


def _keep_users(frame: pd.DataFrame, settings: PassSettings, store: CompactStore, note: str | None) -> str | None:
    from .comparison import ranking_utility

    column = settings.user_column
    if column not in frame.columns:
        return f"the table has no {column!r} column: no GAUC and no per-user ranking metrics"
    users = frame[column]
    if users.isna().any():
        raise ValueError(f"column {column!r} has null user ids: GAUC and NDCG need a user per row")
    values = users.to_numpy()
    dtype = np.int64 if values.dtype.kind in "iub" else (np.float64 if values.dtype.kind == "f" else object)
    store.array(("users", "", ""), dtype).append(values)
    if note is None:  # else the utility's columns were found missing in an earlier batch
        try:
            utility = ranking_utility(frame, settings.ranking_spec, settings.ranking)
        except KeyError as error:
            return str(error).strip("'\"")
        store.array(("utility", "", ""), np.float64).append(utility)
    return note


def _keep_predictions(frame: pd.DataFrame, scored: ScoredModel, store: CompactStore,
                      settings: PassSettings) -> None:
    from ple_model import model_inputs
    from ple_model.prediction import predict

    try:
        features = model_inputs(frame, scored.spec).features
        predictions, _ = predict(scored.model, scored.spec, features, settings.batch_size, settings.device,
                                 with_gates=True, gate_parts=scored.gate_parts)
    except Exception as error:  # noqa: BLE001 (a baseline failing must not hide the candidate's figures)
        scored.error = f"{type(error).__name__}: {error}"
        if scored.key in settings.required:
            raise ValueError(f"cannot score {scored.key}: {scored.error}") from error
        for key in [k for k in store.arrays if k[:2] == ("prediction", scored.key)]:
            del store.arrays[key]
        return
    for task, values in predictions.items():
        store.array(("prediction", scored.key, task), values.dtype).append(values)
