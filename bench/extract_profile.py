"""Where the extract's CPU goes, method by method: one `ple extract` under Java Flight Recorder.

    .venv/bin/python bench/etl_throughput.py --keep /tmp/etl_prof/b5m     # makes the 5M-event day
    .venv/bin/python bench/extract_profile.py /tmp/etl_prof/b5m 2026-01-05  # ~3.5 min on 2 cores

Runs the extract of the day on the project's SparkSession in local mode (the driver JVM runs
the tasks; `<data_dir>/lake` is removed first) with JFR (`-XX:StartFlightRecording`,
`settings=profile`: a stack sample of every running Java thread every 10-20 ms) and Spark's
event log, then prints:
- wall time and the JVM's CPU time (from /proc), the CPU its JIT compilers and its collector
  took (compilations over 100 ms and collector pauses, as JFR records them);
- the task threads' samples by Spark stage (a sample is given to the stage whose tasks alone
  were running at its time; `several` when tasks of two stages overlapped), each with the
  methods the samples were in;
- the task threads' samples by kind of work (from their whole stacks: `KIND_TIERS`).
Spark's stage and job numbers match the event log (`--keep-logs DIR` keeps it and the recording).
The wall time includes JFR's own cost (a few %): bench/etl_throughput.py gives the figure.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# (kind of work, a frame that marks it) in tiers: a sample goes to the first tier with a frame
# that matches; in it, to the first frame from the top of the stack that matches (and, for a
# frame matching two, the first of them here). Tiers, because the work of an operator runs in
# Spark's generated code, and both run inside frames that only carry rows (the shuffle
# writer, the cache): those name a sample only when nothing more specific is in its stack.
KIND_TIERS = [
    [
        ("JSON parser set-up per value (a Reader per line)", "CreateJacksonParser"),
        ("JSON parsing (from_json)", "JacksonParser"),
        ("time zone lookup per value", "getZoneId"),
        ("timestamp parsing", "stringToTimestamp"),
        ("date parsing", "stringToDate"),
        ("regular expressions", "java.util.regex"),
        ("sorting (string comparisons)", "UnsafeInMemorySorter"),
        ("sorting (string comparisons)", "UnsafeExternalSorter"),
        ("hash aggregation", "hashAgg_"),
        ("hash aggregation", "UnsafeFixedWidthAggregationMap"),
        ("hash join lookups", "HashedRelation"),
        ("Delta statistics of written files", "DeltaTaskStatisticsTracker"),
        ("Parquet encoding", "org.apache.parquet"),
        ("gzip", "Inflater"),
        ("reading lines", "LineRecordReader"),
        ("code generation (Janino)", "org.codehaus"),
        ("class loading", "ClassLoader"),
    ],
    [("Spark's generated code (filters, projections, key hashing)", "GeneratedClass")],
    [
        ("shuffle write", "ShuffleWriter"),
        ("shuffle read", "ShuffleBlockFetcherIterator"),
        ("keeping rows (checkpoints)", "MemoryStore"),
    ],
]


def kind_of(frames: list[str]) -> str:
    for tier in KIND_TIERS:
        for frame in frames:
            for kind, mark in tier:
                if mark in frame:
                    return kind
    return "other"


def _seconds(duration: str) -> float:
    """JFR's ISO-8601 durations (PT1.5S, PT2M3.1S)."""
    match = re.fullmatch(r"PT(?:(\d+)H)?(?:(\d+)M)?(?:([\d.]+)S)?", duration)
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups()) if match else (0, 0, 0)
    return hours * 3600 + minutes * 60 + seconds


def _frame(frame: dict) -> str:
    method = frame["method"]
    return f"{method['type']['name'].replace('/', '.')}.{method['name']}"


def _events(recording: Path, event: str) -> list[dict]:
    # whole stacks: `jfr print` keeps 5 frames unless told, too few to see the operator
    out = subprocess.run(["jfr", "print", "--json", "--stack-depth", "64", "--events", event, str(recording)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)["recording"]["events"]


def run_extract(data: str, day: str, recording: Path, event_log: Path) -> tuple[float, float]:
    from extraction.extract import ExtractConfig, run
    from ple_runtime.spark import LOCAL_DEFAULTS, get_spark

    shutil.rmtree(Path(data) / "lake", ignore_errors=True)
    java = (LOCAL_DEFAULTS["spark.driver.extraJavaOptions"]
            + " -XX:StartFlightRecording=name=ple-extract,settings=profile")
    spark = get_spark("ple-extract-profile", {"spark.driver.extraJavaOptions": java,
                                              "spark.eventLog.enabled": "true",
                                              "spark.eventLog.dir": f"file://{event_log}"})
    spark.range(1).count()  # the JVM's start is not part of the figures
    pid = int(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())  # the driver JVM (runs the tasks)

    def jvm_cpu() -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    cpu, started = jvm_cpu(), time.perf_counter()
    run(ExtractConfig(data_dir=data, date=dt.date.fromisoformat(day)), spark)
    wall, cpu = time.perf_counter() - started, jvm_cpu() - cpu
    subprocess.run(["jcmd", str(pid), "JFR.stop", "name=ple-extract", f"filename={recording}"],
                   check=True, capture_output=True)
    spark.stop()  # closes the event log
    return wall, cpu


def task_spans(event_log: Path) -> list[tuple[float, float, int]]:
    spans = []
    log = next(p for p in event_log.iterdir() if p.is_file())
    for line in log.open():
        event = json.loads(line)
        if event["Event"] == "SparkListenerTaskEnd":
            info = event["Task Info"]
            spans.append((info["Launch Time"] / 1e3, info["Finish Time"] / 1e3, event["Stage ID"]))
    return spans


def report(recording: Path, event_log: Path, wall: float, cpu: float, top: int) -> None:
    compile_s = sum(_seconds(e["values"]["duration"]) for e in _events(recording, "jdk.Compilation"))
    gc_s = sum(_seconds(e["values"]["duration"]) for e in _events(recording, "jdk.GarbageCollection"))
    print(f"wall {wall:.1f} s, JVM CPU {cpu:.1f} s; JIT compilations over 100 ms: {compile_s:.1f} s; "
          f"collector pauses: {gc_s:.1f} s")
    spans = task_spans(event_log)
    by_stage: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    by_kind: collections.Counter = collections.Counter()
    total = 0
    for sample in _events(recording, "jdk.ExecutionSample"):
        values = sample["values"]
        if "Executor task launch" not in (values["sampledThread"].get("javaName") or ""):
            continue
        frames = [_frame(f) for f in values["stackTrace"]["frames"]]
        if not frames:
            continue
        total += 1
        at = dt.datetime.fromisoformat(values["startTime"].replace("Z", "+00:00")).timestamp()
        stages = {stage for start, end, stage in spans if start <= at <= end}
        stage = f"stage {stages.pop()}" if len(stages) == 1 else ("several" if stages else "between tasks")
        leaf = frames[0].rsplit(".", 2)
        by_stage[stage][".".join(leaf[-2:])] += 1
        by_kind[kind_of(frames)] += 1
    print(f"\ntask threads' samples: {total}, by stage (share of all; the methods they were in)")
    for stage, methods in sorted(by_stage.items(), key=lambda kv: -sum(kv[1].values()))[:top]:
        n = sum(methods.values())
        print(f"  {stage:>14} {100 * n / total:5.1f}%  "
              + ", ".join(f"{m} {100 * c / n:.0f}%" for m, c in methods.most_common(4)))
    print("\nby kind of work")
    for kind, n in by_kind.most_common():
        print(f"  {100 * n / total:5.1f}%  {kind}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", help="a data dir with <data>/raw (bench/etl_throughput.py --keep DIR)")
    parser.add_argument("day", help="the day to extract, YYYY-MM-DD")
    parser.add_argument("--top", type=int, default=12, help="stages to list")
    parser.add_argument("--keep-logs", metavar="DIR", help="keep the JFR recording and the event log here")
    args = parser.parse_args(argv)
    if shutil.which("jfr") is None or shutil.which("jcmd") is None:
        print("needs the JDK's `jfr` and `jcmd` tools on PATH", file=sys.stderr)
        return 2
    logs = Path(args.keep_logs or tempfile.mkdtemp(prefix="extract_profile_"))
    (logs / "events").mkdir(parents=True, exist_ok=True)
    try:
        wall, cpu = run_extract(args.data_dir, args.day, logs / "extract.jfr", logs / "events")
        report(logs / "extract.jfr", logs / "events", wall, cpu, args.top)
    finally:
        if not args.keep_logs:
            shutil.rmtree(logs, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
