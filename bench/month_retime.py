"""Re-time a month's warm-start trainings, first week against last week, interleaved in one process.

    .venv/bin/python bench/month.py --root /tmp/month --days 30 --modes warm   # the month, once
    .venv/bin/python bench/month_retime.py --lake /tmp/month/warm              # then, as often as needed

On a shared machine the month's own per-day seconds follow the load more than the lake. This re-runs
the warm-start training of days 2-8 and of days 24-30 of the month (as bench/month.py trains them,
`train_day`, each from the month's own previous-day model, into new run folders `<day>-retime`),
alternating first-week and last-week days after one warm-up training, so that the load falls on both
weeks alike; it prints each training's wall and CPU seconds and each week's medians and their ratio.
What it measures is the lake's age (the same process trains both weeks), not the process's.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import month  # noqa: E402  (bench/month.py, next to this file)

FIRST_WEEK, LAST_WEEK = range(3, 10), range(25, 32)   # day index 2 is the month's first training day


def retrain(args, index: int) -> tuple[float, float]:
    """(wall seconds as the month measures them, CPU seconds of this process) of one day's training."""
    day = month._day(args.start, index)
    previous = args.lake / "runs" / "month" / month._day(args.start, index - 1)
    config, warm = month.train_config(args, args.lake, index, "warm", previous)
    if not warm:
        raise SystemExit(f"{args.lake}: no month run of {previous.name} to warm-start day {day} from: "
                         "run bench/month.py --days 30 --modes warm first")
    out = Path(config.out).with_name(f"{day}-retime")
    shutil.rmtree(out, ignore_errors=True)
    cpu = time.process_time()
    result = month.train_day(config.model_copy(update={"out": str(out)}))
    return result["train_seconds"], time.process_time() - cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lake", type=Path, required=True, help="a month's warm-mode data root (<root>/warm)")
    parser.add_argument("--start", type=dt.date.fromisoformat, default=dt.date(2026, 1, 1))
    args = parser.parse_args()
    # the month's defaults: its TrainConfig for each day (bench/month.py train_config)
    args.train_days, args.full_every, args.model, args.epochs = 7, 0, "ple", 1
    args.batch_size, args.lr, args.workers, args.seed = 1024, 2e-3, 1, 7
    retrain(args, FIRST_WEEK[0])  # warm-up: imports and first calls, as the month's earlier days paid them
    print(f"month re-time of {args.lake}: load {month._load()}", flush=True)
    figures = {"first": [], "last": []}
    for first, last in zip(FIRST_WEEK, LAST_WEEK):
        for week, index in (("first", first), ("last", last)):
            wall, cpu = retrain(args, index)
            figures[week].append((wall, cpu))
            print(f"  {week} week {month._day(args.start, index)}: train {wall} s, cpu {cpu:.2f} s", flush=True)
    for which, name in ((0, "train s"), (1, "cpu s")):
        first = statistics.median(f[which] for f in figures["first"])
        last = statistics.median(f[which] for f in figures["last"])
        print(f"median {name}: first week {first:.2f}, last week {last:.2f}, ratio {last / first:.2f}")
    print(f"load {month._load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
