"""The raw logs as extract reads them (contract: docs/DATA.md, "The raw log contract").

    <raw>/events/dt=YYYY-MM-DD/*.json[.gz]   + _SUCCESS, written LAST when the partition is complete
    <raw>/items/, <raw>/users/               dimension snapshots

Every check goes through Hadoop's FileSystem, so local folders and remote storage are
treated alike; nothing is read by Spark before the partitions of every day to extract
have been checked.
"""

from __future__ import annotations

import hashlib
import re
from functools import reduce
from collections.abc import Callable
from dataclasses import dataclass

from feature_eng.params import neighbours
from ple_runtime.errors import InputError
from ple_runtime.hadoop_storage import FileEntry, HadoopFileSystem

MARKER = "_SUCCESS"  # a partition is complete once this file exists (written after its data files)
NEXT_FINGERPRINT = "next_partition_fingerprint"  # data quality: which copy of D+1 gave D its late engagement
GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class RawPartition:
    day: str
    folder: str
    files: tuple[FileEntry, ...]
    complete: bool          # the _SUCCESS marker is there

    def fingerprint(self) -> float:
        """Its data files' names and sizes, hashed to 48 bits (exact in the data-quality table's
        double): a partition re-delivered, completed or rewritten gets another one. Sizes only, not
        times, so the same files copied or generated again keep it."""
        listing = "\n".join(f"{entry.name}\t{entry.size}" for entry in self.files)
        return float(int(hashlib.sha256(listing.encode()).hexdigest()[:12], 16))


@dataclass(frozen=True)
class DayPartitions:
    """The partitions one day's extract reads: the day's own, and its neighbours when present."""

    day: RawPartition
    previous: RawPartition | None
    next: RawPartition | None

    def read(self) -> list[RawPartition]:
        return [p for p in (self.previous, self.day, self.next) if p is not None]

    def incomplete(self) -> list[RawPartition]:
        """Partitions read without their marker (neighbours, or any with --allow-incomplete)."""
        return [p for p in self.read() if not p.complete]

    def figures(self) -> dict[str, float]:
        """Data-quality figures: which neighbours were read, and whether they were complete."""
        return {
            "previous_partition_read": float(self.previous is not None),
            "next_partition_read": float(self.next is not None),
            "previous_partition_complete": float(self.previous is not None and self.previous.complete),
            "next_partition_complete": float(self.next is not None and self.next.complete),
        }

    def recorded_figures(self) -> dict[str, float]:
        """`figures`, and which copy of D+1 was read (check_next_day_copy compares it when D+1 is extracted)."""
        return {**self.figures(), NEXT_FINGERPRINT: self.next.fingerprint() if self.next is not None else 0.0}


class RawLogs:
    def __init__(self, spark, root: str):
        self.spark, self.root = spark, root.rstrip("/")
        self.fs = HadoopFileSystem(spark)

    def events_dir(self, day: str) -> str:
        return f"{self.root}/events/dt={day}"

    def partition(self, day: str) -> RawPartition | None:
        """The partition of `day`, or None when its folder is absent or holds no data file."""
        folder = self.events_dir(day)
        files = self.fs.list_files(folder)
        if not files:
            return None
        return RawPartition(day, folder, tuple(files), self.fs.exists(f"{folder}/{MARKER}"))

    def _required(self, day: str, allow_incomplete: bool, why: str = "") -> RawPartition:
        folder = self.events_dir(day)
        found = self.partition(day)
        if found is None:
            state = "holds no data files" if self.fs.is_dir(folder) else "does not exist"
            raise InputError(f"no raw events for this day: {folder} {state}{why}")
        if not found.complete and not allow_incomplete:
            raise InputError(
                f"the raw partition {folder} has no {MARKER} marker: its writer may not have finished{why}. "
                f"Wait for {folder}/{MARKER}, or pass --allow-incomplete to read it as it is "
                "(logs written by hand, or by a shipper that writes no marker)")
        return found

    def plan(self, days: list[str], require_next_day: bool, allow_incomplete: bool) -> dict[str, DayPartitions]:
        """The partitions of every day to extract, checked (present, complete, readable) before
        any is read. A neighbour (D-1, D+1) is read when it holds files, complete or not (it is
        context: engagement of D's impressions, earlier copies of retried events); whether it
        was complete goes into the data-quality figures and a warning."""
        plans: dict[str, DayPartitions] = {}
        for day in days:
            previous, following = neighbours(day)
            if require_next_day:
                next_partition = self._required(following, allow_incomplete,
                                                " (require_next_day: D+1 completes the labels of D)")
            else:
                next_partition = self.partition(following)
            plans[day] = DayPartitions(self._required(day, allow_incomplete), self.partition(previous), next_partition)
        for partition in {p.folder: p for plan in plans.values() for p in plan.read()}.values():
            self.check_readable(partition)
        return plans

    def check_readable(self, partition: RawPartition) -> None:
        """Every file opens, and a `.gz` file starts as gzip data (a cheap check of each file
        before Spark reads them; a file truncated later on is reported when read)."""
        for entry in partition.files:
            try:
                head = self.fs.head(entry.path, len(GZIP_MAGIC))
            except OSError as err:
                raise InputError(f"cannot read {entry.path}: {err}") from None
            if entry.name.endswith(".gz") and head != GZIP_MAGIC:
                raise InputError(f"cannot read {entry.path}: named .gz but is not gzip data")

    def read_lines(self, partitions: list[RawPartition]):
        """(dt, source_file, value): every line of exactly the files that were checked, of several
        partitions at once (one scan; `dt` is the partition folder's day)."""
        from pyspark.sql import functions as F

        source = F.input_file_name()
        return self.spark.read.text([e.path for p in partitions for e in p.files]).select(
            F.regexp_extract(source, r"/dt=([0-9]{4}-[0-9]{2}-[0-9]{2})/[^/]+$", 1).alias("dt"),
            source.alias("source_file"), F.col("value"))

    def read_snapshot(self, what: str):
        """The `items` or `users` snapshot as text lines."""
        folder = f"{self.root}/{what}"
        files = self.fs.list_files(folder)
        if not files:
            raise InputError(f"the {what[:-1]} snapshot is missing: {folder} holds no data files")
        return self.spark.read.text([e.path for e in files])


def check_next_day_copy(plan: DayPartitions, previous_figures: dict[str, float] | None) -> None:
    """Refuse to extract D when the lake's D-1 was extracted with another copy of D's partition as
    its next day (re-delivered, completed or rewritten since): D-1's labels (late engagement) and
    quarantine come from the old copy, and D would silently build on them."""
    recorded = (previous_figures or {}).get(NEXT_FINGERPRINT)
    if not recorded or recorded == plan.day.fingerprint():  # absent: D-1 read no D, or a lake older than this
        return
    previous = neighbours(plan.day.day)[0]
    raise InputError(
        f"the raw partition {plan.day.folder} changed after {previous} was extracted with it as its next day "
        f"(its files' names or sizes differ): {previous}'s labels come from the earlier copy. Extract both "
        f"again, in order: ple extract --start {previous} --end {plan.day.day}. Nothing was written.")


_FILE_IN_ERROR = re.compile(r"[Ee]ncountered error while reading file (\S+?)\.?(?:\s|$)")


def failed_file(err: BaseException) -> str | None:
    """The file Spark names in a read failure ("Encountered error while reading file <path>")."""
    match = _FILE_IN_ERROR.search(str(err))
    return match.group(1) if match else None


def first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


class ParsedPartitions:
    """Each raw partition parsed ONCE per run and kept (a checkpoint) while a day still needs
    it: day D reads D-1, D and D+1, so a run over D1..Dn parses each of D1-1..Dn+1 once, and
    what no later day reads is dropped. The partitions a pass needs are parsed together (one
    scan, one plan: the validation expression is large, and planning it costs about a second)."""

    def __init__(self, raw: RawLogs, plans: dict[str, DayPartitions],
                 parse: Callable[[object, object], object], checkpoint: Callable[[object], object],
                 release: Callable[[object], None]):
        self.raw, self.plans = raw, plans
        self._parse, self._checkpoint, self._release = parse, checkpoint, release
        self._parsed: dict[str, tuple[object, int]] = {}   # day -> (parsed lines holding it, lines read)

    def lines_for(self, days: list[str]):
        """(parsed lines of the partitions `days` read, each row with `day` (S.EXTRACT_DAY): the
        day it is read for, so a line is there once for each of those days that reads its
        partition; {day: lines in the day's own partition}). Partitions not parsed yet are parsed
        and counted in one Spark job."""
        from feature_eng.literal import explode_mapped
        from feature_eng.schema import EXTRACT_DAY

        reads = [(partition.day, day) for day in days for partition in self.plans[day].read()]
        needed = sorted({partition for partition, _ in reads})
        todo = {p.day: p for day in days for p in self.plans[day].read() if p.day not in self._parsed}
        if todo:
            self._parse_all(list(todo.values()))
        self._drop_before(needed[0])
        frames = list({id(self._parsed[p][0]): self._parsed[p][0] for p in needed}.values())
        lines = reduce(lambda a, b: a.unionByName(b), frames)
        read_for = {partition: [day for p, day in reads if p == partition] for partition in needed}
        return explode_mapped(lines, "dt", read_for, EXTRACT_DAY), {day: self._parsed[day][1] for day in days}

    def _drop_before(self, first_needed: str) -> None:
        """Release what no later day reads: a parsed frame whose partitions are all before
        `first_needed` is dropped; one that still holds needed partitions is cut down to them
        (a copy of those only), so a run never keeps more than its pass needs."""
        from pyspark.sql import functions as F

        stale = [day for day in self._parsed if day < first_needed]
        for frame in list({id(self._parsed[day][0]): self._parsed[day][0] for day in stale}.values()):
            keep = [day for day, (kept, _) in self._parsed.items() if kept is frame and day >= first_needed]
            if keep:
                carved = self._checkpoint(frame.where(F.col("dt").isin(keep)))
                carved.count()  # computed before the frame it is cut from goes
                self._parsed.update({day: (carved, self._parsed[day][1]) for day in keep})
            self._release(frame)
        for day in stale:
            del self._parsed[day]

    def _parse_all(self, partitions: list[RawPartition]) -> None:
        from pyspark.sql import functions as F

        extracted = sorted(p.day for p in partitions if p.day in self.plans)  # raw text kept for their quarantine
        frame = self._checkpoint(self._parse(self.raw.read_lines(partitions), F.col("dt").isin(extracted)))
        try:
            counts = {r["dt"]: r["count"] for r in frame.groupBy("dt").count().collect()}  # materialises it
        except Exception as err:  # noqa: BLE001 - Spark raises Py4J/Java errors of many kinds
            file = failed_file(err)
            where = f"file {file}" if file else f"partitions {[p.folder for p in partitions]}"
            raise InputError(f"cannot read the raw logs under {self.raw.root}: {where} "
                             f"({first_line(err)})") from err
        if unplaced := set(counts) - {p.day for p in partitions}:  # a file path read_lines could not place
            raise InputError(f"lines of {sorted(unplaced)} read from {[p.folder for p in partitions]}: "
                             "a raw file's path does not end in /dt=YYYY-MM-DD/<file>")
        for partition in partitions:
            self._parsed[partition.day] = (frame, int(counts.get(partition.day, 0)))
