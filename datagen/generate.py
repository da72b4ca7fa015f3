"""The generate stage (`ple generate`): write realistic raw event logs (numpy, no Spark) under <data>/raw.

    ple generate                                  # demo size: 2000 users, 500 items, 7 days
    ple generate --impressions-per-day 3500000 --days 1 --no-gzip
    ple generate --fault-rate 0.002               # every fault kind at 0.2% of the lines
    ple generate --set faults.duplicate=0.01 --set faults.late=0.005
    ple generate --days 12 --impressions-on '{2026-01-12: 800000}'   # one day 8x larger

The manifest (<raw>/_manifest.json) lists per partition the lines written, the
faults injected and the quarantine reason `ple extract` must give for each.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from datagen.events import FaultRates, GeneratorSettings
from ple_runtime.config import JobConfig, Location, mapping_from_text
from ple_runtime.lake import Lake, default_data_dir


class GenerateConfig(JobConfig, GeneratorSettings):
    """Write synthetic raw logs (events, item and user snapshots) for the pipeline."""

    data_dir: Location = Field(default_factory=default_data_dir, description="data root; logs go to <data_dir>/raw")
    raw_dir: Location | None = Field(None, description="write here instead of <data_dir>/raw")
    fault_rate: float | None = Field(None, ge=0, le=0.05,
                                     description="shortcut: every fault kind at this rate (overrides faults)")
    overwrite: bool = Field(False, description="replace logs a previous generation wrote there")

    @field_validator("impressions_on", mode="before")
    @classmethod
    def _mapping_from_text(cls, value: Any) -> Any:
        return mapping_from_text(value)

    @model_validator(mode="after")
    def _fault_rate_sets_every_fault(self):
        if self.fault_rate is not None and self.faults != FaultRates.uniform(self.fault_rate):
            self.faults = FaultRates.uniform(self.fault_rate)
        return self


def run(config: GenerateConfig) -> dict:
    """Write the logs `config` asks for; returns the manifest. Raises GeneratedLogsExist (an
    InputError) when logs of another generation are there and `overwrite` is off."""
    from datagen.events import generate

    raw_dir = Path(config.raw_dir or Lake(config.data_dir).raw)
    started = time.perf_counter()

    def progress(day, part):
        print(f"{day}: {part['lines']:>10,} lines, {part['quarantined']:,} faulty, "
              f"{part['duplicates']:,} duplicates ({time.perf_counter() - started:.1f}s)", flush=True)

    manifest = generate(config, raw_dir, overwrite=config.overwrite, progress=progress)
    seconds = time.perf_counter() - started
    lines = manifest["totals"]["lines"]
    print(f"wrote {lines:,} lines in {seconds:.1f}s ({lines / max(seconds, 1e-9):,.0f} lines/s) "
          f"under {raw_dir}; manifest: {raw_dir / '_manifest.json'}")
    return manifest
