"""The scale curve: generate -> extract -> train (PLE, 1 epoch) -> evaluate at growing sizes.

    .venv/bin/python bench/scale.py                                   # 0.2M, 1M and 5M impressions a day
    .venv/bin/python bench/scale.py --impressions 1000000 10000000 20000000   # to 20M (lean from 10M)

For each size: 4 days of raw logs (`ple generate`, 50,000 users, 5,000 items), the first 3
extracted as one range (`ple extract --start --end`; day 4 is day 3's next partition), PLE
trained on day 1 and validated on day 2 (`ple train`, 1 epoch, 1 worker), evaluated on day 3
(`ple evaluate`, intervals included). From `--lean-from` impressions a day (default 10M) a size
is lean: 3 days generated, days 1-2 extracted, day 2 evaluated (the validation day: a bench of
time and memory, not of the model), which saves a generated and an extracted day at the sizes
that take hours. Every stage runs as the user runs it, a `ple`
subprocess; its wall time and the peak memory of its whole process tree (the Spark JVM
included; proportional set size, so shared pages count once; sampled every 2 s; or, if larger, the exact
peak resident set of its largest process, which no sample can miss) are measured from here. Prints, per stage and size:
seconds, the stage's throughput (lines/s for generate and extract, samples/s for train,
rows/s for evaluate), peak memory, and how each grows against the first size (the anchor,
measured in the same run; time also per line or row, x1.00 = linear), with the load average before
and after each stage. `--keep DIR --resume` goes on with a curve that an earlier run in DIR did not
finish: its finished stages are reported from DIR's records (with when they ran), the rest run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
PLE = str(Path(sys.executable).parent / "ple")
DAYS = ("2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine() -> str:
    """What a stage ran on: stages of one curve recorded in different sittings must share it."""
    return f"{os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, {cpu_model()}"


# Reading a process's proportional set size walks its page tables (/proc/<pid>/smaps_rollup), which the process
# then waits on when it maps memory: sampled every 0.2 s it slowed `ple train` of a 1M-row day by 17-20%
# (docs/measurements/scale.md, 2026-12-08), more for a larger process. The exact peak of the largest process
# (wait4) does not depend on the samples, so they can be sparse.
PSS_EVERY_S = 2.0


def _tree_memory(process: psutil.Process) -> int:
    """Proportional set size (PSS) of the process and its descendants: pyspark's forked Python
    workers share pages with their daemon, which a sum of RSS would count several times."""
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_full_info().pss
        except psutil.NoSuchProcess:
            pass
    return total


def run_stage(args: list[str], log: Path, env: dict[str, str] | None = None,
              program: list[str] | None = None) -> tuple[float, int]:
    """(seconds, peak memory in bytes) of one `ple` command (or `program` with those arguments); its output
    goes to `log`. Peak: the larger of the process tree's proportional set size sampled every `PSS_EVERY_S` and
    the largest single process's exact peak resident set."""
    started = time.perf_counter()
    with open(log, "w") as out:
        child = subprocess.Popen([*(program or [PLE]), *args], stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        watched, peak, done = psutil.Process(child.pid), 0, threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                try:
                    peak = max(peak, _tree_memory(watched))
                except psutil.NoSuchProcess:
                    return
                done.wait(PSS_EVERY_S)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        # wait4: the child's exact peak resident set (its own or a reaped descendant's, the largest); a
        # spike shorter than the sampling interval (a whole day read into pandas for a few seconds) is
        # missed by the samples, not by this.
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = code = os.waitstatus_to_exitcode(status)
        done.set()
        sampler.join()
    peak = max(peak, usage.ru_maxrss * 1024)
    if code != 0:
        raise StageFailed(f"`ple {args[0]}` failed (exit {code}, peak {peak / 1e9:.2f} GB); see {log}")
    return time.perf_counter() - started, peak


class StageFailed(RuntimeError):
    """A stage exited non-zero (at large sizes: often out of memory); the curve stops at that size."""


class SizeRun:
    """One size's folder and the record of its finished stages (`scale_record.json`): with `--resume`
    a stage recorded there is not run again, so a curve that takes longer than one sitting goes on
    where it stopped (a stage cut off mid-way runs again, from its own outputs removed)."""

    def __init__(self, impressions: int, root: Path, lean: bool, resume: bool):
        self.impressions, self.lean = impressions, lean
        self.days = DAYS[:3] if lean else DAYS
        self.data = root / f"impressions-{impressions}"
        self.record_file = self.data / "scale_record.json"
        recorded = json.loads(self.record_file.read_text()) if self.record_file.is_file() else {}
        if not (resume and recorded.get("lean") == lean):   # a lean and a full size differ in days
            shutil.rmtree(self.data, ignore_errors=True)
            recorded = {}
        (self.data / "logs").mkdir(parents=True, exist_ok=True)
        self.stages: dict[str, dict] = recorded.get("stages", {})

    def stage(self, name: str, outputs: list[Path], measure) -> dict:
        """The stage's figures: from the record, else run by `measure() -> (seconds, peak, count, unit)` after
        its `outputs` (left by an earlier cut-off run) are removed, then recorded."""
        if name not in self.stages:
            for path in outputs:
                shutil.rmtree(path, ignore_errors=True)
            load_before = os.getloadavg()[0]
            seconds, peak, count, unit = measure()
            self.stages[name] = {"seconds": seconds, "peak_gb": peak / 1e9, "rate": count / seconds, "unit": unit,
                                 "count": count, "load_1min": [round(load_before, 1), round(os.getloadavg()[0], 1)],
                                 "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine()}
            self.record_file.write_text(json.dumps({"impressions": self.impressions, "lean": self.lean,
                                                    "stages": self.stages}, indent=1) + "\n")
            reused = ""
        else:
            ran_on = self.stages[name].get("machine")
            reused = f"  (recorded {self.stages[name]['finished']}" + (
                ")" if ran_on == machine() else "; machine not recorded)" if ran_on is None
                else f" on {ran_on}: not comparable with this machine's stages)")
        figures = self.stages[name]
        print(f"{self.impressions:>10,} impressions/day  {name:<9} {figures['seconds']:8.1f} s  "
              f"{figures['rate']:>10,.0f} {figures['unit']:<10} peak {figures['peak_gb']:5.2f} GB  "
              f"load {figures['load_1min'][0]:.1f}-{figures['load_1min'][1]:.1f}{reused}", flush=True)
        return figures


def one_size(impressions: int, root: Path, stages: dict[str, dict[str, float]], lean: bool, resume: bool) -> None:
    """Fills `stages` (stage -> figures) one stage at a time, printing each as it ends."""
    size = SizeRun(impressions, root, lean, resume)
    data, logs, days = size.data, size.data / "logs", size.days
    extracted, evaluated = days[:-1], days[-2]   # the last day is only the next partition of the one before
    manifest_file = data / "raw" / "_manifest.json"

    def generate():
        seconds, peak = run_stage(["generate", "--data-dir", str(data), "--days", str(len(days)), "--start-date",
                                   DAYS[0], "--users", "50000", "--items", "5000", "--impressions-per-day",
                                   str(impressions)], logs / "generate.log")
        manifest = json.loads(manifest_file.read_text())["partitions"]
        return seconds, peak, sum(manifest[d]["lines"] for d in days), "lines/s"

    def extract():
        seconds, peak = run_stage(["extract", "--data-dir", str(data), "--start", extracted[0], "--end", extracted[-1]],
                                  logs / "extract.log")
        manifest = json.loads(manifest_file.read_text())["partitions"]
        return seconds, peak, sum(manifest[d]["lines"] for d in extracted), "lines/s"

    run = data / "runs" / "ple"

    def train():
        seconds, peak = run_stage(["train", "--table", str(data / "lake" / "examples"), "--train-start", DAYS[0],
                                   "--train-end", DAYS[0], "--validation-date", DAYS[1],
                                   "--spec", str(REPO / "conf" / "video_spec.yaml"), "--model", "ple", "--epochs", "1",
                                   "--out", str(run), "--no-progress"], logs / "train.log")
        return seconds, peak, _run_record(run)["train_snapshot"]["num_records"], "samples/s"

    def evaluate():
        seconds, peak = run_stage(["evaluate", "--model", str(run), "--data-dir", str(data), "--date", evaluated,
                                   "--no-with-production", "--out", str(data / "evaluation")], logs / "evaluate.log")
        rows = json.loads((data / "evaluation" / "metrics.json").read_text())["snapshot"]["rows"]
        return seconds, peak, rows, "rows/s"

    stages["generate"] = size.stage("generate", [data / "raw"], generate)
    stages["extract"] = size.stage("extract", [data / "lake"], extract)
    stages["train"] = size.stage("train", [run], train)
    _print_training_memory(run)
    stages["evaluate"] = size.stage("evaluate", [data / "evaluation"], evaluate)


def _run_record(run: Path) -> dict:
    return json.loads((run / "run_record.json").read_text())


def _print_training_memory(run: Path) -> None:
    record, tables = _run_record(run), _embedding_bytes(run / "model.pt")
    print(f"{'':>10}  train: {record['train_row_groups']} row groups, shuffle buffer {record['shuffle_buffer_rank0']:,} "
          f"rows; embedding tables {tables / 1e6:.1f} MB ({record['embeddings']['rows']:,} rows), their "
          f"{record['embeddings']['optimizer']} optimizer state and gradient "
          f"{_table_state_bytes(record['embeddings']['optimizer'], tables, record['embeddings']['rows']) / 1e6:.1f} MB "
          "(in the peak)", flush=True)


def _embedding_bytes(model_file: Path) -> int:
    """Bytes of the embedding tables' weights in a model file (the `.table` tensors of FeatureInput)."""
    import torch

    state = torch.load(model_file, map_location="cpu", weights_only=False)["state_dict"]
    return sum(t.numel() * t.element_size() for name, t in state.items() if name.endswith(".table"))


def _table_state_bytes(optimizer: str, table_bytes: int, rows: int) -> int:
    """What training holds for the tables besides their weights: dense Adam a gradient and 2 moments per entry,
    sparse_adam 2 moments, rowwise_adagrad one float a row (docs/SCALE.md's table)."""
    return {"dense": 3 * table_bytes, "sparse_adam": 2 * table_bytes, "rowwise_adagrad": 4 * rows}[optimizer]


def _growth(anchor: dict[str, float], size: dict[str, float]) -> str:
    """Time and memory against the anchor, and time per line/row against the anchor's (x1.00 = linear)."""
    time = size["seconds"] / anchor["seconds"]
    return (f"time x{time:.2f} (x{time / (size['count'] / anchor['count']):.2f} of linear), "
            f"memory x{size['peak_gb'] / anchor['peak_gb']:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impressions", type=int, nargs="+", default=[200_000, 1_000_000, 5_000_000],
                        help="impressions a day, one size each (the first is the anchor)")
    parser.add_argument("--lean-from", type=int, default=10_000_000,
                        help="from this many impressions a day: 3 days generated, 2 extracted, the 2nd evaluated")
    parser.add_argument("--keep", type=Path, help="data folder to keep (default: a temporary one, deleted)")
    parser.add_argument("--resume", action="store_true",
                        help="with --keep: stages a run there already finished are reported from its record, "
                             "not run again (a curve over several sittings)")
    args = parser.parse_args()
    if args.resume and args.keep is None:
        parser.error("--resume needs --keep (the folder whose finished stages are reused)")
    root = args.keep or Path(tempfile.mkdtemp(prefix="ple-scale-"))
    print(f"machine: {machine()}; load average before: "
          + " ".join(f"{x:.1f}" for x in os.getloadavg()), flush=True)
    results: dict[int, dict[str, dict[str, float]]] = {}
    try:
        for impressions in args.impressions:
            results[impressions] = {}
            try:
                one_size(impressions, root, results[impressions], impressions >= args.lean_from, args.resume)
            except StageFailed as failure:
                print(f"{impressions:>10,} impressions/day  {failure}", flush=True)
                break
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    print("load average after: " + " ".join(f"{x:.1f}" for x in os.getloadavg()))
    anchor = args.impressions[0]
    print(f"\ngrowth against {anchor:,} impressions/day (size x{'/'.join(f'{n / anchor:g}' for n in args.impressions)}):")
    for stage in results[anchor]:
        cells = [_growth(results[anchor][stage], results[n][stage]) if stage in results.get(n, {}) else "not reached"
                 for n in args.impressions]
        print(f"  {stage:<9} " + " | ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
