"""Worker entry points.

    horovodrun -np N --gloo -H localhost:N python -m training.worker <out>/plan.json
    horovod.spark.run(spark_worker, args=(plan_path,), num_proc=N, use_gloo=True)
"""

from __future__ import annotations

import sys


def run_plan_file(plan_path: str, use_horovod: bool, launcher: str) -> dict:
    from .loop import train_worker
    from .plan import load_plan

    return train_worker(load_plan(plan_path), use_horovod=use_horovod, launcher=launcher)


def spark_worker(plan_path: str, repo_root: str | None = None) -> dict:
    """Runs inside a Spark task (one per Horovod rank); returns a small summary."""
    if repo_root and repo_root not in sys.path:
        sys.path.insert(0, repo_root)
    result = run_plan_file(plan_path, use_horovod=True, launcher="spark")
    return {"status": result["status"], "best": result["best"]}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 1:
        print("usage: python -m training.worker <plan.json>", file=sys.stderr)
        return 2
    run_plan_file(argv[0], use_horovod=True, launcher="horovodrun")
    return 0


if __name__ == "__main__":
    sys.exit(main())
