"""A hostile month: the daily extract, day after day, with bad days injected; what it did on each, and
that no good day was lost or changed.

    .venv/bin/python bench/hostile_month.py --root /tmp/hostile                      # 30 days, ~2,000 impressions a day
    .venv/bin/python bench/hostile_month.py --root /tmp/hostile --days 12 --first-bad-day 2 --spacing 3  # quick check

One generated raw-log folder (`--days` + 1 days: the last day's late engagement), then, in one
process and one SparkSession, through `extraction.extract.run` with its typed config as the daily
DAG's extract task runs it (`require_next_day`: the DAG's sensor waits for D+1/_SUCCESS):
  reference  <root>/reference: every day extracted in order from the clean raw logs;
  hostile    <root>/hostile: its raw folder receives the days one at a time as they "arrive"
             (D+1's partition is copied into place, data files first and _SUCCESS last, before D
             is extracted), with four bad partitions at fixed positions (day indexes from 0:
             `--first-bad-day` and every `--spacing` days after, defaults 8, 13, 18, 23):
    renamed_field   `watch_ms` is `watchMs` on every play line: day health must stop the day (exit 4)
                    naming quarantine_rate_increase:missing_field:watch_ms;
    half_written    one of the day's files, no _SUCCESS marker: the sensor of D-1's run waits, and
                    an extract started anyway is refused (exit 1) naming the missing marker;
    play_rate_bug   a client drops 9 plays of 10: day health must stop the day naming label_change:play;
    late_day        the partition arrives after the next day's: D-1's sensor waits (exit 1 if the
                    extract is started anyway), and the next day's extract is refused by the order
                    check (exit 1) naming the missing day, until it arrives.
  After each stop the upstream or operator does what they would: the upstream re-delivers the
  corrected partition (or finishes writing it, or delivers the late day), and the day is extracted
  again as the extract's own messages say (a re-delivered partition is refused until the day
  before, which read the bad copy as its next day, is extracted again with it: both, in order).
  override   <root>/override: a copy of the hostile lake at the play-rate stop, the day accepted with
             --accept-day-health: shows that the acceptance is recorded (day_health:overridden = 1);
             kept out of the identity check (its later days' history features would differ).
Printed: a table per day (first attempt, what happened after the fix), then the identity check:
every day's examples in the hostile lake equal the reference's (a SHA-256 of the day's rows sorted
by impression_id, all columns), its quarantine counts by reason, its data-quality figures (but
`vocabulary_new_values`, the values a run added: a day extracted again adds none) and its
vocabulary entries (value, id) equal.
Exit 1 when a bad day was not stopped/refused with its expected reason or any day differs.
The extracts' own output goes to <root>/<run>-extract.log. Timings depend on the machine's load:
the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from extraction.raw_logs import MARKER  # noqa: E402  (imports no Spark module)
from scale import cpu_model  # noqa: E402

# The values a run added to the vocabulary: a day extracted again adds none (its first run did; pinned by
# tests/extraction/test_extract_multiday.py), so it is left out; the vocabulary table itself is compared.
RUN_FIGURE = "vocabulary_new_values"
SCENARIOS = ("renamed_field", "half_written", "play_rate_bug", "late_day")
EXPECTED = {  # what the first attempt concerned must say (a substring of the message) and its exit code
    "renamed_field": (4, "quarantine_rate_increase:missing_field:watch_ms"),
    "half_written": (1, f"has no {MARKER} marker"),
    "play_rate_bug": (4, "label_change:play"),
    "late_day": (1, "does not exist"),
    "late_day:order": (1, "holds extracted days up to"),
}


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


@dataclass
class Attempt:
    day: str
    label: str                       # "first", "after fix", ...
    outcome: str                     # "ok", "stopped", "refused", "waiting"
    exit_code: int = 0
    reason: str = ""


@dataclass
class Bench:
    args: argparse.Namespace
    clean_raw: Path
    days: list[str]                                  # --days + 1 days: the last one is D+1 only
    bad: dict[int, str]                              # partition index -> scenario
    attempts: list[Attempt] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


# --- raw logs: generation, arrival, injected faults ------------------------------------------------

def generate_raw(args) -> Path:
    from datagen.generate import GenerateConfig, run as generate

    raw = args.root / "raw"
    last = (args.start + dt.timedelta(days=args.days)).isoformat()
    if not (raw / "events" / f"dt={last}" / MARKER).is_file():
        with open(args.root / "generate.log", "w") as log, contextlib.redirect_stdout(log):
            generate(GenerateConfig(data_dir=str(args.root), raw_dir=str(raw), start_date=args.start,
                                    days=args.days + 1, users=args.users, items=args.items,
                                    impressions_per_day=args.impressions_per_day, fault_rate=args.fault_rate,
                                    seed=args.seed, overwrite=True))
    return raw


def _data_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.startswith("part-"))


def _read_lines(path: Path) -> list[str]:
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as lines:
        return [line for line in lines if line.strip()]


def _write_file(path: Path, lines: list[str]) -> None:
    """Written under a hidden name and renamed when whole, as the raw-log contract asks."""
    import gzip

    hidden = path.with_name("." + path.name + ".tmp")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(hidden, "wt") as out:
        out.writelines(lines)
    os.replace(hidden, path)


def _renamed_field(line: str) -> str:
    return line.replace('"watch_ms":', '"watchMs":')  # text, not JSON: a faulty line stays as faulty as it was


def _dropped_plays():
    seen = iter(range(10**9))
    return lambda line: line if '"event_type":"play"' not in line or next(seen) % 10 == 0 else None


def deliver(bench: Bench, target: Path, index: int, edit=None, files: int | None = None, marker: bool = True) -> None:
    """Day `index`'s clean partition copied into `target`'s events folder, each line through `edit`
    (returns the line or None to drop it), only the first `files` data files, the marker last."""
    source = bench.clean_raw / "events" / f"dt={bench.days[index]}"
    folder = target / "events" / f"dt={bench.days[index]}"
    if folder.exists():
        shutil.rmtree(folder)  # a re-delivery replaces the partition (its marker goes first)
    folder.mkdir(parents=True)
    for path in _data_files(source)[:files]:
        if edit is None:  # the same bytes: the same files' names and sizes as the clean folder
            shutil.copyfile(path, folder / ("." + path.name + ".tmp"))
            os.replace(folder / ("." + path.name + ".tmp"), folder / path.name)
            continue
        _write_file(folder / path.name, [e for e in map(edit, _read_lines(path)) if e is not None])
    if marker:
        (folder / MARKER).touch()


def arrive(bench: Bench, target: Path, index: int) -> str:
    """What arrives for partition `index` at its normal time (a bad day's faulty version)."""
    scenario = bench.bad.get(index)
    if scenario == "renamed_field":
        deliver(bench, target, index, _renamed_field)
    elif scenario == "play_rate_bug":
        deliver(bench, target, index, _dropped_plays())
    elif scenario == "half_written":
        deliver(bench, target, index, files=1, marker=False)
    elif scenario != "late_day":
        deliver(bench, target, index)
    return scenario or "clean"


# --- extracts ------------------------------------------------------------------------------------

def extract(bench: Bench, data_dir: Path, day: str, label: str, **settings) -> Attempt:
    """One `ple extract --date day` (or `--start/--end` in `settings`; require_next_day, as the DAG's
    task) through the job's run function; a StageError is the outcome (exit code, message)."""
    from extraction.extract import ExtractConfig, run
    from ple_runtime.errors import StageError

    config = ExtractConfig(data_dir=str(data_dir), raw_dir=str(data_dir / "raw"), require_next_day=True,
                           **({"date": day} if "start" not in settings else {}), **settings)
    attempt = Attempt(day, label, "ok")
    with open(bench.args.root / f"{data_dir.name}-extract.log", "a") as log, \
            contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        print(f"\n===== extract {day} ({label})", flush=True)
        try:
            run(config)
        except StageError as err:
            attempt = Attempt(day, label, "stopped" if err.exit_code == 4 else "refused", err.exit_code, str(err))
            print(f"extract stopped, exit {err.exit_code}: {err}", flush=True)
    return attempt


def sensor_waits(data_dir: Path, day_after: str) -> bool:
    """The DAG's FileSensor condition for the run of the day before `day_after`."""
    return not (data_dir / "raw" / "events" / f"dt={day_after}" / MARKER).is_file()


def reference_run(bench: Bench) -> Path:
    data_dir = bench.args.root / "reference"
    if data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir()
    (data_dir / "raw").symlink_to(bench.clean_raw.resolve())
    for day in bench.days[:-1]:
        attempt = extract(bench, data_dir, day, "reference")
        if attempt.outcome != "ok":
            bench.problems.append(f"reference run: {day} was not extracted: exit {attempt.exit_code} {attempt.reason}")
    return data_dir


# --- the hostile run -----------------------------------------------------------------------------

def hostile_run(bench: Bench) -> Path:
    data_dir = bench.args.root / "hostile"
    if data_dir.exists():
        shutil.rmtree(data_dir)
    raw = data_dir / "raw"
    for snapshot in ("items", "users"):
        shutil.copytree(bench.clean_raw / snapshot, raw / snapshot)
    deliver(bench, raw, 0)  # the month starts with its first day there
    delivered = {0}
    for index in range(len(bench.days) - 1):
        if index + 1 not in delivered:  # D+1 arrives (or not: a late day) before D's run
            arrive(bench, raw, index + 1)
            delivered.add(index + 1)
        run_day(bench, data_dir, index, delivered)
    return data_dir


def _expect(bench: Bench, attempt: Attempt, key: str) -> None:
    code, text = EXPECTED[key]
    if attempt.exit_code != code or text not in attempt.reason:
        bench.problems.append(f"{attempt.day} ({key}): expected exit {code} naming {text!r}, got exit "
                              f"{attempt.exit_code}: {attempt.reason.splitlines()[0] if attempt.reason else 'ok'}")


def run_day(bench: Bench, data_dir: Path, index: int, delivered: set[int]) -> None:
    """The DAG run of day `index`: its extract, and when it does not complete, what the upstream and
    the operator do about it, until it does."""
    day, raw = bench.days[index], data_dir / "raw"
    own, following = bench.bad.get(index), bench.bad.get(index + 1)
    waits = sensor_waits(data_dir, bench.days[index + 1])
    first = extract(bench, data_dir, day, "sensor waits, extract started anyway" if waits else "daily run")
    bench.attempts.append(first)
    if own in ("renamed_field", "play_rate_bug"):
        _expect(bench, first, own)
        if first.outcome == "stopped":
            if own == "play_rate_bug":
                override_copy(bench, data_dir, day)
            deliver(bench, raw, index)  # the upstream re-delivers the corrected partition
    elif following == "half_written":
        _expect(bench, first, "half_written")
        deliver(bench, raw, index + 1)  # its writer finishes: every file, then the marker
    elif following == "late_day":
        _expect(bench, first, "late_day")
        late_following_day(bench, data_dir, index, delivered)
    if first.outcome != "ok":
        operator_reruns(bench, data_dir, day)


def late_following_day(bench: Bench, data_dir: Path, index: int, delivered: set[int]) -> None:
    """Day index+1 is late: the day after it arrives first, and its extract (a backfill, a run started
    by hand) is refused by the order check; then the late day arrives."""
    raw, ahead = data_dir / "raw", index + 2
    if ahead < len(bench.days) and ahead not in delivered:
        deliver(bench, raw, ahead)
        delivered.add(ahead)
    refused = extract(bench, data_dir, bench.days[min(ahead, len(bench.days) - 1)],
                      "next day's partition arrived first: its extract")
    bench.attempts.append(refused)
    _expect(bench, refused, "late_day:order")
    deliver(bench, raw, index + 1)  # the late day arrives


def operator_reruns(bench: Bench, data_dir: Path, day: str) -> None:
    """After the fix the operator extracts the day again, and, when the extract says the day before
    it read an earlier copy of this partition, both days in order, as its message says."""
    again = extract(bench, data_dir, day, "after fix")
    bench.attempts.append(again)
    if again.outcome == "refused" and "changed after" in again.reason:
        previous = (dt.date.fromisoformat(day) - dt.timedelta(days=1)).isoformat()
        again = extract(bench, data_dir, day, f"as it says: extract --start {previous} --end {day}",
                        start=previous, end=day)
        bench.attempts.append(again)
    if again.outcome != "ok":
        bench.problems.append(f"{day}: still not extracted after the fix: exit {again.exit_code} {again.reason}")


def override_copy(bench: Bench, data_dir: Path, day: str) -> None:
    """The other way out of a stop: a copy of the lake as it stands, the day accepted as it is."""
    from pyspark.sql import functions as F

    from feature_eng.health import BREACHED, OVERRIDDEN
    from ple_runtime.lake import Lake
    from ple_runtime.spark import get_spark

    started = time.perf_counter()
    copy = bench.args.root / "override"
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(data_dir, copy)
    attempt = extract(bench, copy, day, "override copy: --accept-day-health", accept_day_health=[day])
    quality = get_spark().read.format("delta").load(Lake(str(copy)).data_quality).where(F.col("dt") == day)
    figures = {row["metric"]: row["value"] for row in quality.collect()}
    attempt.reason = (f"recorded: {OVERRIDDEN} = {figures.get(OVERRIDDEN)}, {BREACHED} = {figures.get(BREACHED)}, "
                      f"health:label_change:play = {figures.get('health:label_change:play', float('nan')):.3f}")
    bench.attempts.append(attempt)
    if attempt.outcome != "ok" or figures.get(OVERRIDDEN) != 1.0:
        bench.problems.append(f"{day}: --accept-day-health was not recorded: {attempt.outcome} {figures.get(OVERRIDDEN)}")
    bench.seconds["override copy"] = time.perf_counter() - started


# --- the identity check --------------------------------------------------------------------------

def lake_contents(data_dir: Path) -> dict[str, dict]:
    """Per day: a SHA-256 of its examples (rows sorted by impression_id, every column), its example
    count, its quarantine counts by reason, its data-quality figures (but RUN_FIGURE), the vocabulary
    entries first seen that day (value and id)."""
    from pyspark.sql import functions as F

    from ple_runtime.lake import Lake
    from ple_runtime.spark import get_spark

    spark, lake = get_spark(), Lake(str(data_dir))
    examples = spark.read.format("delta").load(lake.examples)
    row_hash = F.sha2(F.to_json(F.struct(*sorted(examples.columns))), 256)
    days: dict[str, dict] = {}
    for row in examples.select("dt", "impression_id", row_hash.alias("h")).collect():
        days.setdefault(row["dt"], {"rows": []})["rows"].append((row["impression_id"], row["h"]))
    for day in days.values():
        day["examples"] = len(day["rows"])
        day["digest"] = hashlib.sha256("".join(h for _, h in sorted(day.pop("rows"))).encode()).hexdigest()
    for row in spark.read.format("delta").load(lake.quarantine).groupBy("dt", "reason").count().collect():
        days.setdefault(row["dt"], {}).setdefault("quarantine", {})[row["reason"]] = row["count"]
    for row in spark.read.format("delta").load(lake.data_quality).collect():
        if row["metric"] != RUN_FIGURE:
            days.setdefault(row["dt"], {}).setdefault("quality", {})[row["metric"]] = row["value"]
    for row in spark.read.format("delta").load(lake.vocabulary).collect():  # ids numbered by first day seen
        days.setdefault(row["first_seen_dt"], {}).setdefault("vocabulary", set()).add(
            (row["vocabulary"], row["value"], row["id"]))
    return days


def compare(bench: Bench, reference: dict, hostile: dict) -> dict[str, str]:
    """Per day: "identical" or what differs (the day's problems are added to bench.problems)."""
    verdicts = {}
    for day in bench.days[:-1]:
        mine, theirs = hostile.get(day, {}), reference.get(day, {})
        differences = [what for what in ("digest", "quarantine", "vocabulary") if mine.get(what) != theirs.get(what)]
        quality_a, quality_b = mine.get("quality", {}), theirs.get("quality", {})
        metrics = sorted(m for m in set(quality_a) | set(quality_b) if quality_a.get(m) != quality_b.get(m))
        if metrics:
            differences.append(f"data quality ({len(metrics)}: {', '.join(metrics[:4])}"
                               f"{', ...' if len(metrics) > 4 else ''})")
        if "digest" in differences:
            differences[0] = f"examples ({mine.get('examples', 0)} vs {theirs.get('examples', 0)} rows)"
        verdicts[day] = "identical" if not differences else "DIFFERS: " + "; ".join(differences)
        if differences:
            bench.problems.append(f"{day}: hostile lake differs from the reference: {'; '.join(differences)}")
    return verdicts


# --- report --------------------------------------------------------------------------------------

def _said(attempt: Attempt) -> str:
    lines = [line.strip() for line in attempt.reason.splitlines() if line.strip()]
    if attempt.outcome == "ok" or not lines:
        return attempt.outcome + (f" ({attempt.reason})" if attempt.reason else "")
    if attempt.exit_code == 4:  # the breached metrics, one a line in the message
        said = ", ".join(line.split(" (")[0] for line in lines[1:] if " = " in line)
    else:
        said = lines[0][:150] + ("..." if len(lines[0]) > 150 else "")
    return f"{attempt.outcome}, exit {attempt.exit_code}: {said}"


def print_table(bench: Bench, verdicts: dict[str, str]) -> None:
    print(f"\n{'day':<10}  {'partition':<13}  {'what the pipeline did':<90}  vs reference")
    for index, day in enumerate(bench.days[:-1]):
        scenario = bench.bad.get(index, "")
        attempts = [a for a in bench.attempts if a.day == day]
        first = attempts[0] if attempts else Attempt(day, "-", "not attempted")
        print(f"{day:<10}  {scenario:<13}  {first.label + ': ' + _said(first):<90}  {verdicts[day]}")
        for attempt in attempts[1:]:
            print(f"{'':<10}  {'':<13}  {attempt.label + ': ' + _said(attempt)}")
    last = [a for a in bench.attempts if a.day == bench.days[-1]]  # a refused extract of the D+1-only day
    if len(bench.days) - 1 in bench.bad or last:
        print(f"{bench.days[-1]:<10}  {bench.bad.get(len(bench.days) - 1, ''):<13}  (D+1 of the last day: its daily "
              "run is not in this month)")
        for attempt in last:
            print(f"{'':<10}  {'':<13}  {attempt.label + ': ' + _said(attempt)}")


def bad_positions(args) -> dict[int, str]:
    positions = {args.first_bad_day + k * args.spacing: scenario for k, scenario in enumerate(SCENARIOS)}
    if min(positions) < 1 or max(positions) > args.days:
        raise SystemExit(f"bad days at {sorted(positions)}: each must be within 1..--days ({args.days}); "
                         "lower --first-bad-day / --spacing or raise --days")
    return positions


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="scratch folder: raw logs and one data root per run")
    parser.add_argument("--days", type=int, default=30, help="days extracted (one more is generated: D+1 of the last)")
    parser.add_argument("--start", type=dt.date.fromisoformat, default=dt.date(2026, 1, 1))
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--impressions-per-day", type=int, default=2000)
    parser.add_argument("--fault-rate", type=float, default=0.001, help="background faults of every kind")
    parser.add_argument("--first-bad-day", type=int, default=8, help="index (from 0) of the first bad partition: "
                        "8 gives it a full 7-day health window")
    parser.add_argument("--spacing", type=int, default=5, help="days between bad partitions")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    bench = Bench(args, Path(), [], bad_positions(args))
    args.root.mkdir(parents=True, exist_ok=True)
    print(f"hostile month: {os.cpu_count()} CPUs ({cpu_model()}), load {_load()}, {args.days} days of "
          f"{args.impressions_per_day:,} impressions, bad partitions: "
          + ", ".join(f"{s} {(args.start + dt.timedelta(days=i)).isoformat()}" for i, s in sorted(bench.bad.items())),
          flush=True)
    bench.days = [(args.start + dt.timedelta(days=i)).isoformat() for i in range(args.days + 1)]
    # the hostile run first: what it did on the bad days is known early
    phases = [("generate", lambda: generate_raw(args)), ("hostile run", lambda: hostile_run(bench)),
              ("reference run", lambda: reference_run(bench))]
    results = {}
    for name, phase in phases:
        started = time.perf_counter()
        results[name] = phase()
        bench.seconds[name] = time.perf_counter() - started
        if name == "hostile run":  # the override copy's extract is shown on its own
            bench.seconds[name] -= bench.seconds.get("override copy", 0.0)
        if name == "generate":
            bench.clean_raw = results[name]
        print(f"{name}: {bench.seconds[name]:.0f} s, load {_load()}", flush=True)
    started = time.perf_counter()
    verdicts = compare(bench, lake_contents(results["reference run"]), lake_contents(results["hostile run"]))
    bench.seconds["identity check"] = time.perf_counter() - started
    print_table(bench, verdicts)
    print("\nseconds per phase: " + ", ".join(f"{k} {v:.0f}" for k, v in bench.seconds.items())
          + f"; load average now {_load()}")
    for problem in bench.problems:
        print(f"PROBLEM: {problem}")
    print("every bad day stopped or refused with its reason; every day identical to the reference"
          if not bench.problems else f"{len(bench.problems)} problem(s)")
    return 1 if bench.problems else 0


if __name__ == "__main__":
    sys.exit(main())
