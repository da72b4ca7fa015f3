"""`ple backfill`: evaluate a model over a range of past dates, each on its historical snapshot.

    ple backfill --model @production --start 2026-01-01 --end 2026-01-07 [--force]

Writes one row per (model, date, task) into a Delta table (MERGE; default
<data>/lake/backfill_metrics) and a plot of the metrics over time
(<out>/backfill.png and backfill.html). Dates already done for this model are
skipped unless --force. A failed date does not stop the others; the job exits 1
at the end listing the failed dates.
"""

from __future__ import annotations

import datetime as dt
import sys
import tempfile
from pathlib import Path

from pydantic import Field, model_validator

from evaluation.config import ScoringConfig
from ple_runtime.config import Location, parse_job_config
from ple_runtime.lake import Lake


class BackfillConfig(ScoringConfig):
    """Evaluate a model over past dates into a metrics Delta table."""

    start: dt.date = Field(..., description="first date (inclusive)")
    end: dt.date = Field(..., description="last date (inclusive)")
    metrics_table: Location | None = Field(None, description="Delta table of results (default <data>/lake/backfill_metrics)")
    out: Location | None = Field(None, description="plot folder (default <data>/reports/backfill/<model id>)")
    force: bool = Field(False, description="re-evaluate dates already in the metrics table")
    debug_tracebacks: bool = Field(False, description="print the traceback of failed dates")

    @model_validator(mode="after")
    def _ordered(self) -> "BackfillConfig":
        if self.start > self.end:
            raise ValueError(f"start {self.start} is after end {self.end}")
        return self

    @property
    def metrics_table_path(self) -> str:
        return self.metrics_table or Lake(self.data_dir).backfill_metrics

    def out_path(self, model) -> str:
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in model.model_id)
        return self.out or str(Path(Lake(self.data_dir).reports, "backfill", name))


def main(argv: list[str] | None = None) -> int:
    config = parse_job_config(BackfillConfig, argv, "ple backfill", __doc__.split("\n")[0])
    from evaluation.backfill import run_backfill
    from evaluation.config import EvaluationFailed
    from evaluation.model_refs import load_or_fail
    from evaluation.registry import registry_settings
    from ple_runtime.spark import get_spark

    with tempfile.TemporaryDirectory(prefix="ple-backfill-") as workdir:
        try:
            settings = registry_settings(config.data_dir, config.tracking_uri, config.registered_model)
            model = load_or_fail(config.model, settings, Path(workdir), config.resolved_device)
        except EvaluationFailed as error:
            print(f"backfill: {error}", file=sys.stderr)
            return 1
        spark = get_spark("ple-backfill")
        outcome = run_backfill(config, model, spark)
    print(f"backfill: {len(outcome.evaluated)} evaluated, {len(outcome.skipped)} skipped, {len(outcome.failed)} failed; "
          f"table {config.metrics_table_path}; plot {outcome.html_path}")
    if outcome.failed:
        print("backfill: failed dates: " + ", ".join(sorted(outcome.failed)), file=sys.stderr)
        for date, error in sorted(outcome.failed.items()):
            print(f"  {date}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
