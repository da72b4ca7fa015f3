"""A small hand-written raw log with known answers (three partitions around day D).

Every line is written out here so a reader can check the expected labels and
counts by hand; the expectations live next to the lines that cause them.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

PREV, DAY, NEXT = "2026-03-01", "2026-03-02", "2026-03-03"


def event(event_id, event_type, ts, user, item, **fields) -> str:
    record = {"event_id": event_id, "event_type": event_type, "ts": ts, "user_id": user, "item_id": item}
    record.update(fields)
    return json.dumps(record)


def imp(event_id, impression_id, ts, user, item, position=0, device="android") -> str:
    return event(event_id, "impression", ts, user, item, impression_id=impression_id, position=position,
                 device=device)


def play(event_id, impression_id, ts, user, item, watch_ms) -> str:
    return event(event_id, "play", ts, user, item, impression_id=impression_id, watch_ms=watch_ms)


ITEMS = [
    {"item_id": "v1", "author_id": "a1", "category": "music", "duration_ms": 60000, "upload_ts": "2026-02-01T00:00:00Z"},
    {"item_id": "v2", "author_id": "a2", "category": "news", "duration_ms": 10000, "upload_ts": "2026-03-01T00:00:00Z"},
    {"item_id": "v3", "author_id": "a1", "category": "music", "duration_ms": 120000, "upload_ts": "2026-02-20T00:00:00Z"},
]
USERS = [  # u3 is missing from the snapshot on purpose: its dims become OOV (id 0)
    {"user_id": "u1", "age_bucket": "18-24", "gender": "f", "region": "north", "signup_ts": "2025-01-01T00:00:00Z"},
    {"user_id": "u2", "age_bucket": "25-34", "gender": "m", "region": "south", "signup_ts": "2025-06-01T00:00:00Z"},
]

PREV_LINES = [
    imp("p1", "imp-p1", "2026-03-01T10:00:00Z", "u1", "v1"),
    play("p2", "imp-p1", "2026-03-01T10:01:00Z", "u1", "v1", 60000),
    imp("p3", "imp-p2", "2026-03-01T23:58:00Z", "u2", "v1", position=1, device="ios"),
    event("e-cross", "comment", "2026-03-01T11:00:00Z", "u1", "v1", impression_id="imp-p1", comment_len=12),
]

DAY_GOOD = [
    # A: two plays (30 s + 20 s of a 60 s video) and a share -> play 1, watch_ratio 50/60, share 1
    imp("a1", "imp-a", "2026-03-02T10:00:00Z", "u1", "v1", position=3),
    play("a2", "imp-a", "2026-03-02T10:00:30Z", "u1", "v1", 30000),
    play("a3", "imp-a", "2026-03-02T10:20:00Z", "u1", "v1", 20000),
    event("a4", "share", "2026-03-02T10:21:00Z", "u1", "v1", impression_id="imp-a", channel="wechat"),
    # B: impression at 23:50; its play comes after midnight, in NEXT's partition -> play 1, ratio capped at 1
    imp("b1", "imp-b", "2026-03-02T23:50:00Z", "u2", "v2", position=0, device="ios"),
    # C: epoch-ms timestamp; a play 7 h later (outside the 6 h window) -> play 0; a comment -> comment 1
    imp("c1", "imp-c", 1772438400000, "u1", "v3", position=40, device="web"),   # 2026-03-02T08:00:00Z
    play("c2", "imp-c", "2026-03-02T15:00:00Z", "u1", "v3", 5000),
    event("c3", "comment", "2026-03-02T08:30:00Z", "u1", "v3", impression_id="imp-c", comment_len=40),
    # D: unknown user; the impression delivered twice and the comment three times
    imp("d1", "imp-d", "2026-03-02T12:00:00Z", "u3", "v1", position=2, device="tv"),
    imp("d1", "imp-d", "2026-03-02T12:00:00Z", "u3", "v1", position=2, device="tv"),
    event("d2", "comment", "2026-03-02T12:05:00Z", "u3", "v1", impression_id="imp-d", comment_len=5),
    event("d2", "comment", "2026-03-02T12:05:00Z", "u3", "v1", impression_id="imp-d", comment_len=5),
    event("d2", "comment", "2026-03-02T12:05:00Z", "u3", "v1", impression_id="imp-d", comment_len=5),
    # E: late engagement of yesterday's impression imp-p2: accepted (not an orphan), counts for PREV
    play("p-late", "imp-p2", "2026-03-02T00:05:00Z", "u2", "v1", 30000),
    # F: a retry of yesterday's comment e-cross -> duplicate
    event("e-cross", "comment", "2026-03-01T11:00:00Z", "u1", "v1", impression_id="imp-p1", comment_len=12),
    # H: yesterday's impression delivered after midnight -> an example of PREV, not of DAY
    imp("h1", "imp-h", "2026-03-01T23:59:00Z", "u1", "v2"),
]
DAY_DUPLICATES = 4  # d1 once, d2 twice, e-cross once

# (line, reason): every kind of bad line
DAY_BAD = [
    ('{"event_id": "bad1", "event_type": "play"', "malformed_json"),
    ("[1, 2]", "malformed_json"),
    ("", "empty_line"),
    (event("bad3", "impression", "2026-03-02T09:00:00Z", "u1", "v1", impression_id="imp-x3", position=1,
           device="ios").replace('"user_id": "u1", ', ""), "missing_field:user_id"),
    (event("bad4", "play", "2026-03-02T10:05:00Z", "u1", "v1", impression_id="imp-a"), "missing_field:watch_ms"),
    (play("bad5", "imp-a", "2026-03-02T10:06:00Z", "u1", "v1", "12s"), "bad_type:watch_ms"),
    (event("bad6", "impression", "2026-03-02T09:00:00Z", {"id": 1}, "v1", impression_id="imp-x6",
           position=1, device="ios"), "bad_type:user_id"),
    (event("bad7", "like", "2026-03-02T10:07:00Z", "u1", "v1", impression_id="imp-a"), "unknown_event_type"),
    (play("bad8", "imp-a", "2026-03-02T10:08:00Z", "u1", "v1", -5), "negative_watch_ms"),
    (play("bad9", "imp-a", "2026-03-02T10:09:00Z", "u1", "v1", 10_000_000_000), "absurd_watch_ms"),
    (imp("bad10", "imp-x10", "yesterday", "u1", "v1"), "bad_timestamp"),
    (imp("bad11", "imp-x11", "2026-02-01T00:00:00Z", "u1", "v1"), "clock_skew"),
    (play("bad12", "imp-nowhere", "2026-03-02T10:10:00Z", "u1", "v1", 1000), "orphan_engagement"),
    (imp("bad13", "imp-x13", "2026-03-02T10:11:00Z", "u1", "v999"), "unknown_item"),
]

NEXT_LINES = [
    play("b2", "imp-b", "2026-03-03T00:10:00Z", "u2", "v2", 25000),
    # G: DAY's impression received after midnight -> an example of DAY
    imp("g1", "imp-g", "2026-03-02T23:59:59Z", "u2", "v1"),
    imp("n1", "imp-n", "2026-03-03T09:00:00Z", "u1", "v1"),
]

# expected labels of DAY's examples: impression_id -> (play, watch_ratio, share, comment)
EXPECTED_DAY_LABELS = {
    "imp-a": (1, 50000 / 60000, 1, 0),
    "imp-b": (1, 1.0, 0, 0),
    "imp-c": (0, None, 0, 1),
    "imp-d": (0, None, 0, 1),
    "imp-g": (0, None, 0, 0),
}
EXPECTED_PREV_LABELS = {
    "imp-p1": (1, 1.0, 0, 1),
    "imp-p2": (1, 0.5, 0, 0),
    "imp-h": (0, None, 0, 0),
}


def write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = ("\n".join(lines) + "\n").encode()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as handle:
            handle.write(data)
    else:
        path.write_bytes(data)


MARKER = "_SUCCESS"  # the raw contract: a partition is complete once its marker exists


def write_scenario(raw: Path, markers: bool = True) -> None:
    write_lines(raw / "items" / "items.json", [json.dumps(i) for i in ITEMS])
    write_lines(raw / "users" / "users.json", [json.dumps(u) for u in USERS])
    events = raw / "events"
    write_lines(events / f"dt={PREV}" / "part-0.json.gz", PREV_LINES)
    # DAY in two files, one gzipped, one plain
    write_lines(events / f"dt={DAY}" / "part-0.json.gz", DAY_GOOD)
    write_lines(events / f"dt={DAY}" / "part-1.json", [line for line, _ in DAY_BAD])
    write_lines(events / f"dt={NEXT}" / "part-0.json", NEXT_LINES)
    if markers:
        for day in (PREV, DAY, NEXT):
            (events / f"dt={day}" / MARKER).touch()


def day_lines_read() -> int:
    return len(DAY_GOOD) + len(DAY_BAD)
