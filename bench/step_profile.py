"""Where a training step's wall time goes: 1 worker vs 2 workers on the same cores.

    .venv/bin/pip install 'py-spy==0.4.3'          # pyproject's optional group `bench`
    .venv/bin/python bench/step_profile.py         # ~2.5 min on 2 cores
    .venv/bin/python bench/step_profile.py --launchers torch-distributor --steps 300

Each run is `ple train` (PLE, 2 levels, rowwise_adagrad, batch 1024 per worker, the table of
bench/training_throughput.py) under py-spy (`--subprocesses --idle`, 50 samples/s): the samples
of a worker's training loop are split by what the stack is in (forward + loss, backward, the
wait for the gradient exchange, the wait for the Eq. 9 sample-space counts' sum started before
the forward, the optimizers, waiting for the next batch). `--idle` keeps the samples where the loop waits (on the other worker, on the loader), so
the shares are of wall time. The 1-worker runs (all cores, and 1 thread) are the anchors.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

# (phase, a frame that marks it), first match wins: the collectives are inside the others' frames
PHASES = [
    ("meter", "after_step ("),
    # the counts' sum starts before the forward and is waited for after it: what shows is the wait
    ("counts allreduce (Eq. 9 sample-space counts)", "wait (training/world.py"),
    # with torch.distributed the dense buckets leave during the backward (their start is in it); this is the
    # wait for them, the rest of the dense parameters and the sparse tables' exchange
    ("gradient exchange (world.synchronize)", "synchronize ("),
    ("optimizers (world.step)", "step (training/world.py"),
    ("backward", "run_backward"),
    ("backward", "backward (torch/"),
    ("forward + loss", "forward ("),
    ("forward + loss", "masked_task_loss_sums"),
    ("next batch (loader)", "_batches ("),
]
LOOP = "train_epoch (training/trainer.py"


def phase_of(stack: str) -> str:
    return next((name for name, frame in PHASES if frame in stack), "other (in the loop)")


def profile(work: Path, py_spy: str, workers: int, launcher: str, threads: int | None, steps: int) -> None:
    out, samples = work / f"run-{workers}-{launcher}-{threads}", work / f"samples-{workers}-{launcher}-{threads}.txt"
    command = [sys.executable, "-m", "jobs.train", "--train-path", str(work / "table"),
               "--validation-path", str(work / "validation"), "--spec", str(work / "spec.yaml"), "--out", str(out),
               "--workers", str(workers), "--epochs", "1", "--batch-size", "1024", "--max-steps-per-epoch", str(steps),
               "--no-progress", "--validation-batch-size", "16384", "--embedding-optimizer", "rowwise_adagrad",
               "--selection", "last_epoch", "--checkpoint-every-steps", "0", "--launcher", launcher,
               "--set", "model_params.num_levels=2", *(["--threads", str(threads)] if threads else [])]
    subprocess.run([py_spy, "record", "--subprocesses", "--idle", "-r", "50", "-f", "raw", "-o", str(samples),
                    "--", *command], cwd=REPO, check=True, capture_output=True)
    epoch = json.loads((out / "run_record.json").read_text())["epochs"][0]
    per_process: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for line in samples.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if LOOP in stack:
            per_process[stack.split(";")[0]][phase_of(stack)] += int(count)
    step_ms = epoch["step_seconds_median"] * 1000
    print(f"\n{workers} worker(s), {launcher}, threads {threads or 'default'}: median step {step_ms:.1f} ms, "
          f"{1024 * workers / epoch['step_seconds_median']:,.0f} samples/s", flush=True)
    for process, phases in per_process.items():
        total = sum(phases.values())
        print(f"  {process[:50]}: {total} samples in the training loop")
        for name, count in phases.most_common():
            print(f"    {name:<46} {100 * count / total:5.1f}%  ~{step_ms * count / total:6.1f} ms of a step")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--launchers", nargs="+", default=["torch-distributor", "horovodrun"],
                        choices=["torch-distributor", "horovodrun"])
    parser.add_argument("--steps", type=int, default=150)
    args = parser.parse_args()
    py_spy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if py_spy is None:
        raise SystemExit("bench/step_profile.py needs py-spy: pip install 'py-spy==0.4.3' "
                         "(pyproject's optional group `bench`)")
    import yaml

    from training_throughput import load, make_spec, write_table

    print(f"{os.cpu_count()} cpus; {load()}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_table(work / "table", 200_000, 25_000, 4, user_rows=100_000)
        write_table(work / "validation", 8192, 8192, 1, user_rows=100_000, seed=2)
        (work / "spec.yaml").write_text(yaml.safe_dump(make_spec(100_000)))
        profile(work, py_spy, 1, "single", None, args.steps)
        profile(work, py_spy, 1, "single", 1, args.steps)
        for launcher in args.launchers:
            profile(work, py_spy, 2, launcher, None, args.steps)
    print(f"-- {load()}")


if __name__ == "__main__":
    main()
