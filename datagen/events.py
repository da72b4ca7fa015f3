"""Realistic raw event logs for a short-video feed, generated with vectorised numpy.

The world: users and items with latent factors chosen so the four tasks of the
PLE paper correlate in the complex way a real feed does:

- an item's *appeal* (thumbnail, title) drives plays but NOT completion: click-bait
  is played and abandoned, which is exactly the VTR/VCR conflict behind the seesaw;
- *quality* drives completion and shares (and a little play);
- *controversy* drives comments;
- users differ in activity (how many impressions), in their propensity to play,
  share and comment, in patience, and in taste per category; devices, feed
  position (position bias), hour of day, item age and duration all matter.

Events of one day are simulated as arrays, rendered to JSON lines with f-strings
(measured: ~6x faster than pandas.to_json), sorted by the time they were
RECEIVED, and written to `<raw>/events/dt=<received day>/part-NNNNN.json[.gz]`.
Engagement that is received after midnight lands in the next day's partition,
as it does in production. Optional faults are injected at given rates and
counted in a manifest (`<raw>/_manifest.json`) with the quarantine reason
`ple extract` must give for each.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from feature_eng import schema as S
from ple_runtime.errors import InputError

DAY_MS = 86_400_000
MARKER = "_SUCCESS"
HOUR_MS = 3_600_000

CATEGORIES = ("music", "gaming", "comedy", "news", "sports", "food", "travel", "beauty",
              "tech", "pets", "education", "film")
DEVICES = ("android", "ios", "web", "tv")
DEVICE_SHARE = (0.50, 0.30, 0.12, 0.08)
DEVICE_PLAY = np.array([0.0, 0.1, -0.3, 0.2])          # logit offsets
DEVICE_WATCH = np.array([0.0, 0.05, -0.3, 0.5])        # tv viewers finish more
AGE_BUCKETS = ("<18", "18-24", "25-34", "35-44", "45-54", "55+")
AGE_SHARE = (0.10, 0.25, 0.28, 0.18, 0.11, 0.08)
AGE_SHARE_EFFECT = np.array([0.2, 0.3, 0.1, 0.0, -0.1, -0.2])
AGE_COMMENT_EFFECT = np.array([0.5, 0.4, 0.1, -0.1, -0.2, -0.3])
GENDERS = ("f", "m", "u")
GENDER_SHARE = (0.47, 0.47, 0.06)
REGIONS = ("north", "south", "east", "west", "central", "coast", "mountain", "islands")
CHANNELS = ("wechat", "qq", "weibo", "link", "sms")
# share of the day's traffic per UTC hour (a lunch and an evening peak) and its effect on play
HOUR_TRAFFIC = np.array([2.0, 1.2, 0.8, 0.6, 0.5, 0.6, 1.2, 2.5, 3.5, 3.8, 4.0, 4.6,
                         5.8, 5.5, 4.6, 4.2, 4.3, 4.8, 5.6, 6.8, 7.6, 7.8, 6.4, 4.1])
HOUR_PLAY = np.array([0.2, 0.25, 0.3, 0.3, 0.2, 0.0, -0.2, -0.25, -0.2, -0.15, -0.1, 0.0,
                      0.05, 0.0, -0.05, -0.05, 0.0, 0.05, 0.1, 0.15, 0.2, 0.2, 0.2, 0.2])
MAX_POSITION = 29
ISO_SHARE = 0.7  # the rest of the clients send epoch milliseconds

TYPE_CODES = {name: code for code, name in enumerate(S.EVENT_TYPES)}
IMPRESSION, PLAY, SHARE, COMMENT = (TYPE_CODES[t] for t in S.EVENT_TYPES)


def _rate(description: str):
    return Field(0.0, ge=0, le=0.05, description=description)


class FaultRates(BaseModel):
    """Per-line probabilities of each injected fault (0 = none). Faulted lines are disjoint."""

    model_config = ConfigDict(extra="forbid")
    malformed: float = _rate("truncated JSON -> malformed_json")
    missing_field: float = _rate("a required field removed -> missing_field:<f>")
    bad_type: float = _rate('e.g. "watch_ms": "12s" -> bad_type:<f>')
    unknown_event_type: float = _rate('"like", "follow" -> unknown_event_type')
    bad_timestamp: float = _rate("unparseable ts -> bad_timestamp")
    clock_skew: float = _rate("ts days away from the partition -> clock_skew")
    negative_watch_ms: float = _rate("play lines -> negative_watch_ms")
    absurd_watch_ms: float = _rate("play lines, > 10^9 ms -> absurd_watch_ms")
    orphan: float = _rate("engagement naming no impression -> orphan_engagement")
    unknown_item: float = _rate("impression of an item missing from the catalog -> unknown_item")
    duplicate: float = _rate("a clean line delivered twice (same event_id) -> dropped, counted")
    late: float = _rate("clean engagement delivered in the NEXT day's partition (valid)")

    @classmethod
    def uniform(cls, rate: float) -> "FaultRates":
        return cls(**{name: rate for name in cls.model_fields})

    def any(self) -> bool:
        return any(getattr(self, name) > 0 for name in type(self).model_fields)


class GeneratorSettings(BaseModel):
    """What `generate` writes (`ple generate`'s config IS one of these, plus paths and flags)."""

    model_config = ConfigDict(extra="forbid")
    users: int = Field(2000, ge=1)
    items: int = Field(500, ge=2)
    days: int = Field(7, ge=1, le=366)
    impressions_per_day: int = Field(20_000, ge=1, description="weekend days get 15% more")
    impressions_on: dict[dt.date, Annotated[int, Field(ge=1)]] = Field(
        default_factory=dict, description="these days' impressions instead (a traffic spike, a larger test day); "
        "the world and the days before them stay as without it")
    start_date: dt.date = Field(dt.date(2026, 1, 1), description="first day (UTC)")
    seed: int = Field(0, ge=0)
    gzip: bool = Field(True, description="gzip the event files")
    gzip_level: int = Field(1, ge=1, le=9, description="1: ~3x faster than 6 for ~25% larger files")
    files_per_day: int = Field(2, ge=1, le=64, description="files per chunk of a day (one chunk up to "
                                                          "chunk_impressions)")
    chunk_impressions: int = Field(1_000_000, ge=100, description="a day is simulated and written this many "
                                   "impressions at a time: memory stays ~2 GB at any day size")
    faults: FaultRates = Field(default_factory=FaultRates)

    @model_validator(mode="after")
    def _impressions_on_generated_days(self):
        last = self.start_date + dt.timedelta(days=self.days - 1)
        outside = sorted(d.isoformat() for d in self.impressions_on if not self.start_date <= d <= last)
        if outside:
            raise ValueError(f"impressions_on names {', '.join(outside)}, outside the generated days "
                             f"{self.start_date}..{last}")
        return self

    def manifest_settings(self) -> dict:
        """These settings only (not the fields a subclass adds), JSON-safe, for the manifest; no
        `impressions_on` when empty, so such logs' manifest is byte-identical to earlier versions'."""
        settings = self.model_dump(mode="json", include=set(GeneratorSettings.model_fields))
        if not self.impressions_on:
            del settings["impressions_on"]
        return settings


# --- the world: users and items with latent factors ------------------------------------------

@dataclass
class World:
    user_activity: np.ndarray
    user_cum_activity: np.ndarray
    user_play: np.ndarray
    user_share: np.ndarray
    user_comment: np.ndarray
    user_patience: np.ndarray
    user_taste: np.ndarray       # (users, categories)
    user_device: np.ndarray
    user_age: np.ndarray
    user_gender: np.ndarray
    user_region: np.ndarray
    user_signup_ms: np.ndarray
    item_appeal: np.ndarray
    item_quality: np.ndarray
    item_controversy: np.ndarray
    item_category: np.ndarray
    item_author: np.ndarray
    item_duration_ms: np.ndarray
    item_upload_ms: np.ndarray
    # items sorted by upload time, with cumulative exposure weights (for "available at t" sampling)
    items_by_upload: np.ndarray
    upload_sorted_ms: np.ndarray
    exposure_cum_by_upload: np.ndarray


def _day_start_ms(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp() * 1000)


def build_world(settings: GeneratorSettings, rng: np.random.Generator) -> World:
    n_u, n_i, n_c = settings.users, settings.items, len(CATEGORIES)
    start_ms = _day_start_ms(settings.start_date)
    period_ms = settings.days * DAY_MS

    activity = rng.lognormal(0.0, 1.0, n_u)
    region_effect = rng.normal(0, 0.15, len(REGIONS))
    region = rng.integers(0, len(REGIONS), n_u)
    n_authors = max(1, n_i // 5)
    author_skill = rng.normal(0, 0.8, n_authors)
    author = rng.integers(0, n_authors, n_i)
    quality = 0.6 * author_skill[author] + 0.8 * rng.normal(0, 1, n_i)
    # controversy is its own factor, slightly anti-correlated with quality
    controversy = -0.3 * quality + rng.normal(0, 1, n_i)
    appeal = rng.normal(0, 1, n_i)
    duration_ms = np.clip(rng.lognormal(np.log(60_000), 0.9, n_i), 5_000, 1_800_000).astype(np.int64)
    # 70% of the catalog exists before the first day; the rest is uploaded during the period
    uploaded_before = rng.random(n_i) < 0.7
    upload_ms = np.where(
        uploaded_before,
        start_ms - rng.integers(HOUR_MS, 60 * DAY_MS, n_i),
        start_ms + rng.integers(0, period_ms, n_i),
    ).astype(np.int64)
    # the feed exposes appealing and good items more (the recommender at work)
    exposure = np.exp(0.5 * appeal + 0.3 * quality)
    order = np.argsort(upload_ms, kind="stable")
    return World(
        user_activity=activity,
        user_cum_activity=np.cumsum(activity),
        user_play=rng.normal(0, 0.5, n_u) + region_effect[region],
        user_share=rng.normal(0, 0.7, n_u),
        user_comment=rng.normal(0, 0.8, n_u),
        user_patience=rng.normal(0, 0.5, n_u),
        user_taste=rng.normal(0, 1, (n_u, n_c)),
        user_device=rng.choice(len(DEVICES), n_u, p=DEVICE_SHARE),
        user_age=rng.choice(len(AGE_BUCKETS), n_u, p=AGE_SHARE),
        user_gender=rng.choice(len(GENDERS), n_u, p=GENDER_SHARE),
        user_region=region,
        user_signup_ms=(start_ms - rng.integers(DAY_MS, 730 * DAY_MS, n_u)).astype(np.int64),
        item_appeal=appeal,
        item_quality=quality,
        item_controversy=controversy,
        item_category=rng.integers(0, n_c, n_i),
        item_author=author,
        item_duration_ms=duration_ms,
        item_upload_ms=upload_ms,
        items_by_upload=order,
        upload_sorted_ms=upload_ms[order],
        exposure_cum_by_upload=np.cumsum(exposure[order]),
    )


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# --- one day of behaviour ------------------------------------------------------------------------

@dataclass
class DayEvents:
    """All events caused by one day's impressions, as parallel arrays (one row per event)."""

    etype: np.ndarray        # int8 type code
    ts_ms: np.ndarray        # event time
    recv_ms: np.ndarray      # time received by the logging service (decides the partition)
    imp: np.ndarray          # index of the impression within the day
    extra: np.ndarray        # position | watch_ms | channel code | comment_len


@dataclass
class DayImpressions:
    user: np.ndarray
    item: np.ndarray
    ts_ms: np.ndarray
    recv_ms: np.ndarray
    position: np.ndarray
    device: np.ndarray
    engaged: np.ndarray      # bool: at least one engagement event


@dataclass
class _Plays:
    """The played impressions (indexes into the day's impressions) and how each play went."""

    played: np.ndarray
    first: np.ndarray        # watch_ms of the first play event
    second: np.ndarray       # watch_ms after a resume (0 when not resumed)
    resumed: np.ndarray      # bool: paused and resumed (two play events)
    play1_ts: np.ndarray
    play2_ts: np.ndarray
    end_ts: np.ndarray       # when the viewer stopped watching
    done: np.ndarray         # share of the video watched, at most 1


def simulate_day(world: World, day: dt.date, n_impressions: int, rng: np.random.Generator):
    n = n_impressions
    user, item, ts, hour, position, device = _show(world, _day_start_ms(day), n, rng)
    affinity = 0.6 * world.user_taste[user, world.item_category[item]]
    plays = _play(world, user, item, ts, hour, position, device, affinity, rng)
    played = plays.played
    p_user, p_item = user[played], item[played]
    age = world.user_age[p_user]
    share_logit = (-4.0 + 0.9 * world.item_quality[item][played] + 1.6 * plays.done + world.user_share[p_user]
                   + 0.3 * affinity[played] + AGE_SHARE_EFFECT[age])
    comment_logit = (-4.6 + 1.3 * world.item_controversy[p_item] + 0.7 * plays.done
                     + world.user_comment[p_user] + AGE_COMMENT_EFFECT[age])
    shared = rng.random(len(played)) < _sigmoid(share_logit)
    commented = rng.random(len(played)) < _sigmoid(comment_logit)

    engaged = np.zeros(n, dtype=bool)
    engaged[played] = True
    parts = [
        (np.full(n, IMPRESSION, np.int8), ts, np.arange(n), position),
        (np.full(len(played), PLAY, np.int8), plays.play1_ts, played, plays.first),
        (np.full(int(plays.resumed.sum()), PLAY, np.int8), plays.play2_ts[plays.resumed], played[plays.resumed],
         plays.second[plays.resumed]),
        (np.full(int(shared.sum()), SHARE, np.int8),
         plays.end_ts[shared] + rng.exponential(20_000, int(shared.sum())).astype(np.int64),
         played[shared], rng.integers(0, len(CHANNELS), int(shared.sum()))),
        (np.full(int(commented.sum()), COMMENT, np.int8),
         plays.end_ts[commented] + rng.exponential(45_000, int(commented.sum())).astype(np.int64),
         played[commented], np.maximum(1, rng.lognormal(3.0, 0.8, int(commented.sum()))).astype(np.int64)),
    ]
    etype, ev_ts, imp, extra = (np.concatenate(cols) for cols in zip(*parts))
    # delivery delay: usually a second or two; sometimes hours (offline clients)
    delay = rng.exponential(1_500, len(ev_ts)).astype(np.int64)
    offline = rng.random(len(ev_ts)) < 0.005
    delay[offline] += rng.integers(0, 3 * HOUR_MS, int(offline.sum()))
    recv = ev_ts + delay
    impressions = DayImpressions(user, item, ts, recv[:n], position, device, engaged)
    return impressions, DayEvents(etype, ev_ts.astype(np.int64), recv.astype(np.int64), imp, extra.astype(np.int64))


def _show(world: World, day_ms: int, n: int, rng: np.random.Generator):
    """The day's impressions: (user, item, ts, hour, position, device), users by activity, hours
    by traffic, items by exposure among those already uploaded at the impression time."""
    user = np.minimum(np.searchsorted(world.user_cum_activity, rng.random(n) * world.user_cum_activity[-1],
                                      side="right"), len(world.user_activity) - 1)
    hour_cum = np.cumsum(HOUR_TRAFFIC) / HOUR_TRAFFIC.sum()
    hour = np.minimum(np.searchsorted(hour_cum, rng.random(n), side="right"), 23)
    ts = day_ms + hour * HOUR_MS + rng.integers(0, HOUR_MS, n)
    # only items already uploaded at the impression time can be shown
    available = np.maximum(np.searchsorted(world.upload_sorted_ms, ts, side="right"), 1)
    draw = rng.random(n) * world.exposure_cum_by_upload[available - 1]
    pick = np.minimum(np.searchsorted(world.exposure_cum_by_upload, draw, side="right"), available - 1)
    item = world.items_by_upload[pick]
    position = np.minimum(rng.geometric(0.12, n) - 1, MAX_POSITION)
    device = np.where(rng.random(n) < 0.85, world.user_device[user], rng.integers(0, len(DEVICES), n))
    return user, item, ts, hour, position, device


def _play(world: World, user, item, ts, hour, position, device, affinity, rng: np.random.Generator) -> _Plays:
    """Which impressions are played, and how much of each video is watched."""
    appeal, quality = world.item_appeal[item], world.item_quality[item]
    age_days = np.maximum(ts - world.item_upload_ms[item], 0) / DAY_MS
    play_logit = (-0.9 + 1.1 * appeal + 0.25 * quality + world.user_play[user] + affinity
                  + DEVICE_PLAY[device] + HOUR_PLAY[hour] - 0.07 * position
                  - 0.2 * np.log1p(age_days) + 0.15 * np.log(world.user_activity[user]))
    played = np.flatnonzero(rng.random(len(user)) < _sigmoid(play_logit))

    # completion: quality and taste help, click-bait appeal hurts, long videos are abandoned
    p_user, p_item, p_dev = user[played], item[played], device[played]
    duration = world.item_duration_ms[p_item]
    watch_logit = (0.3 + 1.0 * quality[played] - 0.8 * appeal[played] + 0.8 * affinity[played]
                   - 0.45 * np.log(duration / 60_000) + DEVICE_WATCH[p_dev]
                   + world.user_patience[p_user] + rng.normal(0, 0.7, len(played)))
    ratio = _sigmoid(watch_logit)
    rewatch = rng.random(len(played)) < 0.12 * _sigmoid(quality[played])
    ratio = ratio + rewatch * rng.uniform(0.2, 1.0, len(played))
    watch_total = np.maximum(np.round(ratio * duration), 0).astype(np.int64)
    # some plays are paused and resumed: two play events for one impression
    resumed = rng.random(len(played)) < 0.10
    first = np.where(resumed, np.round(watch_total * rng.uniform(0.2, 0.8, len(played))), watch_total)
    first = first.astype(np.int64)
    play1_ts = ts[played] + 1_000 + rng.exponential(15_000, len(played)).astype(np.int64)
    play2_ts = play1_ts + first + rng.exponential(600_000, len(played)).astype(np.int64)
    second = watch_total - first
    end_ts = np.where(resumed, play2_ts + second, play1_ts + first)
    return _Plays(played, first, second, resumed, play1_ts, play2_ts, end_ts, np.minimum(ratio, 1.0))


# --- rendering to JSON lines -------------------------------------------------------------------

def _ts_tokens(ts_ms: np.ndarray, as_epoch: np.ndarray) -> list[str]:
    iso = np.datetime_as_string(ts_ms.astype("datetime64[ms]"), unit="ms", timezone="UTC").tolist()
    return [str(ms) if epoch else f'"{text}"' for text, ms, epoch in zip(iso, ts_ms.tolist(), as_epoch.tolist())]


def render_lines(day: dt.date, imps: DayImpressions, events: DayEvents, first_event_number: int,
                 rng: np.random.Generator, first_impression_number: int = 0) -> np.ndarray:
    """One JSON line per event (object array, in `events` order); event and impression ids are
    numbered from the given numbers (a day's later chunks continue its earlier ones)."""
    stamp = day.strftime("%Y%m%d")
    n = len(events.etype)
    ts_tok = np.array(_ts_tokens(events.ts_ms, rng.random(n) >= ISO_SHARE), dtype=object)
    event_no = np.arange(first_event_number, first_event_number + n)
    lines = np.empty(n, dtype=object)
    for code, name in enumerate(S.EVENT_TYPES):
        idx = np.flatnonzero(events.etype == code)
        imp = events.imp[idx]
        # the common head of the line, then the type's own fields; f-strings over zipped
        # lists are the fastest pure-Python rendering measured (~6x pandas.to_json)
        heads = [
            f'{{"event_id":"ev-{stamp}-{k:09d}","event_type":"{name}","ts":{t},"user_id":"u{u:07d}",'
            f'"item_id":"v{i:06d}","impression_id":"im-{stamp}-{m:08d}"'
            for k, t, u, i, m in zip(event_no[idx].tolist(), ts_tok[idx].tolist(), imps.user[imp].tolist(),
                                      imps.item[imp].tolist(), (imp + first_impression_number).tolist())
        ]
        extra = events.extra[idx].tolist()
        if name == "impression":
            devices = imps.device[imp].tolist()
            rendered = [f'{h},"position":{x},"device":"{DEVICES[d]}"}}' for h, x, d in zip(heads, extra, devices)]
        elif name == "play":
            rendered = [f'{h},"watch_ms":{x}}}' for h, x in zip(heads, extra)]
        elif name == "share":
            rendered = [f'{h},"channel":"{CHANNELS[x]}"}}' for h, x in zip(heads, extra)]
        else:
            rendered = [f'{h},"comment_len":{x}}}' for h, x in zip(heads, extra)]
        lines[idx] = rendered
    return lines


# --- faults --------------------------------------------------------------------------------------

@dataclass
class Partition:
    """Lines of one received-day partition plus what fault injection needs to know about them."""

    lines: np.ndarray        # object array of str
    etype: np.ndarray
    recv_ms: np.ndarray
    ts_ms: np.ndarray
    clean_target: np.ndarray  # bool: impression without engagement, or an engagement line
    imp_part: np.ndarray     # engagement: the partition index of its impression (-1 for impressions)

    def take(self, mask: np.ndarray) -> "Partition":
        return Partition(*(getattr(self, f.name)[mask] for f in fields(self)))

    @staticmethod
    def concat(parts: list["Partition"]) -> "Partition":
        return Partition(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Partition)))


def _edit(line: str, fn) -> str:
    record = json.loads(line)
    fn(record)
    return json.dumps(record, separators=(",", ":"))


# How each fault corrupts one line: (line, its event type, its index, rng, the partition's day
# start in ms) -> (the corrupted line, the quarantine reason `ple extract` must give).
# Every random draw happens here, in the order the lines are picked (the same seed, the same logs).

def _truncate(line: str, kind: str, k: int, rng: np.random.Generator, day_ms: int) -> tuple[str, str]:
    return line[:int(rng.integers(1, len(line) - 1))], S.MALFORMED_JSON


def _drop_field(line: str, kind: str, k: int, rng: np.random.Generator, day_ms: int) -> tuple[str, str]:
    required = S.COMMON_FIELDS + S.FIELDS_BY_TYPE[kind]
    missing = required[int(rng.integers(0, len(required)))]
    return _edit(line, lambda r: r.pop(missing)), S.missing_field(missing)


_WRONG_VALUES = {"impression": ("position", "top"), "play": ("watch_ms", "12s"),
                 "share": ("channel", {"name": "wechat"}), "comment": ("comment_len", "long")}


def _wrong_type(line: str, kind: str, k: int, rng: np.random.Generator, day_ms: int) -> tuple[str, str]:
    field_name, value = _WRONG_VALUES[kind]
    return _edit(line, lambda r: r.__setitem__(field_name, value)), S.bad_type(field_name)


def _unknown_type(line: str, kind: str, k: int, rng: np.random.Generator, day_ms: int) -> tuple[str, str]:
    other = ("like", "follow", "dislike")[int(rng.integers(0, 3))]
    return _edit(line, lambda r: r.__setitem__("event_type", other)), S.UNKNOWN_EVENT_TYPE


def _unparseable_ts(line: str, kind: str, k: int, rng: np.random.Generator, day_ms: int) -> tuple[str, str]:
    bad = ("not-a-timestamp", "2026-02-30T25:61:00Z", "12:00 yesterday")[int(rng.integers(0, 3))]
    return _edit(line, lambda r: r.__setitem__("ts", bad)), S.BAD_TIMESTAMP


def _skew_clock(line: str, kind: str, k: int, rng: np.random.Generator, day_ms: int) -> tuple[str, str]:
    shift = int(rng.integers(3, 31)) * DAY_MS * (1 if rng.random() < 0.5 else -1)

    def skew(r):
        r["ts"] = (r["ts"] + shift if isinstance(r["ts"], int)
                   else str(np.datetime_as_string(np.datetime64(r["ts"][:-1], "ms") + shift, unit="ms")) + "Z")
    return _edit(line, skew), S.CLOCK_SKEW


def _negative_watch(line: str, kind: str, k: int, rng: np.random.Generator, day_ms: int) -> tuple[str, str]:
    value = -int(rng.integers(1, 100_000))
    return _edit(line, lambda r: r.__setitem__("watch_ms", value)), S.NEGATIVE_WATCH_MS


def _absurd_watch(line: str, kind: str, k: int, rng: np.random.Generator, day_ms: int) -> tuple[str, str]:
    value = int(rng.integers(10**9, 10**11))
    return _edit(line, lambda r: r.__setitem__("watch_ms", value)), S.ABSURD_WATCH_MS


def _orphan(line: str, kind: str, k: int, rng: np.random.Generator, day_ms: int) -> tuple[str, str]:
    return _edit(line, lambda r: r.__setitem__("impression_id", f"im-orphan-{day_ms}-{k}")), S.ORPHAN_ENGAGEMENT


def _unknown_item(line: str, kind: str, k: int, rng: np.random.Generator, day_ms: int) -> tuple[str, str]:
    return _edit(line, lambda r: r.__setitem__("item_id", f"v-unknown-{k}")), S.UNKNOWN_ITEM


@dataclass(frozen=True)
class Fault:
    """One kind of corrupted line: its rate (a FaultRates field), which lines it may hit, how."""

    rate: str
    lines: str    # "clean": engagement lines and impressions nobody engaged with (corrupting an
                  # impression that has engagement would turn its engagement into orphans);
                  # "play", "engagement", "clean_impression"
    corrupt: Callable[[str, str, int, np.random.Generator, int], tuple[str, str]]


# In the order they are injected (each picks among the lines no earlier fault took).
FAULTS = (
    Fault("malformed", "clean", _truncate),
    Fault("missing_field", "clean", _drop_field),
    Fault("bad_type", "clean", _wrong_type),
    Fault("unknown_event_type", "clean", _unknown_type),
    Fault("bad_timestamp", "clean", _unparseable_ts),
    Fault("clock_skew", "clean", _skew_clock),
    Fault("negative_watch_ms", "play", _negative_watch),
    Fault("absurd_watch_ms", "play", _absurd_watch),
    Fault("orphan", "engagement", _orphan),
    Fault("unknown_item", "clean_impression", _unknown_item),
)


class _LinePicker:
    """Picks disjoint random sets of a partition's lines (a line gets at most one fault)."""

    def __init__(self, n: int, rng: np.random.Generator):
        self.n, self.rng = n, rng
        self.used = np.zeros(n, dtype=bool)
        self.order = rng.permutation(n)

    def pick(self, rate: float, eligible: np.ndarray) -> np.ndarray:
        if rate <= 0:
            return np.empty(0, dtype=np.int64)
        k = self.rng.binomial(self.n, rate)
        chosen = self.order[(eligible & ~self.used)[self.order]][:k]
        self.used[chosen] = True
        return np.sort(chosen)


def inject_faults(part: Partition, rates: FaultRates, rng: np.random.Generator, day_ms: int,
                  can_move_late: bool) -> tuple[Partition, Partition, dict[str, int], int]:
    """Return (this partition, lines moved to the next one, quarantine reason counts, duplicates)."""
    n = len(part.lines)
    lines = part.lines.copy()
    picker = _LinePicker(n, rng)
    is_engagement = part.etype != IMPRESSION
    eligible = {"clean": part.clean_target, "play": part.etype == PLAY, "engagement": is_engagement,
                "clean_impression": part.clean_target & ~is_engagement}
    reasons: dict[str, int] = {}
    for fault in FAULTS:
        for k in picker.pick(getattr(rates, fault.rate), eligible[fault.lines]):
            lines[k], reason = fault.corrupt(lines[k], S.EVENT_TYPES[part.etype[k]], int(k), rng, day_ms)
            reasons[reason] = reasons.get(reason, 0) + 1

    # Late: a clean engagement whose impression sits in this partition is delivered tomorrow.
    late = picker.pick(rates.late, is_engagement & (part.imp_part == day_ms // DAY_MS)) \
        if can_move_late else np.empty(0, dtype=np.int64)
    duplicated = picker.pick(rates.duplicate, np.ones(n, dtype=bool))
    kept, moved = _deliver(Partition(lines, part.etype, part.recv_ms, part.ts_ms, part.clean_target, part.imp_part),
                           late, duplicated, rng, day_ms)
    return kept, moved, reasons, len(duplicated)


def _deliver(result: Partition, late: np.ndarray, duplicated: np.ndarray, rng: np.random.Generator,
             day_ms: int) -> tuple[Partition, Partition]:
    """(the lines kept in this partition plus the retried copies of `duplicated`, the `late` lines
    moved to the next day's partition)."""
    index = np.arange(len(result.lines))
    moved = result.take(np.isin(index, late))
    if len(late):
        moved.recv_ms = day_ms + DAY_MS + rng.integers(0, 6 * HOUR_MS, len(late))
    keep = ~np.isin(index, late)
    copies = result.take(np.isin(index, duplicated))
    copies.recv_ms = copies.recv_ms + rng.integers(1, 60_000, len(duplicated))  # a client retry
    copies.clean_target = np.zeros(len(duplicated), dtype=bool)
    return Partition.concat([result.take(keep), copies]), moved


# --- writing -----------------------------------------------------------------------------------------

def _write_lines(path: Path, lines: list[str], use_gzip: bool, level: int) -> int:
    data = ("\n".join(lines) + "\n").encode("utf-8") if lines else b""
    tmp = path.with_name("." + path.name + ".tmp")  # hidden from Spark while being written
    if use_gzip:
        # mtime=0: the same seed gives byte-identical files
        with open(tmp, "wb") as raw, gzip.GzipFile(filename=path.name, mode="wb", compresslevel=level,
                                                   fileobj=raw, mtime=0) as gz:
            gz.write(data)
    else:
        tmp.write_bytes(data)
    os.replace(tmp, path)
    return len(data)


def _iso(ms: np.ndarray) -> list[str]:
    return np.datetime_as_string(np.asarray(ms).astype("datetime64[ms]"), unit="ms", timezone="UTC").tolist()


def write_dimensions(world: World, raw_dir: Path) -> None:
    items_dir, users_dir = raw_dir / "items", raw_dir / "users"
    items_dir.mkdir(parents=True, exist_ok=True)
    users_dir.mkdir(parents=True, exist_ok=True)
    item_lines = [
        json.dumps({"item_id": f"v{i:06d}", "author_id": f"a{a:05d}", "category": CATEGORIES[c],
                    "duration_ms": int(d), "upload_ts": u}, separators=(",", ":"))
        for i, (a, c, d, u) in enumerate(zip(world.item_author.tolist(), world.item_category.tolist(),
                                             world.item_duration_ms.tolist(), _iso(world.item_upload_ms)))
    ]
    user_lines = [
        json.dumps({"user_id": f"u{i:07d}", "age_bucket": AGE_BUCKETS[a], "gender": GENDERS[g],
                    "region": REGIONS[r], "signup_ts": s}, separators=(",", ":"))
        for i, (a, g, r, s) in enumerate(zip(world.user_age.tolist(), world.user_gender.tolist(),
                                             world.user_region.tolist(), _iso(world.user_signup_ms)))
    ]
    _write_lines(items_dir / "part-00000.json", item_lines, False, 0)
    _write_lines(users_dir / "part-00000.json", user_lines, False, 0)


class GeneratedLogsExist(InputError, FileExistsError):
    """Logs of another generation are where this one would write (and overwrite is off)."""


def prepare_output(raw_dir: Path, overwrite: bool) -> None:
    """Refuse to mix two generations; with overwrite, remove only what a generation writes."""
    owned = [raw_dir / "events", raw_dir / "items", raw_dir / "users", raw_dir / "_manifest.json"]
    existing = [p for p in owned if p.exists()]
    if existing and not overwrite:
        raise GeneratedLogsExist(
            f"{existing[0]} already exists; pass --overwrite to replace the generated logs under {raw_dir}")
    for path in existing:
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def write_partition(pool: ThreadPoolExecutor, out_dir: Path, part: Partition, settings: GeneratorSettings,
                    first_file: int = 0) -> int:
    """Lines of one received-day partition (or of one chunk of it) in order of arrival, split into
    `files_per_day` files numbered from `first_file`, written in parallel. Returns the bytes written
    (uncompressed). The caller writes the _SUCCESS marker once the partition is whole."""
    ordered = part.lines[np.argsort(part.recv_ms, kind="stable")].tolist()
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = ".json.gz" if settings.gzip else ".json"
    chunks = np.array_split(np.arange(len(ordered)), settings.files_per_day)
    futures = [pool.submit(_write_lines, out_dir / f"part-{first_file + i:05d}{suffix}",
                           ordered[c[0]:c[-1] + 1] if len(c) else [], settings.gzip, settings.gzip_level)
               for i, c in enumerate(chunks)]
    return sum(f.result() for f in futures)


def generate(settings: GeneratorSettings, raw_dir: str | Path, overwrite: bool = False,
             progress=None) -> dict:
    """Write raw logs and dimension snapshots under raw_dir; return (and write) the manifest."""
    raw_dir = Path(raw_dir)
    prepare_output(raw_dir, overwrite)
    seeds = np.random.SeedSequence(settings.seed)
    world_seed, *day_seeds = seeds.spawn(1 + settings.days)
    world = build_world(settings, np.random.default_rng(world_seed))
    write_dimensions(world, raw_dir)

    carry: list[Partition] = []   # lines received after their day: they go to a later partition
    manifest_parts: dict[str, dict] = {}
    pool = ThreadPoolExecutor(max_workers=max(1, min(settings.files_per_day, os.cpu_count() or 1)))
    try:
        for d in range(settings.days):
            day = settings.start_date + dt.timedelta(days=d)
            manifest_parts[day.isoformat()], carry = _generate_day(
                settings, world, d, np.random.default_rng(day_seeds[d]), carry, pool, raw_dir)
            if progress:
                progress(day, manifest_parts[day.isoformat()])
        dropped_after_end = len(Partition.concat(carry).lines)
    finally:
        pool.shutdown()

    manifest = {
        "settings": settings.manifest_settings(),
        "partitions": manifest_parts,
        "totals": {
            **{key: sum(p[key] for p in manifest_parts.values())
               for key in ("lines", "quarantined", "duplicates", "late_moved_to_next_day")},
            "dropped_received_after_last_day": dropped_after_end,
        },
    }
    (raw_dir / "_manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def _generate_day(settings: GeneratorSettings, world: World, d: int, rng: np.random.Generator,
                  carry: list[Partition], pool: ThreadPoolExecutor, raw_dir: Path) -> tuple[dict, list[Partition]]:
    """Simulate day `d` and write the partition of the lines received that day (with its faults), in
    chunks of at most `chunk_impressions` impressions so that memory does not grow with the day;
    then its _SUCCESS marker (last: the partition is complete, docs/DATA.md). Returns (its manifest
    entry, the lines received later: carried to the next days)."""
    day = settings.start_date + dt.timedelta(days=d)
    n_imp = settings.impressions_on.get(day) or int(round(
        settings.impressions_per_day * (1.15 if day.weekday() >= 5 else 1.0)))
    out_dir = raw_dir / "events" / f"dt={day.isoformat()}"
    entry = {"lines": 0, "events_by_type": dict.fromkeys(S.EVENT_TYPES, 0), "impressions_simulated": n_imp,
             "quarantine": {}, "quarantined": 0, "duplicates": 0, "late_moved_to_next_day": 0,
             "bytes_uncompressed": 0}
    later: list[Partition] = []
    numbers = (0, 0)   # the first impression and event numbers of the next chunk
    for chunk, first in enumerate(range(0, n_imp, settings.chunk_impressions)):
        size = min(settings.chunk_impressions, n_imp - first)
        result = _generate_chunk(settings, world, d, size, numbers, rng, carry if chunk == 0 else [])
        entry["bytes_uncompressed"] += write_partition(pool, out_dir, result.received, settings,
                                                       first_file=chunk * settings.files_per_day)
        entry["lines"] += len(result.received.lines)
        for code, name in enumerate(S.EVENT_TYPES):
            entry["events_by_type"][name] += int((result.received.etype == code).sum())
        for reason, count in result.reasons.items():
            entry["quarantine"][reason] = entry["quarantine"].get(reason, 0) + count
        entry["duplicates"] += result.duplicates
        entry["late_moved_to_next_day"] += len(result.moved_late.lines)
        later += [result.received_later, result.moved_late]
        numbers = result.next_numbers
    (out_dir / MARKER).touch()
    entry["quarantine"] = dict(sorted(entry["quarantine"].items()))
    entry["quarantined"] = int(sum(entry["quarantine"].values()))
    return entry, later


@dataclass
class _Chunk:
    """What one chunk of a day's impressions gives."""

    received: Partition          # lines received on the day, with their faults
    moved_late: Partition        # clean engagement moved to the next day's partition (a fault)
    reasons: dict[str, int]      # quarantine reason -> lines
    duplicates: int
    received_later: Partition    # lines whose delivery falls on a later day
    next_numbers: tuple[int, int]  # the first impression and event numbers of the next chunk


def _generate_chunk(settings: GeneratorSettings, world: World, d: int, n_imp: int, numbers: tuple[int, int],
                    rng: np.random.Generator, carry: list[Partition]) -> _Chunk:
    """`n_imp` impressions of day `d` and their events, numbered from `numbers`, plus `carry` (lines of
    earlier days delivered on this one)."""
    day = settings.start_date + dt.timedelta(days=d)
    start_ms = _day_start_ms(settings.start_date)
    imps, events = simulate_day(world, day, n_imp, rng)
    lines = render_lines(day, imps, events, numbers[1], rng, first_impression_number=numbers[0])
    imp_part = np.where(events.etype == IMPRESSION, -1, imps.recv_ms[events.imp] // DAY_MS)
    clean_target = (events.etype != IMPRESSION) | ~imps.engaged[events.imp]
    today = Partition(lines, events.etype, events.recv_ms, events.ts_ms, clean_target, imp_part)
    pending = Partition.concat([today, *carry])
    this_day = pending.recv_ms // DAY_MS == start_ms // DAY_MS + d
    part, moved, reasons, duplicates = inject_faults(
        pending.take(this_day), settings.faults, rng, start_ms + d * DAY_MS, can_move_late=d + 1 < settings.days)
    return _Chunk(part, moved, reasons, duplicates, pending.take(~this_day),
                  (numbers[0] + n_imp, numbers[1] + len(events.etype)))
