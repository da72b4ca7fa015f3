"""How the extract keeps DataFrames that several Spark jobs read: the one persistence policy.

Intermediate results are lazy local checkpoints: like persist() (memory, spilling to
disk) each is computed once, by the first action that needs it, and not by an extra job
of its own; unlike persist() they cut the lineage, so the plans built on them stay small
(the validation expression is large, and a cached plan is carried inside every plan that
uses it: planning slows down and the driver runs out of memory). Small inputs with small
plans (the snapshots) are persisted. Everything is released when its scope ends.
"""

from __future__ import annotations

from pyspark import StorageLevel


class Checkpoints:
    """A scope of kept DataFrames (implements feature_eng.extract_pass.Materialize)."""

    def __init__(self):
        self._kept: list = []

    def checkpoint(self, df, eager: bool = False):
        """Kept (memory, spilling to disk), computed by the first job that reads it (or now, eager)."""
        df = df.localCheckpoint(eager=eager)
        self._kept.append(df)
        return df

    def persist(self, df):
        df = df.persist(StorageLevel.MEMORY_AND_DISK)
        self._kept.append(df)
        return df

    def release(self, df) -> None:
        """Drop a persisted DataFrame's or a local checkpoint's blocks (memory and disk)."""
        self._kept = [kept for kept in self._kept if kept is not df]
        if df.is_cached:
            df.unpersist()
            return
        try:
            df._jdf.queryExecution().analyzed().rdd().unpersist(False)  # LogicalRDD of a checkpoint
        except Exception:  # noqa: BLE001 - best effort: Spark's ContextCleaner frees it later anyway
            pass

    def release_all(self) -> None:
        for df in list(self._kept):
            self.release(df)

    def __enter__(self) -> "Checkpoints":
        return self

    def __exit__(self, *exc) -> None:
        self.release_all()
