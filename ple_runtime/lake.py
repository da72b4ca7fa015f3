"""Where the pipeline's data lives: one root folder (or URI) on embedded defaults.

    <data>/raw/events/dt=YYYY-MM-DD/*.json[.gz]   raw logs (input contract: docs/DATA.md)
    <data>/raw/items/, <data>/raw/users/          dimension snapshots
    <data>/lake/examples        Delta, partitioned by dt: one row per impression
    <data>/lake/quarantine      Delta, partitioned by dt: rejected lines with a reason
    <data>/lake/data_quality    Delta: per-day counts and label rates
    <data>/lake/vocabulary      Delta: stable categorical value -> id maps
    <data>/lake/backfill_metrics  Delta: metrics per (model, date, task) from `ple backfill`
    <data>/runs/<run_name>/     training runs (checkpoints, model, run record)
    <data>/reports/             evaluation reports
    <data>/registry/            local MLflow registry (SQLite) and artifacts
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATA_DIR = "ple_data"


def default_data_dir() -> str:
    return os.environ.get("PLE_DATA_DIR", DEFAULT_DATA_DIR)


@dataclass(frozen=True)
class Lake:
    """Table and folder locations under one data root."""

    root: str

    def _join(self, *parts: str) -> str:
        return str(Path(self.root, *parts)) if "://" not in self.root else "/".join([self.root.rstrip("/"), *parts])

    @property
    def raw(self) -> str:
        return self._join("raw")

    @property
    def examples(self) -> str:
        return self._join("lake", "examples")

    @property
    def quarantine(self) -> str:
        return self._join("lake", "quarantine")

    @property
    def data_quality(self) -> str:
        return self._join("lake", "data_quality")

    @property
    def vocabulary(self) -> str:
        return self._join("lake", "vocabulary")

    @property
    def backfill_metrics(self) -> str:
        return self._join("lake", "backfill_metrics")

    @property
    def runs(self) -> str:
        return self._join("runs")

    @property
    def reports(self) -> str:
        return self._join("reports")

    @property
    def registry(self) -> str:
        return self._join("registry")
