"""`ple generate`: write realistic raw event logs (numpy, no Spark) under <data>/raw
(the generate stage: datagen/generate.py).

    ple generate                                  # demo size: 2000 users, 500 items, 7 days
    ple generate --fault-rate 0.002               # every fault kind at 0.2% of the lines

Exit status: 0 done; 1 logs of another generation are there (--overwrite); 2 bad settings.
"""

from __future__ import annotations

import sys

from datagen.generate import GenerateConfig, run
from ple_runtime.config import parse_job_config
from ple_runtime.errors import StageError


def main(argv: list[str] | None = None) -> int:
    config = parse_job_config(GenerateConfig, argv, prog="ple generate")
    try:
        run(config)
    except StageError as err:
        print(f"generate failed: {err}", file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
