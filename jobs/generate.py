"""`ple generate`: write realistic raw event logs (numpy, no Spark) under <data>/raw.

    ple generate                                  # demo size: 2000 users, 500 items, 7 days
    ple generate --impressions-per-day 3500000 --days 1 --no-gzip
    ple generate --fault-rate 0.002               # every fault kind at 0.2% of the lines
    ple generate --set faults.duplicate=0.01 --set faults.late=0.005

The manifest (<raw>/_manifest.json) lists per partition the lines written, the
faults injected and the quarantine reason `ple extract` must give for each.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from ple_runtime.config import JobConfig, Location, parse_job_config
from ple_runtime.lake import Lake, default_data_dir


class FaultConfig(BaseModel):
    """Per-line fault probabilities (see datagen.events.FaultRates)."""

    model_config = ConfigDict(extra="forbid")
    malformed: float = Field(0.0, ge=0, le=0.05)
    missing_field: float = Field(0.0, ge=0, le=0.05)
    bad_type: float = Field(0.0, ge=0, le=0.05)
    unknown_event_type: float = Field(0.0, ge=0, le=0.05)
    bad_timestamp: float = Field(0.0, ge=0, le=0.05)
    clock_skew: float = Field(0.0, ge=0, le=0.05)
    negative_watch_ms: float = Field(0.0, ge=0, le=0.05)
    absurd_watch_ms: float = Field(0.0, ge=0, le=0.05)
    orphan: float = Field(0.0, ge=0, le=0.05)
    unknown_item: float = Field(0.0, ge=0, le=0.05)
    duplicate: float = Field(0.0, ge=0, le=0.05)
    late: float = Field(0.0, ge=0, le=0.05)


class GenerateConfig(JobConfig):
    """Write synthetic raw logs (events, item and user snapshots) for the pipeline."""

    data_dir: Location = Field(default_factory=default_data_dir, description="data root; logs go to <data_dir>/raw")
    raw_dir: Location | None = Field(None, description="write here instead of <data_dir>/raw")
    users: int = Field(2000, ge=1)
    items: int = Field(500, ge=2)
    days: int = Field(7, ge=1, le=366)
    impressions_per_day: int = Field(20_000, ge=1, description="weekend days get 15% more")
    start_date: dt.date = Field(dt.date(2026, 1, 1), description="first day (UTC)")
    seed: int = Field(0, ge=0)
    gzip: bool = Field(True, description="gzip the event files (level 1)")
    files_per_day: int = Field(2, ge=1, le=64)
    fault_rate: float | None = Field(None, ge=0, le=0.05,
                                     description="shortcut: every fault kind at this rate (overrides faults)")
    faults: FaultConfig = Field(default_factory=FaultConfig)
    overwrite: bool = Field(False, description="replace logs a previous generation wrote there")


def settings_from(config: GenerateConfig):
    from datagen.events import FaultRates, GeneratorSettings

    faults = (FaultRates.uniform(config.fault_rate) if config.fault_rate is not None
              else FaultRates(**config.faults.model_dump()))
    return GeneratorSettings(
        users=config.users, items=config.items, days=config.days,
        impressions_per_day=config.impressions_per_day, start_date=config.start_date, seed=config.seed,
        gzip=config.gzip, files_per_day=config.files_per_day, faults=faults,
    )


def main(argv: list[str] | None = None) -> int:
    config = parse_job_config(GenerateConfig, argv, prog="ple generate")
    from datagen.events import generate

    raw_dir = Path(config.raw_dir or Lake(config.data_dir).raw)
    started = time.perf_counter()

    def progress(day, part):
        print(f"{day}: {part['lines']:>10,} lines, {part['quarantined']:,} faulty, "
              f"{part['duplicates']:,} duplicates ({time.perf_counter() - started:.1f}s)", flush=True)

    try:
        manifest = generate(settings_from(config), raw_dir, overwrite=config.overwrite, progress=progress)
    except FileExistsError as err:
        print(f"generate failed: {err}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - started
    lines = manifest["totals"]["lines"]
    print(f"wrote {lines:,} lines in {seconds:.1f}s ({lines / max(seconds, 1e-9):,.0f} lines/s) "
          f"under {raw_dir}; manifest: {raw_dir / '_manifest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
