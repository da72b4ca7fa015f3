"""A small learnable multi-task problem as a table (for the training tests and the benchmark).

play ~ Bernoulli(sigmoid(1.5*x1 + user_effect - 0.3)); watch_ratio (regression) is only
defined for played rows (null otherwise, sample space = play); share is a rarer binary.
`oracle_auc` is the AUC of the true play probability on the same rows: the ceiling a
model can reach.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

USERS = 40
TAGS = 20

SPEC = {
    "features": [
        {"name": "user_idx", "type": "categorical", "vocab_size": None, "vocabulary": "user", "embedding_dim": 8},
        {"name": "hour", "type": "categorical", "vocab_size": 24, "embedding_dim": 4},
        {"name": "x1", "type": "numeric"},
        {"name": "x2", "type": "numeric"},
        {"name": "tag_idx", "type": "multi_categorical", "vocab_size": TAGS, "embedding_dim": 4, "max_len": 3},
    ],
    "tasks": [
        {"name": "play", "type": "binary", "label": "play"},
        {"name": "watch_ratio", "type": "regression", "label": "watch_ratio", "mask": "play"},
        {"name": "share", "type": "binary", "label": "share"},
    ],
}


def user_effects(seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1.0, USERS + 1)


def make_rows(n: int, seed: int, start_id: int = 0, dt: str | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    effects = user_effects()
    user = rng.integers(1, USERS + 1, n)
    x1 = rng.normal(0, 1, n).astype(np.float32)
    x2 = rng.normal(0, 1, n).astype(np.float32)
    logit = 1.5 * x1 + effects[user] - 0.3
    play_p = 1 / (1 + np.exp(-logit))
    play = (rng.random(n) < play_p).astype(np.int32)
    watch = 1 / (1 + np.exp(-(x2 + 0.5 * effects[user]))) + rng.normal(0, 0.05, n)
    share_p = 1 / (1 + np.exp(-(x1 + x2 - 2.0)))
    share = (rng.random(n) < share_p).astype(np.int32)
    tags = rng.integers(0, TAGS, (n, 3))
    frame = pd.DataFrame({
        "row_id": np.arange(start_id, start_id + n, dtype=np.int64),
        "user_idx": user.astype(np.int64),
        "hour": rng.integers(0, 24, n).astype(np.int64),
        "x1": x1, "x2": x2,
        "tag_idx": list(tags.astype(np.int64)),
        "play": play,
        "watch_ratio": pd.array(np.where(play == 1, watch, np.nan), dtype="Float64"),
        "share": share,
        "_play_p": play_p,
    })
    frame.loc[play == 0, "watch_ratio"] = pd.NA
    if dt is not None:
        frame["dt"] = dt
    return frame


def oracle_auc(frame: pd.DataFrame) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(frame["play"], frame["_play_p"]))


def write_parquet_folder(frame: pd.DataFrame, path, files: int, row_group_size: int | None = None) -> None:
    """Plain Parquet (pyarrow, no Spark), `files` files; `_play_p` left out."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pathlib import Path

    Path(path).mkdir(parents=True, exist_ok=True)
    data = frame.drop(columns=["_play_p"])
    for index, chunk in enumerate(np.array_split(np.arange(len(data)), files)):
        table = pa.Table.from_pandas(data.iloc[chunk], preserve_index=False)
        pq.write_table(table, f"{path}/part-{index:05d}.parquet", row_group_size=row_group_size or max(1, len(chunk)))


def spark_frame(spark, frame: pd.DataFrame):
    from pyspark.sql import functions as F

    data = frame.drop(columns=["_play_p"]).copy()
    data["watch_ratio"] = data["watch_ratio"].astype("float64")
    data["tag_idx"] = data["tag_idx"].apply(lambda a: [int(v) for v in a])
    sdf = spark.createDataFrame(data)
    return sdf.withColumn("play", F.col("play").cast("int")).withColumn("share", F.col("share").cast("int"))


def write_delta(spark, frame: pd.DataFrame, path: str, files_per_day: int, mode: str = "overwrite",
                replace_where: str | None = None) -> None:
    """Delta table partitioned by dt, written by Spark (like the pipeline's examples table)."""
    from pyspark.sql import functions as F

    writer = (spark_frame(spark, frame).repartition(files_per_day, "dt", (F.col("row_id") % files_per_day))
              .write.format("delta").mode(mode).partitionBy("dt"))
    if replace_where:
        writer = writer.option("replaceWhere", replace_where)
    writer.save(path)


def write_vocabulary_rs(path: str, first: int, last: int, day: str, ids=None) -> None:
    """Vocabulary 'user': values u<first>..u<last> (ids first..last unless given), one Delta commit, as
    `ple extract`'s MERGE adds them (delta-rs: real Delta commits in milliseconds, no Spark job)."""
    import pyarrow as pa
    from deltalake import write_deltalake

    values = [f"u{i}" for i in range(first, last + 1)]
    ids = list(range(first, last + 1)) if ids is None else list(ids)
    write_deltalake(path, pa.table({"vocabulary": ["user"] * len(values), "value": values,
                                    "id": pa.array(ids, pa.int32()), "first_seen_dt": [day] * len(values)}),
                    mode="append")


def write_day_rs(table: str, day: str, index: int, users: int, rows: int = 120) -> None:
    """One day of examples with users 1..users, one Delta commit, partitioned by dt (delta-rs)."""
    import pyarrow as pa
    from deltalake import write_deltalake

    frame = make_rows(rows, seed=index, start_id=index * 10**6, dt=day).drop(columns=["_play_p"])
    frame["user_idx"] = (frame["user_idx"] % users) + 1
    frame["watch_ratio"] = frame["watch_ratio"].astype("float64")
    write_deltalake(table, pa.Table.from_pandas(frame, preserve_index=False), mode="append", partition_by=["dt"])
