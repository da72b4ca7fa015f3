"""Evaluation scores the day batch by batch (evaluation/streaming.py) and gives the figures the in-memory
path gave: the reference below is that path (the whole day in pandas, every model predicted on it)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evaluation.comparison import ranking_utility
from evaluation.evaluate import ScoringOptions, evaluation_record, evaluate_on_snapshot, predict_model
from model_registry.model_refs import load_or_fail
from model_registry.registry import registry_settings
from evaluation.snapshot_rows import read_date_snapshot
from ple_runtime.snapshot import resolve_date_snapshot
from evaluation.streaming import CompactStore, DayArrays
from ple_runtime.arrow_storage import parquet_batches
from ple_model import model_inputs
from ple_model.model_inputs import source_columns

from evaluation_tables import DATES, ROWS_PER_DAY


def _in_memory_record(snapshot, keyed_models, options):
    """The pre-streaming evaluation: one pandas frame of the day, model_inputs and predict over all of it."""
    spec = keyed_models[0][1].spec
    columns = [c for _, m in keyed_models for c in source_columns(m.spec)] + ["user_idx", "play", "share"]
    frame = read_date_snapshot(snapshot, columns, "arrow")
    _, labels, masks = model_inputs(frame, spec)
    keyed = [(key, predict_model(model, frame, options, set(frame.columns))) for key, model in keyed_models]
    day = DayArrays(rows=len(frame), labels={"candidate": labels}, masks={"candidate": masks}, predictions={},
                    gates={}, users=frame["user_idx"].to_numpy(), utility=ranking_utility(frame, spec, options.ranking))
    return evaluation_record(snapshot, keyed, day, options)


def _figures(record):
    """The record without how it was computed (batch size, bytes kept, spill) and how long it took."""
    kept = json.loads(json.dumps({k: v for k, v in record.items() if k != "scoring"}, default=str))
    kept["uncertainty"].pop("seconds")
    return kept


@pytest.fixture(scope="module")
def models(lake_root, trained_models, tmp_path_factory):
    settings = registry_settings(str(lake_root))
    workdir = tmp_path_factory.mktemp("streaming_models")
    return [("candidate", load_or_fail(str(trained_models["ple"]), settings, workdir, "cpu")),
            ("single_task/0", load_or_fail(str(trained_models["single_task"]), settings, workdir, "cpu")),
            ("compare/0", load_or_fail(str(trained_models["mmoe"]), settings, workdir, "cpu"))]


@pytest.mark.parametrize("memory_budget_mb", [None, 0], ids=["in-memory", "spilled"])
def test_streamed_figures_equal_the_in_memory_path(lake_root, models, memory_budget_mb):
    table = str(lake_root / "lake" / "examples")
    snapshot = resolve_date_snapshot(table, DATES[1])
    # 3 batches of 192 rows (3 forward passes of 64), cut across the day's files; resamples kept small.
    options = ScoringOptions(batch_size=64, rows_per_batch=150, memory_budget_mb=memory_budget_mb)
    options.uncertainty = options.uncertainty.model_copy(update={"resamples": 50})
    streamed = evaluate_on_snapshot(snapshot, models[0][1], single_task=[models[1][1]], compare=[models[2][1]],
                                    options=options)
    reference = _in_memory_record(resolve_date_snapshot(table, DATES[1]), models, options)

    assert _figures(streamed) == _figures(reference)   # every figure, interval and gate usage, exactly
    assert streamed["model"]["tasks"]["play"]["count"] == ROWS_PER_DAY
    assert streamed["model"]["ranking"]["ndcg"] > 0 and streamed["mtl_gain"]["gauc_gain"]
    scoring = streamed["scoring"]
    assert scoring["rows_per_batch"] == 192 and scoring["spilled"] is (memory_budget_mb == 0)
    # Kept per row: 3 tasks x (float32 label + bool mask), 3 models x 3 tasks x float32 prediction,
    # int64 user id, float64 utility.
    assert scoring["compact_bytes_per_row"] == 3 * (4 + 1) + 3 * 3 * 4 + 8 + 8


def test_batches_have_the_asked_rows_across_files(lake_root):
    snapshot = resolve_date_snapshot(str(lake_root / "lake" / "examples"), DATES[0])
    whole = read_date_snapshot(snapshot, ["user_idx", "play"], "arrow")
    batches = list(parquet_batches(snapshot.files, ["user_idx", "play"], 96))
    assert [len(b) for b in batches] == [96] * (ROWS_PER_DAY // 96) + [ROWS_PER_DAY % 96]
    glued = np.concatenate([b["user_idx"].to_numpy() for b in batches])
    assert np.array_equal(glued, whole["user_idx"].to_numpy())
    with pytest.raises(KeyError, match="lacks columns \\['nope'\\]"):
        next(parquet_batches(snapshot.files, ["user_idx", "nope"], 96))


def test_arrays_spill_to_files_past_the_budget(tmp_path):
    with CompactStore(memory_budget_bytes=100, directory=str(tmp_path)) as store:
        values = store.array(("prediction", "m", "play"), np.float32)
        for start in range(0, 60, 20):
            values.append(np.arange(start, start + 20, dtype=np.float32))
            store.check_budget()
        assert store.spilled and values.chunks == [] and values.path.stat().st_size == 60 * 4
        whole = values.finish()
        assert isinstance(whole, np.memmap) and np.array_equal(whole, np.arange(60, dtype=np.float32))
        with pytest.raises(ValueError, match="prediction/m/play: a batch has values of type complex128"):
            values.append(np.ones(2, dtype=np.complex128))
    assert not any(tmp_path.iterdir())  # the files go with the store
