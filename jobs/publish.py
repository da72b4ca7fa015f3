"""`ple publish`: quality gate, export (TorchScript, ONNX) and register a model.

    ple publish --model runs/ple_2026-01-07 --date 2026-01-08 [--config conf/publish.yaml]

Scores the candidate on one date snapshot (same choice of version as `ple
evaluate`), exports it (TorchScript + ONNX, both checked against PyTorch),
then under a lease held in the registry (publishers on several hosts against
one tracking server serialise) compares it with the published model (alias
`production`) on the same rows and, if no task is worse by more than the
tolerance, registers a new version in the MLflow registry and moves the alias.
--calibrate-on DATE fits a post-hoc calibration per task on that (validation)
date first: the bundle's model.pt carries it and the exports apply it.
With --metrics (the metrics.json of `ple evaluate`), the gate runs on the table,
date and version that evaluation read. --check-only runs the gate and stops.
Exit status: 0 published / gate passed (or already published), 3 the gate
refused the model, 1 any other failure (export mismatch, missing data, ...),
2 bad settings.
"""

from __future__ import annotations

import sys

from ple_runtime.config import parse_job_config
from ple_runtime.errors import GATE_REFUSED, StageError
from publishing.config import PublishConfig


def main(argv: list[str] | None = None) -> int:
    config = parse_job_config(PublishConfig, argv, "ple publish", __doc__.split("\n")[0])
    from publishing.publish import PublishFailed, run

    try:
        outcome = run(config)
    except StageError as error:
        registered = isinstance(error, PublishFailed)  # its message says what was registered
        print(f"publish: {error}" + ("" if registered else "; nothing published"), file=sys.stderr)
        return error.exit_code
    if outcome.status == "gate_failed":
        print("publish: quality gate FAILED; nothing published:", file=sys.stderr)
        for message in outcome.messages:
            print(f"  {message}", file=sys.stderr)
        print(f"  record: {outcome.record_path}", file=sys.stderr)
        return GATE_REFUSED
    for message in outcome.messages:
        print(f"publish: {message}")
    print(f"publish: record {outcome.record_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
