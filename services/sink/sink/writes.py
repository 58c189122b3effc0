"""Writing a batch of documents: every document ends inserted, a duplicate, a conflict or refused.

:func:`write_documents` drives :meth:`sink.mongo.MongoWriter.insert` (one classified unordered
``insert_many``) until every document has an outcome, with no Kafka and no clock of its own:

- **Outage** (:class:`~sink.mongo.MongoUnavailableError`: no connection, timeout, FerretDB's
  PostgreSQL unreachable, not primary …): nothing is decided, ``on_unavailable`` is awaited (the
  sink marks itself not ready, counts the retry, sleeps its backoff and gives up only at
  shutdown) and the same part is sent again. An outage never refuses or conflicts a document.
  An attempt that ran out of time is retried with half as many documents per attempt.
- **Whole batch refused** (:class:`~sink.mongo.MongoBatchRefusedError`: FerretDB on PostgreSQL
  refuses the whole ``insert_many`` for one document, e.g. a NUL in a string value): the part is
  split in halves, recursively, first half first, down to the refused documents; the others are
  written. Cost: about ``2·log2(n)`` attempts per refused document in a batch of ``n``.
  A single document refused with a code that blames the data is refused at once. With an unknown
  code it is first confirmed: the server must answer a ``ping`` (FerretDB's ping fails while its
  backend is down; then it is an outage) and the insert must fail ``max_attempts`` times, with a
  short backoff in between.
- **Per-document errors** (``BulkWriteError.writeErrors``): refusal codes → refused; transient
  codes → retried like an outage; unknown codes → retried ``max_attempts`` times, then refused;
  duplicate ``_id`` (11000) → the stored documents of those ids are read (one ``_id``
  equality per id: the one filter both stores serve from an index) and compared with the new
  ones outside ``shared.event.DELIVERY_FIELDS``, exactly, as BSON (types, key order as stored,
  nesting; ``-0.0`` equals the ``0.0`` FerretDB stores for it): equal → duplicate, else →
  conflict (the stored one is kept).

A document of a part that failed as a whole may have landed anyway (FerretDB stores the
documents before the refused one); when its retry finds it stored with the stamp of that earlier
attempt of this call, it counts as inserted, not as a duplicate.

``ingested_at``/``ingest_hour``/``ingest_second`` are restamped at the start of every attempt
(:func:`sink.documents.restamp`) with the stamp of ``attempts`` (an :class:`AttemptClock`; the
sink's is its visibility lease, :mod:`sink.visibility`). Each attempt is ended with whether the
server may still apply it: not after an answer (an outcome, ``writeErrors`` included, or a
whole-batch refusal that blames the data) nor when nothing was sent (``sent=False``), but after
an outage, a whole-batch error with an unknown code, or a cancellation. A clock that refuses to start an attempt
(:class:`~sink.mongo.MongoUnavailableError`, e.g. the lease lapsed) is an outage: nothing is
decided, ``on_unavailable`` is awaited and the part is tried again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import bson
from bson.raw_bson import RawBSONDocument

from shared.backoff import Backoff
from sink.compare import conflict_message, differing_fields, off_loop, same_content, same_source, stored_stamp
from sink.documents import STAGE_CONFLICT, STAGE_WRITE, IngestStamp, restamp
from sink.mongo import InsertOutcome, MongoBatchRefusedError, MongoSlowQueryError, MongoUnavailableError, MongoWriter
from sink.verdicts import Verdict

log = logging.getLogger(__name__)

__all__ = ["CONFLICT_ERROR_CLASS", "STAGE_CONFLICT", "AttemptClock", "WallClock", "WriteResult", "write_documents"]
CONFLICT_ERROR_CLASS = "ConflictingDuplicate"
# Default pause after an outage when the caller gives no ``on_unavailable``, and the pause between
# confirmations of a document refused with an unknown code.
DEFAULT_BACKOFF_INITIAL_S = 0.1
DEFAULT_BACKOFF_MAX_S = 2.0
# The longest bound of a slow duplicate lookup, in attempt timeouts (60 s each by default).
SLOW_LOOKUP_MAX_FACTOR = 8


class AttemptClock(Protocol):
    """Stamps write attempts and learns how they ended (:class:`sink.visibility.VisibilityLease`)."""

    def begin_attempt(self) -> tuple[IngestStamp, Any]:
        """The stamp of an attempt starting now and a token for :meth:`end_attempt`; raises
        ``MongoUnavailableError`` when no attempt may start now."""
        ...

    def end_attempt(self, token: Any, maybe_pending: bool) -> None:
        """``maybe_pending``: the attempt ended without an answer, the server may still apply it."""
        ...


class WallClock:
    """An :class:`AttemptClock` that stamps with the wall clock and never refuses (tests, benchmarks)."""

    def begin_attempt(self) -> tuple[IngestStamp, None]:
        return IngestStamp.at(datetime.now(UTC)), None

    def end_attempt(self, token: Any, maybe_pending: bool) -> None:
        pass


class DocumentWriter(Protocol):
    """What :func:`write_documents` needs of :class:`~sink.mongo.MongoWriter` (tests fake it)."""

    async def insert(self, docs: list[dict[str, Any]]) -> InsertOutcome: ...
    async def stored(
        self, ids: list[Any], bound_s: float | None = None, accept: Callable[[Any, dict[str, Any]], bool] | None = None
    ) -> Mapping[Any, Any]: ...
    async def healthy(self) -> bool: ...


@dataclass
class WriteResult:
    inserted: list[int] = field(default_factory=list)  # indices into docs
    duplicates: list[int] = field(default_factory=list)  # same event already stored (content equal outside DELIVERY_FIELDS)
    conflicts: dict[int, str] = field(default_factory=dict)  # index → message (same _id, different content; stored one kept)
    refused: dict[int, tuple[str, str, str]] = field(default_factory=dict)  # index → (stage, error_class, message)
    # Those of ``duplicates`` whose stored copy came from the same local record (the same source
    # coordinates): written by an earlier delivery whose offsets were not committed (shared.hops).
    redelivered: list[int] = field(default_factory=list)


def _default_on_unavailable() -> Callable[[Exception], Awaitable[None]]:
    backoff = Backoff(DEFAULT_BACKOFF_INITIAL_S, DEFAULT_BACKOFF_MAX_S)

    async def wait(exc: Exception) -> None:
        log.warning("mongodb unavailable, retrying: %s", str(exc)[:300])
        await asyncio.sleep(backoff.next_delay())

    return wait


async def write_documents(
    writer: MongoWriter | DocumentWriter,
    docs: list[dict[str, Any]],
    *,
    max_attempts: int = 3,
    on_unavailable: Callable[[Exception], Awaitable[None]] | None = None,
    attempts: AttemptClock | None = None,
) -> WriteResult:
    """Writes ``docs`` (see the module docstring); every index ends in exactly one bucket.
    ``attempts`` stamps each attempt (default: :class:`WallClock`).

    Returns only when each document has its outcome; raises only what ``on_unavailable`` (or the
    writer, for a bug) raises."""
    run = _Run(writer, docs, max(1, max_attempts), on_unavailable or _default_on_unavailable(), attempts or WallClock())
    await run.go()
    return run.result


class _Run:
    def __init__(
        self,
        writer: MongoWriter | DocumentWriter,
        docs: list[dict[str, Any]],
        max_attempts: int,
        on_unavailable: Callable[[Exception], Awaitable[None]],
        clock: AttemptClock,
    ) -> None:
        self.writer = writer
        self.clock = clock
        self.docs = docs
        self.max_attempts = max_attempts
        self.on_unavailable = on_unavailable
        self.result = WriteResult()
        self.tries = [0] * len(docs)  # confirmations of a refusal with an unknown code
        # Stamps of attempts that failed as a whole while holding the document: it may have landed then.
        self.maybe_landed: dict[int, set[str]] = {}
        self.claimed: set[Any] = set()  # _ids this run inserted (a batch may hold one _id twice)
        self.retry_backoff = Backoff(DEFAULT_BACKOFF_INITIAL_S, DEFAULT_BACKOFF_MAX_S)
        self.attempts = 0
        self.bisections = 0

    async def go(self) -> None:
        docs = self.docs
        queue: deque[list[int]] = deque([list(range(len(docs)))] if docs else [])
        size = len(docs)  # documents per attempt; halved when an attempt runs out of time
        while queue:
            part = queue.popleft()
            if len(part) > size:
                queue.appendleft(part[size:])
                part = part[:size]
            attempt = [docs[i] for i in part]
            try:
                stamp, token = self.clock.begin_attempt()
            except MongoUnavailableError as exc:  # no attempt may start now (the visibility lease lapsed)
                await self.on_unavailable(exc)
                queue.appendleft(part)
                continue
            restamp(attempt, stamp)  # see sink.documents.restamp: visible at most one attempt after its stamp
            self.attempts += 1
            try:
                outcome = await self._insert(attempt, token)
            except MongoUnavailableError as exc:
                self._maybe_landed(part, stamp)
                if exc.timed_out and len(part) > 1:
                    size = min(size, (len(part) + 1) // 2)
                    log.warning("insert_many of %d documents timed out: retrying %d per attempt", len(part), size)
                await self.on_unavailable(exc)
                queue.appendleft(part)
                continue
            except MongoBatchRefusedError as exc:
                self._maybe_landed(part, stamp)
                if exc.verdict is not Verdict.REFUSAL and not await self.writer.healthy():
                    # An unknown code from a server that does not answer a ping: an outage.
                    await self.on_unavailable(MongoUnavailableError(f"server unhealthy after {exc.error_class}: {exc.message}"))
                    queue.appendleft(part)
                    continue
                if len(part) > 1:
                    self.bisections += 1
                    mid = (len(part) + 1) // 2
                    queue.appendleft(part[mid:])
                    queue.appendleft(part[:mid])
                    continue
                if await self._refuse_single(part[0], exc):
                    continue
                queue.appendleft(part)
                continue
            again = await self._settle(part, outcome)
            if again:
                queue.appendleft(again)
        if self.bisections:
            log.warning(
                "batch of %d: %d refused after %d bisection(s), %d insert_many attempt(s)",
                len(docs),
                len(self.result.refused),
                self.bisections,
                self.attempts,
            )

    async def _insert(self, attempt: list[dict[str, Any]], token: Any) -> InsertOutcome:
        """One attempt, ended on the clock before anything else is awaited: an answer ends it,
        anything else (an outage after sending, an unknown whole-batch code, a cancellation, a
        bug) leaves it possibly pending on the server."""
        maybe_pending = True
        try:
            outcome = await self.writer.insert(attempt)
            maybe_pending = False
            return outcome
        except MongoUnavailableError as exc:
            maybe_pending = exc.sent  # not sent (no server): nothing of it can land
            raise
        except MongoBatchRefusedError as exc:
            maybe_pending = exc.verdict is not Verdict.REFUSAL
            raise
        finally:
            self.clock.end_attempt(token, maybe_pending)

    def _maybe_landed(self, part: list[int], stamp: IngestStamp) -> None:
        for i in part:
            self.maybe_landed.setdefault(i, set()).add(stamp.ingested_at)

    async def _refuse_single(self, i: int, exc: MongoBatchRefusedError) -> bool:
        """Whether document ``i``, refused alone, is settled (refused); else it is to be sent again."""
        refusal = (STAGE_WRITE, exc.error_class, exc.message)
        if exc.verdict is Verdict.REFUSAL:
            self.result.refused[i] = refusal
            return True
        # An unknown code (the server answered a ping just now): the document is to blame only
        # after max_attempts refusals.
        self.tries[i] += 1
        if self.tries[i] >= self.max_attempts:
            self.result.refused[i] = refusal
            return True
        await asyncio.sleep(self.retry_backoff.next_delay())
        return False

    async def _settle(self, part: list[int], outcome: InsertOutcome) -> list[int]:
        """Books an attempt's per-document outcome; returns the indices to send again."""
        docs, result = self.docs, self.result
        duplicates = [part[j] for j in outcome.duplicates]
        retry = [part[j] for j in outcome.retry]
        resend = [part[j] for j in outcome.resend]
        decided = {*duplicates, *retry, *resend}
        for j, refusal in outcome.refused.items():
            result.refused[part[j]] = refusal
            decided.add(part[j])
        unsure = []
        for j, refusal in outcome.uncertain.items():
            i = part[j]
            decided.add(i)
            self.tries[i] += 1
            if self.tries[i] >= self.max_attempts:
                result.refused[i] = refusal
            else:
                unsure.append(i)
        for i in part:
            if i not in decided:
                result.inserted.append(i)
                self.claimed.add(docs[i]["_id"])
        if duplicates:  # one not found stored (deleted meanwhile) is inserted again
            resend.extend(await self._compare_duplicates(duplicates))
        if retry:
            await self.on_unavailable(MongoUnavailableError(f"{len(retry)} document(s) to retry (transient errors)"))
        elif unsure:
            await asyncio.sleep(self.retry_backoff.next_delay())
        return sorted(retry + unsure + resend)

    async def _compare_duplicates(self, indices: list[int]) -> list[int]:
        """Duplicate or conflict for each of ``indices`` (their stored copies read by ``_id``);
        returns the ones not found stored (deleted meanwhile), to insert again.

        A lookup that ran out of time while the server is up (``MongoSlowQueryError``) is tried
        again with twice the time, up to ``SLOW_LOOKUP_MAX_FACTOR`` times its first bound (the
        attempt timeout): a query that ran out of its bound is not sent again with the same one.
        The comparisons run in a worker thread: a restarted sink's batch of thousands of
        duplicates is seconds of CPU the event loop (health, heartbeats) must not wait for."""
        docs = self.docs
        ids = list(dict.fromkeys(docs[i]["_id"] for i in indices))
        news: dict[Any, list[dict[str, Any]]] = {}
        for i in indices:
            news.setdefault(docs[i]["_id"], []).append(docs[i])
        equal: set[Any] = set()  # ids whose stored copy ``equal_copy`` took: no second comparison

        def equal_copy(_id: Any, stored: dict[str, Any]) -> bool:
            mine = news.get(_id)
            if not mine or not all(same_content(stored, new) for new in mine):
                return False
            equal.add(_id)
            return True

        timeout: float | None = None  # the writer's attempt timeout until a lookup is slow
        longest: float | None = None
        while True:
            try:
                stored = await self.writer.stored(ids, timeout, accept=equal_copy)
                break
            except MongoSlowQueryError as exc:
                longest = longest or SLOW_LOOKUP_MAX_FACTOR * exc.bound
                timeout = min(2 * exc.bound, longest)
                log.warning("%s: retrying with %g s", exc, timeout)
                await self.on_unavailable(exc)
            except MongoUnavailableError as exc:
                await self.on_unavailable(exc)
        return await off_loop(self._judge, indices, stored, equal)

    def _judge(self, indices: list[int], stored: Mapping[Any, Any], equal: set[Any]) -> list[int]:
        """Books each of ``indices`` against its stored copy (``equal``: ids already found equal
        outside the delivery fields); returns the ones with none. CPU only; nothing else of
        this run runs meanwhile (its one task awaits this)."""
        docs, result = self.docs, self.result
        missing = []
        for i in indices:
            doc = docs[i]
            existing = stored.get(doc["_id"])
            if existing is None:
                missing.append(i)
                continue
            # bytes(): pymongo 4.20 may hand a RawBSONDocument over a memoryview of the reply
            raw = bytes(existing.raw) if isinstance(existing, RawBSONDocument) else bson.encode(existing)
            differing = [] if doc["_id"] in equal else differing_fields(raw, bson.encode(doc))
            if differing:
                result.conflicts[i] = conflict_message(raw, differing)
            elif i in self.maybe_landed and doc["_id"] not in self.claimed and stored_stamp(raw) in self.maybe_landed[i]:
                # Landed during an attempt of this run that failed as a whole: ours.
                result.inserted.append(i)
                self.claimed.add(doc["_id"])
            else:
                result.duplicates.append(i)
                if same_source(raw, doc):
                    result.redelivered.append(i)
        return missing
