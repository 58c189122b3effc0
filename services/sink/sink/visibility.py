"""The sink's side of the visibility leases (:mod:`shared.visibility`, the contract).

:class:`VisibilityLease` is one process's account of its write attempts; :class:`LeasePublisher`
publishes it. Together they keep the contract's promises:

- Every attempt is stamped by :meth:`VisibilityLease.begin_attempt` (the clock read once: the
  stamp and the attempt's recorded start are the same instant, truncated to the millisecond as
  ``ingested_at`` is). While the attempt runs, ``visible_through`` stays below that start.
- An attempt that ended with an answer (acknowledged, ``writeErrors``, a refusal the server gave
  for the data) is forgotten at once; one that ended with no answer (timeout, connection lost,
  cancelled, a whole-batch error with a code the sink does not know) may still be applied by the
  server, so it is *pinned* until its start + ``attempt_timeout_s`` (the full setting, sent as
  ``maxTimeMS``) + :data:`PIN_SLACK` (network and clock slack).
- ``visible_through(now)`` is the oldest start of the attempts in flight or pinned, less 1 ms; or
  ``now`` less 1 ms with none.
- No attempt starts before the first successful publication, nor later than ``published_at +
  lease_s`` of the last successful one: :meth:`VisibilityLease.begin_attempt` raises
  :class:`LeaseLapsedError`, which the write path treats as an outage (nothing decided, retried
  with backoff, ``sink_write_retries_total{reason="visibility_lease"}``).
- The clock is read through :meth:`VisibilityLease.now`, which never goes back: a wall clock
  stepped back cannot stamp a document at or before a ``visible_through`` already published.

A publication upserts the lease document only over an older one (``published_at`` ``$lte`` the
new one): a publication the client gave up on, applied late by the server, cannot replace a
newer one (which would make a reader think the lease settles earlier than it does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pymongo
from pymongo.errors import DuplicateKeyError, PyMongoError
from pymongo.write_concern import WriteConcern

from shared.visibility import COLLECTION, ONE_MS, iso_ms, lease_document, lease_id
from sink.documents import IngestStamp
from sink.metrics import SinkMetrics
from sink.mongo import MongoUnavailableError

log = logging.getLogger(__name__)

# An attempt with no answer is pinned this long beyond its timeout: the request may reach the
# server a little after the attempt started, and the server's maxTimeMS counts from its receipt.
PIN_SLACK = timedelta(seconds=1)
# A publication is given up after min(PUBLISH_TIMEOUT_MAX_S, lease_s / 2): a stuck one must leave
# time for the next tick before the lease lapses.
PUBLISH_TIMEOUT_MAX_S = 5.0
# Failed publications are logged at most this often (each is counted in the metrics).
FAILURE_LOG_INTERVAL_S = 30.0
# On shutdown: how long the publication in progress may take before it is cancelled.
STOP_WAIT_S = 0.5


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_instance_id() -> str:
    """``{hostname}:{pid}:{8 random hex}``: unique per process, even with a pid reused."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def truncated_ms(at: datetime) -> datetime:
    """``at`` in UTC truncated to the millisecond: the instant its ``ingested_at`` says."""
    utc = at.astimezone(UTC)
    return utc.replace(microsecond=utc.microsecond // 1000 * 1000)


class LeaseLapsedError(MongoUnavailableError):
    """No write attempt may start: the lease was never published, or its last successful
    publication is older than ``lease_s``. An outage to the write path (retried with backoff)."""

    reason = "visibility_lease"


@dataclass
class _Attempt:
    start: datetime  # the stamp's instant (ms): visible_through stays below it
    began: datetime  # the clock reading it was stamped from (≥ start): pins count from it
    pinned_until: datetime | None = None  # ended without an answer: may land until then


class VisibilityLease:
    """One sink process's write attempts and its lease (see the module).

    Not thread-safe: used from the sink's event loop only. ``clock`` is the wall clock in UTC
    (injected by tests)."""

    def __init__(
        self,
        *,
        lease_s: float,
        attempt_timeout_s: float,
        clock: Callable[[], datetime] = utc_now,
        instance: str | None = None,
    ) -> None:
        if not (lease_s > 0 and attempt_timeout_s > 0):
            raise ValueError(f"lease_s ({lease_s}) and attempt_timeout_s ({attempt_timeout_s}) must be positive")
        self.instance = instance or new_instance_id()
        self.lease_s = float(lease_s)
        self.attempt_timeout_s = float(attempt_timeout_s)
        self._lease = timedelta(seconds=lease_s)
        self._pin = timedelta(seconds=attempt_timeout_s) + PIN_SLACK
        self._clock = clock
        self._latest: datetime | None = None
        self._attempts: dict[int, _Attempt] = {}
        self._tokens = 0
        self.published_at: datetime | None = None  # of the last successful publication
        self.closed = False

    def now(self) -> datetime:
        """The clock, never earlier than a reading this lease already used."""
        now = self._clock()
        if self._latest is not None and now < self._latest:
            return self._latest
        self._latest = now
        return now

    def lapses_at(self) -> datetime | None:
        """From this instant on no attempt starts (None: never published)."""
        return None if self.published_at is None else self.published_at + self._lease

    def begin_attempt(self) -> tuple[IngestStamp, int]:
        """The stamp of a write attempt starting now and its token for :meth:`end_attempt`;
        :class:`LeaseLapsedError` when no attempt may start."""
        now = self.now()
        if self.closed:
            raise LeaseLapsedError("visibility lease closed: the sink is stopping")
        if self.published_at is None:
            raise LeaseLapsedError("visibility lease not published yet: no write attempt starts before its first publication")
        lapses = self.published_at + self._lease
        if now >= lapses:
            raise LeaseLapsedError(
                f"visibility lease lapsed at {iso_ms(lapses)} (last published at {iso_ms(self.published_at)}): "
                "no write attempt starts until it is published again"
            )
        self._tokens += 1
        self._attempts[self._tokens] = _Attempt(start=truncated_ms(now), began=now)
        return IngestStamp.at(now), self._tokens

    def end_attempt(self, token: int, maybe_pending: bool) -> None:
        """The attempt got a definitive answer (``maybe_pending=False``: forgotten), or ended
        without one (pinned until its start + attempt timeout + :data:`PIN_SLACK`)."""
        attempt = self._attempts.get(token)
        if attempt is None:
            return
        if maybe_pending:
            attempt.pinned_until = attempt.began + self._pin
        else:
            del self._attempts[token]

    def _expire(self, now: datetime) -> None:
        done = [t for t, a in self._attempts.items() if a.pinned_until is not None and a.pinned_until <= now]
        for token in done:
            del self._attempts[token]

    def visible_through(self, now: datetime) -> datetime:
        """Every document this process stamped at or before the result is visible at ``now``."""
        self._expire(now)
        bound = now - ONE_MS
        for attempt in self._attempts.values():
            bound = min(bound, attempt.start - ONE_MS)
        return bound

    def quiet(self, now: datetime) -> bool:
        """No attempt in flight, none pinned: nothing this process stamped can still land."""
        self._expire(now)
        return not self._attempts

    def published(self, published_at: datetime) -> None:
        """A publication computed at ``published_at`` was acknowledged: the lease runs from it."""
        if self.published_at is None or published_at > self.published_at:
            self.published_at = published_at

    def close(self) -> None:
        """No attempt starts any more (before the lease document is deleted)."""
        self.closed = True


class LeasePublisher:
    """Publishes a :class:`VisibilityLease` into :data:`shared.visibility.COLLECTION` of the
    events' database every ``interval_s`` (see the module); failures are counted, logged at most
    every :data:`FAILURE_LOG_INTERVAL_S` and retried at the next tick, never raised from
    :meth:`run`."""

    def __init__(
        self,
        lease: VisibilityLease,
        database: Any,
        collection: str,
        *,
        interval_s: float,
        write_concern: WriteConcern | None = None,
        metrics: SinkMetrics | None = None,
        on_failed: Callable[[Exception], None] | None = None,
        on_published: Callable[[], None] | None = None,
    ) -> None:
        """``on_failed``/``on_published``: told of each failed and successful publication of
        :meth:`run` (the sink's readiness)."""
        self.lease = lease
        self.leases = database[COLLECTION].with_options(write_concern=write_concern)
        self.collection = collection
        self.id = lease_id(collection, lease.instance)
        self.interval_s = interval_s
        self.timeout_s = min(PUBLISH_TIMEOUT_MAX_S, lease.lease_s / 2)
        self.metrics = metrics
        self.on_failed = on_failed
        self.on_published = on_published
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def publish(self) -> datetime:
        """One publication; returns its ``visible_through``. Raises ``MongoUnavailableError``."""
        lease = self.lease
        now = lease.now()
        through = lease.visible_through(now)
        doc = lease_document(self.collection, lease.instance, through, now, lease.lease_s, lease.attempt_timeout_s)
        del doc["_id"]
        try:
            with pymongo.timeout(self.timeout_s):
                await self.leases.update_one({"_id": self.id, "published_at": {"$lte": doc["published_at"]}}, {"$set": doc}, upsert=True)
        except DuplicateKeyError as exc:
            raise MongoUnavailableError(f"visibility lease {self.id}: a later publication is stored already") from exc
        except PyMongoError as exc:
            raise MongoUnavailableError(f"visibility lease {self.id}: {type(exc).__name__}: {exc}", timed_out=exc.timeout) from exc
        lease.published(now)
        if self.metrics is not None:
            self.metrics.visibility_lag.set((now - through).total_seconds())
        return through

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="sink-visibility-lease")

    async def run(self) -> None:
        """Publishes every ``interval_s`` until :meth:`stop`."""
        loop = asyncio.get_running_loop()
        failing_since: float | None = None
        logged_at = 0.0
        while not self._stop.is_set():
            began = loop.time()
            try:
                await self.publish()
            except Exception as exc:  # never crash the sink: the writes stop by themselves when the lease lapses
                if self.metrics is not None:
                    self.metrics.visibility_failures.inc()
                if self.on_failed is not None:
                    self.on_failed(exc)
                now = time.monotonic()
                if failing_since is None or now - logged_at >= FAILURE_LOG_INTERVAL_S:
                    lapses = self.lease.lapses_at()
                    log.warning(
                        "visibility lease %s not published (%s: %s); writes stop at %s unless a publication succeeds",
                        self.id,
                        type(exc).__name__,
                        str(exc)[:300],
                        iso_ms(lapses) if lapses else "once published",
                    )
                    logged_at = now
                failing_since = failing_since or now
            else:
                if self.on_published is not None:
                    self.on_published()
                if failing_since is not None:
                    log.info("visibility lease %s published again after %.1fs of failures", self.id, time.monotonic() - failing_since)
                    failing_since = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), max(0.0, began + self.interval_s - loop.time()))

    async def stop(self) -> None:
        """Ends :meth:`run`: the publication in progress gets :data:`STOP_WAIT_S`, then is cancelled."""
        self._stop.set()
        task, self._task = self._task, None
        if task is None:
            return
        try:
            await asyncio.wait_for(task, STOP_WAIT_S)
        except TimeoutError:
            pass  # wait_for cancelled it
        except Exception:
            log.exception("visibility lease publisher failed")

    async def retire(self, timeout_s: float) -> bool:
        """After :meth:`stop` and the final flush: no attempt starts any more, and the lease
        document is deleted if nothing this process stamped can still land; else it is left to
        settle (``published_at + lease_s + attempt_timeout_s``). Best effort, bounded; returns
        whether it was deleted."""
        lease = self.lease
        lease.close()
        now = lease.now()
        if not lease.quiet(now):
            log.warning(
                "visibility lease %s left in place: write attempts without an answer may still land (visible through %s)",
                self.id,
                iso_ms(lease.visible_through(now)),
            )
            return False
        try:
            with pymongo.timeout(timeout_s):
                await self.leases.delete_one({"_id": self.id})
        except PyMongoError as exc:
            log.warning("visibility lease %s not deleted (%s: %s): it settles by itself", self.id, type(exc).__name__, str(exc)[:300])
            return False
        log.info("visibility lease %s deleted", self.id)
        return True
