"""`ple evaluate` whose pass reads the day once and keeps its arrays `PLE_BENCH_REPLICATE` times over.

    PLE_BENCH_REPLICATE=100 .venv/bin/python bench/replicated_evaluate.py evaluate --model ... --date ...

Used by `bench/evaluation_memory.py --replicate` to measure evaluation at 10M-20M rows without scoring
10M-20M rows on a 2-core box (~5k rows/s). A table of N copies of the day would be read and scored
batch by batch (the pass's memory is its batch's, whatever N: measured with `--copies`) and would leave
the day's compact arrays N times over, in the same order: exactly what this keeps. Everything after the
pass (metrics, intervals, model health, the validation day's drift, metrics.json, the report) is the
product's code, unchanged. Writes `{rows, rss_after_pass_bytes, peak_rss_bytes}` to `PLE_BENCH_RECORD`.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import evaluation.evaluate as evaluate  # noqa: E402

COPIES = int(os.environ.get("PLE_BENCH_REPLICATE", "1"))
FIGURES: dict[str, int] = {}
_score_snapshot = evaluate.score_snapshot


def _replicated(array):
    return None if array is None else np.tile(np.asarray(array), COPIES)


def replicated_score_snapshot(*args, **kwargs):
    """The product's pass over the day, then each kept array as the pass over COPIES copies would keep it."""
    day, scored = _score_snapshot(*args, **kwargs)
    for kind in ("labels", "masks", "predictions"):
        setattr(day, kind, {owner: {task: _replicated(values) for task, values in arrays.items()}
                            for owner, arrays in getattr(day, kind).items()})
    day.users, day.utility = _replicated(day.users), _replicated(day.utility)
    day.rows *= COPIES
    day.compact_bytes *= COPIES
    for key, model in scored:
        if model.predictions is not None:
            model.predictions = day.predictions.get(key)
    FIGURES.update(rows=day.rows, rss_after_pass_bytes=psutil.Process().memory_info().rss)
    return day, scored


def main() -> int:
    evaluate.score_snapshot = replicated_score_snapshot
    from jobs.cli import main as ple

    code = ple(sys.argv[1:])
    FIGURES["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if os.environ.get("PLE_BENCH_RECORD"):
        Path(os.environ["PLE_BENCH_RECORD"]).write_text(json.dumps(FIGURES))
    return code


if __name__ == "__main__":
    sys.exit(main())
