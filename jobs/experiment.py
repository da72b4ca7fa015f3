"""`ple experiment`: train models x seeds on one table and date split, evaluate all on the test day.

    ple experiment --train-start 2026-01-01 --train-end 2026-01-06 --validation-date 2026-01-07 \
        --test-date 2026-01-08 [--models single_task shared_bottom mmoe cgc ple] [--seeds 0 1 2] \
        [--data-dir ple_data] [--out <data>/reports/experiment/<test date>]

Every run is `ple train`'s code (one TrainConfig per model and seed; finished runs with the same
settings are reused). All runs are scored on the same test-day rows: per-task metrics with
intervals, GAUC, NDCG@k of the ranking score, MTL gain against the single-task run of the same
seed (paired interval), mean and spread over seeds. Writes <out>/experiment.json,
<out>/report.html and <out>/seesaw.md (orchestration/experiment.py; docs/EVALUATION.md).
"""

from __future__ import annotations

import sys

from orchestration.config import ExperimentConfig
from ple_runtime.config import parse_job_config
from ple_runtime.errors import StageError


def main(argv: list[str] | None = None) -> int:
    config = parse_job_config(ExperimentConfig, argv, "ple experiment", __doc__.split("\n")[0])
    from orchestration.experiment import run

    try:
        result = run(config)
    except StageError as error:
        print(f"experiment: {error}", file=sys.stderr)
        return error.exit_code
    if result["record"] is None:
        print(f"experiment: {len(result['runs'])} runs ready under {config.out_path}/runs")
        return 0
    paths = result["paths"]
    print(f"experiment: wrote {paths['html']}, {paths['json']} and {paths['markdown']}")
    print(paths["markdown"].read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
