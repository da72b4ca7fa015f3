"""`ple pipeline`: the whole pipeline locally, on embedded defaults.

    ple pipeline                      # everything under ./ple_data (or $PLE_DATA_DIR)
    ple pipeline --days 10 --models ple mmoe cgc single_task
    ple pipeline --force              # redo every stage

Stages, each skipped when its output is already there (so a re-run reuses work):
  1. generate  raw event logs for `days` days (with a little fault injection)
  2. extract   every day into the examples Delta table (Spark, local)
  3. train     PLE and the baselines needed for the MTL gain (Horovod, `workers` local processes)
               on days 1..N-2, validating on day N-1
  4. evaluate  the published candidate on day N (the test day), with MTL gain and an HTML report
  5. publish   behind the quality gate, into the local MLflow registry
Prints where the report and the registered model are, and the wall time per stage.
"""

from __future__ import annotations

import sys
import time

from orchestration.config import PipelineConfig
from ple_runtime.config import parse_job_config
from ple_runtime.errors import StageError


def main(argv: list[str] | None = None) -> int:
    config = parse_job_config(PipelineConfig, argv, "ple pipeline", __doc__.split("\n")[0])
    from orchestration.pipeline import print_summary, run

    started = time.perf_counter()
    try:
        record = run(config)
    except StageError as error:
        print(f"\npipeline stopped: {error}", file=sys.stderr)
        return error.exit_code
    print_summary(config, record, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
