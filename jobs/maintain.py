"""`ple maintain`: compact and VACUUM the lake's Delta tables, keeping the files of every table
version a registered model pins (the lake-maintenance stage: maintenance/maintain.py).

    ple maintain [--data-dir ple_data] [--tables examples quarantine] [--target-file-mb 128]
                 [--retention-hours 168] [--no-retention-check] [--no-compact] [--no-vacuum] [--force]

Exit status: 0 done (the report's path is printed); 1 a table cannot be maintained (the
message says which and why); 2 bad settings. Also runs as `spark-submit jobs/maintain.py`.
"""

from __future__ import annotations

import sys

from maintenance.maintain import MaintainConfig, run
from ple_runtime.config import parse_job_config
from ple_runtime.errors import StageError


def main(argv: list[str] | None = None) -> int:
    config = parse_job_config(MaintainConfig, argv, prog="ple maintain")
    try:
        report = run(config)
    except StageError as error:
        print(f"maintain failed: {error}", file=sys.stderr)
        return error.exit_code
    print(f"maintain: report written to {report['report_path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
