"""`ple`: one command, a subcommand per job.

Each subcommand is a module in `jobs/` with `main(argv) -> int`; the same module
runs under `spark-submit jobs/<name>.py ...`. Modules are imported only when
their subcommand runs, so `ple doctor` works even when torch or Spark is broken.
"""

from __future__ import annotations

import importlib
import sys

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "doctor": ("jobs.doctor", "check that every component of the stack is installed and works"),
    "generate": ("jobs.generate", "write realistic raw event logs (with optional fault injection)"),
    "extract": ("jobs.extract", "raw logs of one day -> validated, labelled examples in Delta"),
    "train": ("jobs.train", "train a multi-task model on a Delta/Parquet snapshot (Horovod)"),
    "evaluate": ("jobs.evaluate", "per-task metrics, MTL gain and an HTML report for a model"),
    "publish": ("jobs.publish", "quality gate, export (TorchScript, ONNX) and register a model"),
    "backfill": ("jobs.backfill", "evaluate a model over a range of past dates"),
    "experiment": ("jobs.experiment", "train models x seeds on one date split; seesaw table with intervals"),
    "tune": ("jobs.tune", "Optuna search over model/training settings on the validation day (ple train trials)"),
    "maintain": ("jobs.maintain", "compact and vacuum the lake's Delta tables, keeping versions models pin"),
    "pipeline": ("jobs.pipeline", "run the whole pipeline locally on embedded defaults"),
}


def _usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = ["usage: ple <command> [options]   (ple <command> --help for its options)", "", "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"ple: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
