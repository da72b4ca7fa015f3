"""Training's reader holds a bounded number of rows whatever the table's row groups: the default shuffling
buffer is capped (`shuffle_buffer_max_rows`) and the reader's results queue is sized in rows
(`reader_queue_rows`), and a queue of one row group still reads every row exactly once."""

from __future__ import annotations

import json

import training_tables as synth

from ple_model import ModelSpec
from training.data import DeterministicBatches, auto_shuffle_buffer, reader_queue_size, shard_layout
from ple_runtime.snapshot import resolve_parquet_snapshot


def test_buffer_and_queue_are_bounded_in_rows_and_every_row_is_read_once(tmp_path):
    synth.write_parquet_folder(synth.make_rows(1200, 1), tmp_path / "train", files=2, row_group_size=200)
    urls = resolve_parquet_snapshot(str(tmp_path / "train")).urls
    layout = shard_layout(urls, 1)
    assert layout.num_row_groups == 6 and layout.largest_row_group == 200
    # Default: 4 row groups (>= 20000 rows), at most the shard; the cap applies below both.
    assert auto_shuffle_buffer(layout, 0) == 1200 and auto_shuffle_buffer(layout, 0, maximum=500) == 500
    assert reader_queue_size(layout, 1, None) == 4 and reader_queue_size(layout, 1, 450) == 2
    assert reader_queue_size(layout, 1, 10) == 1 and reader_queue_size(layout, 8, 10**9) == 16

    spec = json.loads(json.dumps(synth.SPEC))
    spec["features"][0]["vocab_size"] = synth.USERS + 1
    source = DeterministicBatches(urls, ModelSpec.model_validate(spec), rank=0, layout=layout, batch_size=100,
                                  seed=3, shuffle=True, shuffle_buffer=auto_shuffle_buffer(layout, 0, maximum=300),
                                  extra_columns=("row_id",), reader_queue_rows=10)
    row_ids = [int(i) for batch in source.batches() for i in batch["row_id"].tolist()]
    assert sorted(row_ids) == list(range(1200)) and row_ids != sorted(row_ids)
