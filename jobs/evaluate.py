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

import datetime as dt
import sys
import tempfile
from pathlib import Path

from pydantic import Field

from evaluation.config import ModelReference, TimeTravelConfig
from ple_runtime.config import Location, parse_job_config


class EvaluateConfig(TimeTravelConfig):
    """Evaluate a model on one date of a Delta table: per-task metrics, MTL gain, report."""

    date: dt.date = Field(..., description="the date partition to evaluate on, YYYY-MM-DD")
    out: Location | None = Field(None, description="output folder (default <data>/reports/evaluate/<model>/<date>-v<version>)")
    single_task_runs: list[Location] = Field(default_factory=list,
                                        description="single-task runs (folders, model.pt files, or folders of runs) "
                                                    "for the MTL gain")
    compare: list[ModelReference] = Field(default_factory=list, description="more models to put on the seesaw plot")
    with_production: bool = Field(True, description="also score the published model (registry alias)")
    production_alias: str = Field("production", description="registry alias of the published model")


def main(argv: list[str] | None = None) -> int:
    config = parse_job_config(EvaluateConfig, argv, "ple evaluate", __doc__.split("\n")[0])
    from evaluation.config import EvaluationFailed
    from evaluation.evaluate import run_evaluation

    try:
        with tempfile.TemporaryDirectory(prefix="ple-evaluate-") as workdir:
            result = run_evaluation(config, Path(workdir))
    except EvaluationFailed as error:
        print(f"evaluate: {error}", file=sys.stderr)
        return 1
    print(f"evaluate: wrote {result['metrics_path']} and {result['report_path']}")
    for line in result["summary"]:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
