"""The publish lease: publishers serialise through the registry itself, not a file lock, so
publishers on different hosts against one tracking server serialise too.

The lease is a ticket queue built on the registry's one atomic operation we need, creating a
model version (the store gives every new version of a registered model the next number under a
unique key, retrying on conflicts; deleted versions keep their numbers, so tickets are never
reused): each publisher creates a version of the registered model `<name>.publish-lease` (its
ticket) tagged with its holder id, then waits until every lower ticket is gone. It holds the
lease from then until it deletes its ticket. While waiting and holding, a thread bumps the
ticket's `ple.lease.beat` tag every ttl/4 s. A waiter that sees a lower ticket's beat unchanged
for `ttl_s` seconds of ITS OWN clock (so clocks of different hosts need not agree) marks it
expired and deletes it: a crashed publisher blocks the others for at most `ttl_s`. The record
says which tickets were waited for and which expired.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator

from model_registry.registry import RegistrySettings, _already_exists, _not_found, client
from ple_runtime.errors import StageError


class LeaseLost(StageError):
    """A waiter judged this publisher's lease expired (no heartbeat for longer than its TTL)."""


class LeaseTimeout(StageError, TimeoutError):
    """The publish lease was not acquired in time (other publishers alive ahead of this one)."""


@dataclass
class Lease:
    """A held publish lease; `check()` before each registry write (fails if another publisher took over)."""

    mlflow_client: Any
    queue: str
    ticket: int
    holder: str
    record: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        try:
            version = self.mlflow_client.get_model_version(self.queue, str(self.ticket))
        except Exception as error:  # noqa: BLE001
            if _not_found(error):
                raise LeaseLost(f"publish lease ticket {self.ticket} of {self.queue} was removed: another publisher "
                                "judged this one dead (no heartbeat for longer than the lease TTL)") from None
            raise
        if version.tags.get("ple.lease.expired_by"):
            raise LeaseLost(f"publish lease ticket {self.ticket} was expired by {version.tags['ple.lease.expired_by']}")


def _take_ticket(mlflow_client, settings: RegistrySettings, holder: str, ttl_s: float) -> int:
    """Create the queue (once) and this publisher's ticket: the next version number of the queue."""
    try:
        mlflow_client.create_registered_model(
            settings.lease_name, description=f"publish lease queue of {settings.model_name} (ple publish); "
                                             "not a model: every version is one publisher's ticket")
    except Exception as error:  # noqa: BLE001
        if not _already_exists(error):
            raise
    return int(mlflow_client.create_model_version(
        # An absolute path: a tracking server refuses sources with relative paths.
        settings.lease_name, source=f"ple-lease:/{settings.lease_name}/{holder.replace(':', '-')}",
        tags={"ple.lease.holder": holder, "ple.lease.beat": "0", "ple.lease.ttl_s": str(ttl_s)},
        await_creation_for=0).version)  # a ticket has no artifacts to wait for


def _start_heartbeat(mlflow_client, queue: str, ticket: int, ttl_s: float) -> tuple[threading.Event, threading.Thread]:
    """A daemon thread bumping the ticket's beat every ttl/4 s until the returned event is set."""
    stop = threading.Event()

    def heartbeat() -> None:
        beat = 0
        while not stop.wait(ttl_s / 4):
            beat += 1
            try:
                mlflow_client.set_model_version_tag(queue, str(ticket), "ple.lease.beat", str(beat))
            except Exception:  # noqa: BLE001 (a missed beat is retried; only a dead process stops beating)
                pass

    beater = threading.Thread(target=heartbeat, name="ple-publish-lease-heartbeat", daemon=True)
    beater.start()
    return stop, beater


@dataclass
class _Queue:
    """What a waiter has seen of the tickets ahead of it."""

    seen: dict[int, tuple[str, float]] = field(default_factory=dict)  # ticket -> (last beat, when it changed)
    waited_for: set[int] = field(default_factory=set)
    expired: list[dict[str, Any]] = field(default_factory=list)


def _tickets_alive_ahead(mlflow_client, settings: RegistrySettings, ticket: int, holder: str, ttl_s: float,
                         queue: _Queue) -> list[int]:
    """The lower tickets still beating; those silent for longer than `ttl_s` (this host's clock) are expired."""
    ahead = [v for v in mlflow_client.search_model_versions(f"name='{settings.lease_name}'")
             if int(v.version) < ticket]
    now = time.monotonic()
    alive = []
    for version in ahead:
        number, beat = int(version.version), version.tags.get("ple.lease.beat", "")
        queue.waited_for.add(number)
        if number not in queue.seen or queue.seen[number][0] != beat:
            queue.seen[number] = (beat, now)
        if now - queue.seen[number][1] > ttl_s:
            _expire(mlflow_client, settings.lease_name, number, holder)
            queue.expired.append({"ticket": number, "holder": version.tags.get("ple.lease.holder")})
        else:
            alive.append(number)
    return alive


def _wait_for_turn(mlflow_client, settings: RegistrySettings, ticket: int, holder: str, ttl_s: float,
                   timeout_s: float, poll_s: float, started: float) -> _Queue:
    queue = _Queue()
    while alive := _tickets_alive_ahead(mlflow_client, settings, ticket, holder, ttl_s, queue):
        if time.time() - started > timeout_s:
            raise LeaseTimeout(f"publish lease: waited {timeout_s:.0f} s behind tickets {sorted(alive)} of "
                               f"{settings.lease_name} at {settings.tracking_uri}")
        time.sleep(poll_s)
    return queue


def _release(mlflow_client, queue: str, ticket: int) -> None:
    try:
        mlflow_client.delete_model_version(queue, str(ticket))
    except Exception as error:  # noqa: BLE001 (already expired and deleted by a waiter)
        if not _not_found(error):
            raise


@contextlib.contextmanager
def publish_lease(settings: RegistrySettings, timeout_s: float = 600.0, ttl_s: float = 60.0,
                  poll_s: float = 0.5) -> Iterator[Lease]:
    """Exclusive lease around gate check + register + alias move, held through the registry (module doc)."""
    mlflow_client = client(settings)
    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    started = time.time()
    ticket = _take_ticket(mlflow_client, settings, holder, ttl_s)
    stop, beater = _start_heartbeat(mlflow_client, settings.lease_name, ticket, ttl_s)
    lease = None
    try:
        queue = _wait_for_turn(mlflow_client, settings, ticket, holder, ttl_s, timeout_s, poll_s, started)
        lease = Lease(mlflow_client, settings.lease_name, ticket, holder, {
            "kind": "registry lease", "queue": settings.lease_name, "ticket": ticket, "holder": holder,
            "requested_at": started, "acquired_at": time.time(), "waited_s": time.time() - started,
            "waited_for": sorted(queue.waited_for), "expired": queue.expired, "ttl_s": ttl_s})
        yield lease
    finally:
        stop.set()
        beater.join(timeout=5)
        if lease is not None:
            lease.record["released_at"] = time.time()   # stamped BEFORE the ticket goes: no waiter can precede it
        _release(mlflow_client, settings.lease_name, ticket)


def _expire(mlflow_client, queue: str, ticket: int, by: str) -> None:
    """Mark a dead publisher's ticket and delete it (it may already be gone)."""
    try:
        mlflow_client.set_model_version_tag(queue, str(ticket), "ple.lease.expired_by", by)
        mlflow_client.delete_model_version(queue, str(ticket))
    except Exception as error:  # noqa: BLE001
        if not _not_found(error):
            raise
