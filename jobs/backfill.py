"""`ple backfill`: evaluate a model over a range of past dates, each on its historical snapshot.

    ple backfill --model @production --start 2026-01-01 --end 2026-01-07 [--force]

Writes one row per (model, date, task) into a Delta table (MERGE; default
<data>/lake/backfill_metrics) and a plot of the metrics over time
(<out>/backfill.png and backfill.html). Dates already done for this model are
skipped unless --force. A failed date does not stop the others; the job exits 1
at the end listing the failed dates.
"""

from __future__ import annotations

import sys

from evaluation.config import BackfillConfig
from ple_runtime.config import parse_job_config
from ple_runtime.errors import StageError


def main(argv: list[str] | None = None) -> int:
    config = parse_job_config(BackfillConfig, argv, "ple backfill", __doc__.split("\n")[0])
    from evaluation.backfill import run

    try:
        outcome = run(config)
    except StageError as error:
        print(f"backfill: {error}", file=sys.stderr)
        return error.exit_code
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
