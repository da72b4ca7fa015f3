"""`ple extract --date D` (or `--start D1 --end D2`): raw event logs -> validated, labelled
examples in Delta (the extract stage: extraction/extract.py; docs/DATA.md).

Exit status: 0 done; 1 failed (the message names the input at fault); 2 bad settings;
4 a day failed its health check (retrying cannot help). Also runs as
`spark-submit jobs/extract.py`.
"""

from __future__ import annotations

import sys

from extraction.extract import ExtractConfig, run
from ple_runtime.config import parse_job_config
from ple_runtime.errors import DAY_UNHEALTHY, StageError


def main(argv: list[str] | None = None) -> int:
    config = parse_job_config(ExtractConfig, argv, prog="ple extract")
    try:
        run(config)
    except StageError as err:
        print(f"extract {'stopped' if err.exit_code == DAY_UNHEALTHY else 'failed'}: {err}", file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
