"""`ple evaluate`: per-task metrics, MTL gain and an HTML report for a model on one date snapshot.

    ple evaluate --model runs/ple_2026-01-07 --date 2026-01-08 \
        [--table <data>/lake/examples] [--version 12 | --timestamp 2026-01-09T00:00:00Z] \
        [--single-task-runs runs/single_task_2026-01-07] [--compare runs/mmoe_2026-01-07] \
        [--out <data>/reports/...]

The model is a run folder / model.pt, `models:/<name>/<version>`,
`models:/<name>@<alias>` or `@production`. The version read by default is the
one recorded for the date (ple_runtime/snapshot.py). Every compared figure gets
a confidence interval (`--set uncertainty.level=0.9`, `uncertainty.resamples`);
GAUC and NDCG@k of the ranking score per user (`--set ranking.k=20`);
`--calibrate-on 2026-01-07` fits post-hoc calibration on a validation day first.
Writes <out>/metrics.json and <out>/report.html; exits 1 when the date or the
model cannot be found.
"""

from __future__ import annotations

import sys

from evaluation.config import EvaluateConfig
from ple_runtime.config import parse_job_config
from ple_runtime.errors import StageError


def main(argv: list[str] | None = None) -> int:
    config = parse_job_config(EvaluateConfig, argv, "ple evaluate", __doc__.split("\n")[0])
    from evaluation.evaluate import run

    try:
        result = run(config)
    except StageError as error:
        print(f"evaluate: {error}", file=sys.stderr)
        return error.exit_code
    print(f"evaluate: wrote {result['metrics_path']} and {result['report_path']}")
    for line in result["summary"]:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
