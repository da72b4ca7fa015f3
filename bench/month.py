"""A month of daily runs: extract, train, evaluate, gate, publish, day after day, as the daily DAG runs them.

    .venv/bin/python bench/month.py --root /tmp/month                       # 30 days, full retrain then warm start
    .venv/bin/python bench/month.py --root /tmp/month --days 3 --modes full # a quick check of the wiring

For each of `--days` consecutive days D (after two days that are only extracted: the first
training range needs D-2), in each mode, the steps of airflow_dags/ple_daily.py, called through
the jobs' run functions as orchestration/pipeline.py calls them (one process, one SparkSession):
  extract D (D+1's raw partition is there: late engagement), train, evaluate on D against the
  published model, publish behind the quality gate (a refusal is a decision, not an error).
Modes (each in its own data root under --root, sharing one generated raw-log folder):
  full  train on [D - train_days, D - 2] from scratch, validate on D-1 (the DAG's default);
  warm  train on [D - 2, D - 2] (the newest day) starting from the previous day's model
        (TrainConfig.init_from); the first day, and every `--full-every` days, retrain fully.
Per day it prints: examples trained on, train seconds (and where they go: the driver's plan, the
workers, the post-hoc calibration, the worker's own loop, this process's gc pauses and, in-process,
its CPU seconds), peak memory of the training, per task the test-day AUC and GAUC with their
intervals, mean prediction / observed before and after the model file's post-hoc map, and the
gate's decision. A JSON line per day goes to <root>/<mode>.jsonl,
the extracts' summaries to <root>/<mode>-extract.log.
Timings depend on the machine's load: the load average is printed before and after each mode.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REPO = Path(__file__).resolve().parent.parent
WARMUP_DAYS = 2  # D's training range ends at D-2: the first two days are only extracted


def _day(start: dt.date, index: int) -> str:
    return (start + dt.timedelta(days=index)).isoformat()


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def require_warm_start() -> None:
    """Warm mode passes TrainConfig.init_from (`ple train --init-from`); fail before any work without it."""
    from training.config import TrainConfig

    if "init_from" not in TrainConfig.model_fields:
        raise SystemExit("bench/month.py --modes warm needs TrainConfig.init_from (`ple train --init-from REF`, "
                         "the warm-start work of issue 21); this checkout has none: run --modes full, or run "
                         "from a checkout that has it")


def generate_raw(args) -> Path:
    from datagen.generate import GenerateConfig, run as generate

    raw = args.root / "raw"
    total = WARMUP_DAYS + args.days + 1  # + D+1 of the last day
    if not (raw / "events" / f"dt={_day(args.start, total - 1)}" / "_SUCCESS").is_file():
        generate(GenerateConfig(data_dir=str(args.root), raw_dir=str(raw), start_date=args.start, days=total,
                                users=args.users, items=args.items, impressions_per_day=args.impressions_per_day,
                                fault_rate=args.fault_rate, seed=args.seed, overwrite=True))
    return raw


def train_config(args, data_dir: Path, day_index: int, mode: str, previous_run: Path | None):
    """The day's TrainConfig (the DAG's ranges); warm mode from the previous day's model."""
    from ple_runtime.lake import Lake
    from training.config import TrainConfig

    warm = mode == "warm" and previous_run is not None and (
        args.full_every == 0 or (day_index - WARMUP_DAYS) % args.full_every != 0)
    first = max(0, day_index - (2 if warm else args.train_days))  # the DAG's --train-start D - train_days
    settings = {"table": Lake(str(data_dir)).examples, "train_start": _day(args.start, first),
                "train_end": _day(args.start, day_index - 2), "validation_date": _day(args.start, day_index - 1),
                "spec": str(REPO / "conf" / "video_spec.yaml"), "model": args.model,
                "model_params": {"specific_experts": 2, "shared_experts": 2} if args.model == "ple" else {},
                "weighting": "uncertainty", "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
                "workers": args.workers, "seed": args.seed, "progress": False,
                "out": str(Path(Lake(str(data_dir)).runs, "month", _day(args.start, day_index)))}
    if warm:
        settings["init_from"] = str(previous_run)
    return TrainConfig.model_validate(settings), warm


def _peak_rss_reset() -> None:
    # Linux: "5" resets this process's peak RSS (VmHWM), so an in-process training's peak is its own
    Path("/proc/self/clear_refs").write_text("5")


def _peak_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


class GcPauses:
    """Seconds this process spent in Python's garbage collector while in the block (a heap that grows
    day after day in one long-lived process makes each full collection longer)."""

    def __enter__(self):
        self.seconds, self._started = 0.0, None
        gc.callbacks.append(self._callback)
        return self

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started is not None:
            self.seconds += time.perf_counter() - self._started

    def __exit__(self, *exc) -> None:
        gc.callbacks.remove(self._callback)


def train_day(config) -> dict:
    from training.launch import run_training

    in_process = config.resolved_launcher == "single"
    if in_process:
        _peak_rss_reset()
    started, cpu = time.perf_counter(), time.process_time()
    with GcPauses() as pauses:
        status = run_training(config)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    if status:
        raise RuntimeError(f"training into {config.out} exited with status {status}")
    record = json.loads(Path(config.out, "run_record.json").read_text())
    peak = _peak_rss_bytes() if in_process else record.get("peak_rss_bytes_rank0", 0)
    steps = {step: round(value, 2) for step, value in (record.get("driver_seconds") or {}).items()}
    return {"examples": sum(record.get("rows_per_shard", [])), "train_seconds": round(seconds, 1),
            "train_steps": {**steps, "worker_own": round(record.get("elapsed_seconds_this_process", 0), 2),
                            "gc": round(pauses.seconds, 2),
                            # CPU seconds of this process (in-process training): less swayed by a shared box's load
                            **({"cpu": round(cpu, 2)} if in_process else {})},
            "peak_rss_mib": round(peak / 2**20), "init_from": (record.get("config") or {}).get("init_from")}


def evaluate_day(data_dir: Path, run: Path, day: str) -> dict:
    """Test-day figures of the new model: per task AUC/GAUC with intervals, calibration before/after."""
    from evaluation.evaluate import run_evaluation
    from evaluation.config import EvaluateConfig

    config = EvaluateConfig.model_validate({"model": str(run), "date": day, "data_dir": str(data_dir),
                                            "out": str(data_dir / "reports" / "month" / day)})
    with tempfile.TemporaryDirectory(prefix="ple-month-") as workdir:
        record = run_evaluation(config, Path(workdir))["record"]
    effect = ((record["model"].get("calibration") or {}).get("tasks")) or {}
    tasks = {}
    for task, metrics in record["model"]["tasks"].items():
        intervals = metrics.get("intervals") or {}
        tasks[task] = {key: (metrics.get(key), (intervals.get(key) or {}).get("low"),
                             (intervals.get(key) or {}).get("high")) for key in ("auc", "gauc", "mse")
                       if metrics.get(key) is not None}
        tasks[task]["calibration"] = ((effect.get(task) or {}).get("before", {}).get("calibration"),
                                      metrics.get("calibration"))
    return {"tasks": tasks, "metrics": str(Path(config.out, "metrics.json"))}


def publish_day(data_dir: Path, run: Path, day: str, metrics: str) -> str:
    from publishing.publish import run_publish
    from publishing.config import PublishConfig

    config = PublishConfig.model_validate({"model": str(run), "date": day, "data_dir": str(data_dir),
                                           "metrics": metrics})
    with tempfile.TemporaryDirectory(prefix="ple-month-") as workdir:
        outcome = run_publish(config, Path(workdir))
    return outcome.status + (f" v{outcome.version}" if outcome.version else "")


def run_day(args, raw: Path, data_dir: Path, mode: str, index: int, previous: Path | None) -> dict:
    from extraction.extract import ExtractConfig, run as extract

    day = _day(args.start, index)
    started = time.perf_counter()
    # the extract's per-day summary table goes to a log, so the bench's own lines stay readable
    with open(args.root / f"{mode}-extract.log", "a") as log, contextlib.redirect_stdout(log):
        extract(ExtractConfig(data_dir=str(data_dir), raw_dir=str(raw), date=day, require_next_day=True))
    extract_seconds = time.perf_counter() - started
    if index < WARMUP_DAYS:
        return {"day": day, "extract_seconds": round(extract_seconds, 1)}
    config, warm = train_config(args, data_dir, index, mode, previous)
    result = {"day": day, "mode": mode, "warm": warm, "train_range": [str(config.train_start), str(config.train_end)],
              "extract_seconds": round(extract_seconds, 1), **train_day(config)}
    result.update(evaluate_day(data_dir, Path(config.out), day))
    result["gate"] = publish_day(data_dir, Path(config.out), day, result.pop("metrics"))
    return result


def _cell(figure) -> str:
    value, low, high = figure
    if value is None:
        return "-"
    return f"{value:.4f}" + (f" [{low:.4f},{high:.4f}]" if low is not None and high is not None else "")


def print_day(result: dict) -> None:
    if "mode" not in result:
        print(f"{result['day']}  extract only ({result['extract_seconds']} s): history for the first training range",
              flush=True)
        return
    print(f"{result['day']} {result['mode']}: {'warm start' if result['warm'] else 'full retrain'} on "
          f"{result['train_range'][0]}..{result['train_range'][1]}: {result['examples']:,} examples, train "
          f"{result['train_seconds']} s, peak {result['peak_rss_mib']} MiB, extract {result['extract_seconds']} s, "
          f"gate: {result['gate']}")
    if result.get("train_steps"):
        print("    train steps (s): " + ", ".join(f"{k} {v}" for k, v in result["train_steps"].items()), flush=True)
    for task, figures in result["tasks"].items():
        headline = "  ".join(f"{key} {_cell(figures[key])}" for key in ("auc", "gauc", "mse") if key in figures)
        before, after = figures["calibration"]
        ratio = (f"pred/obs {before:.3f} -> {after:.3f}" if before is not None and after is not None
                 else f"pred/obs {after if after is not None else float('nan'):.3f}")
        print(f"    {task:<12} {headline}  {ratio}", flush=True)


def run_mode(args, raw: Path, mode: str) -> list[dict]:
    data_dir = args.root / mode
    print(f"\n=== mode {mode}: {args.days} daily runs from {_day(args.start, WARMUP_DAYS)}; load {_load()}", flush=True)
    results, previous = [], None
    with open(args.root / f"{mode}.jsonl", "a") as log:
        for index in range(WARMUP_DAYS + args.days):
            result = run_day(args, raw, data_dir, mode, index, previous)
            print_day(result)
            if "mode" in result:
                previous = data_dir / "runs" / "month" / result["day"]
                results.append(result)
                log.write(json.dumps(result) + "\n")
    print(f"=== mode {mode} done; load {_load()}", flush=True)
    return results


def summary(mode: str, results: list[dict]) -> None:
    """First week's and last week's median train seconds; each task's AUC first day vs last day."""
    import statistics

    if not results:
        return
    week = min(7, len(results))
    first = statistics.median(r["train_seconds"] for r in results[:week])
    last = statistics.median(r["train_seconds"] for r in results[-week:])
    print(f"{mode}: median train seconds, first {week} days {first:.1f}, last {week} days {last:.1f} "
          f"(ratio {last / first:.2f}); total train {sum(r['train_seconds'] for r in results):.0f} s")
    steps = [k for k in results[0].get("train_steps", {})]
    if steps:
        print("  steps, median first/last week (s): " + ", ".join(
            f"{k} {statistics.median(r['train_steps'][k] for r in results[:week]):.2f}/"
            f"{statistics.median(r['train_steps'][k] for r in results[-week:]):.2f}" for k in steps))
    for task in results[0]["tasks"]:
        key = "auc" if "auc" in results[0]["tasks"][task] else "mse"
        print(f"  {task:<12} {key} day 1 {_cell(results[0]['tasks'][task][key])}, "
              f"last day {_cell(results[-1]['tasks'][task][key])}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="scratch folder: raw logs and one data root per mode")
    parser.add_argument("--days", type=int, default=30, help="daily runs with training (after 2 extract-only days)")
    parser.add_argument("--modes", nargs="+", choices=("full", "warm"), default=["full", "warm"])
    parser.add_argument("--start", type=dt.date.fromisoformat, default=dt.date(2026, 1, 1))
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--impressions-per-day", type=int, default=5000)
    parser.add_argument("--fault-rate", type=float, default=0.0)
    parser.add_argument("--train-days", type=int, default=7, help="full mode trains on [D - train_days, D - 2], as the DAG (its train_days)")
    parser.add_argument("--full-every", type=int, default=0, help="warm mode: retrain fully every N days (0: never)")
    parser.add_argument("--model", default="ple")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--workers", type=int, default=1, help="1: in-process; 2: Horovod, as the DAG trains")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if args.days < 1 or args.train_days < 1:
        parser.error("--days and --train-days must be >= 1")
    if "warm" in args.modes:
        require_warm_start()
    args.root.mkdir(parents=True, exist_ok=True)
    print(f"month bench: {os.cpu_count()} CPUs, load {_load()}, {args.impressions_per_day:,} impressions a day, "
          f"{args.users} users, {args.items} items, model {args.model}, {args.epochs} epoch(s), "
          f"{args.workers} worker(s)", flush=True)
    raw = generate_raw(args)
    results = {mode: run_mode(args, raw, mode) for mode in args.modes}
    print()
    for mode, mode_results in results.items():
        summary(mode, mode_results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
