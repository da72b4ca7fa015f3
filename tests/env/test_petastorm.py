"""Petastorm reads the Parquet files of a Spark-written Delta table, sharded."""

import numpy as np
from petastorm import make_batch_reader


def _read_shard(urls, shard, shard_count):
    # As the training job does: petastorm 0.13.1's thread pool can end a reader over
    # a few row groups with zero rows (a race; see training/petastorm_fix.py).
    from training.petastorm_fix import install

    install()
    ids = []
    with make_batch_reader(urls, cur_shard=shard, shard_count=shard_count, num_epochs=1,
                           shuffle_row_groups=False, workers_count=1) as reader:
        for batch in reader:
            ids.extend(batch.id.tolist())
    return ids


def test_sharded_reads_are_disjoint_and_cover_every_row(spark, tmp_path):
    path = str(tmp_path / "table")
    rows = 10_000
    (spark.range(rows).selectExpr("id", "cast(id % 7 as double) as x")
        .repartition(6).write.format("delta").save(path))
    # A Delta table's current files, as Delta itself lists them.
    urls = ["file://" + f.removeprefix("file:") for f in spark.read.format("delta").load(path).inputFiles()]
    assert len(urls) == 6

    shard_0 = _read_shard(urls, 0, 2)
    shard_1 = _read_shard(urls, 1, 2)

    assert shard_0 and shard_1, "both shards must get rows"
    assert not set(shard_0) & set(shard_1), "shards overlap"
    assert np.array_equal(np.sort(shard_0 + shard_1), np.arange(rows)), "shards together must cover every row once"
