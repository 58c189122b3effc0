"""The in-order offset committer: batches written concurrently, offsets committed in batch order.

Contract:

- The sink writes up to ``max_inflight_batches`` batches at the same time, each a task handed to
  :meth:`OffsetCommitter.add` in batch order. A batch's offsets join a commit only once it *and
  every earlier batch* were acknowledged (documents by MongoDB, dead letters by the brokers):
  :meth:`OffsetCommitter.take_written` moves the finished writes at the head of the queue, and
  only those, to the committer. So the committed offset of a partition never passes an
  unacknowledged record; a crash anywhere earlier redelivers the batch, which is rewritten
  idempotently (``_id = event_id``).
- A batch cancelled (revoked while MongoDB was slow) or given up (:class:`BatchAbandonedError`,
  shutdown) marks the assignment *lost*: no later batch of it is committed (already written, they
  are rewritten on redelivery), nor are positions (:meth:`OffsetCommitter.commit_positions`), until
  the next assignment (:meth:`OffsetCommitter.assigned`). Any other error of a write is raised by
  ``take_written``: the worker fails.
- Commits are decoupled from writes: one commit is in flight at a time, beside the writes (it
  holds no write slot), and covers every batch acknowledged since the previous one (an offset
  commit is an ``acks=all`` write to ``__consumer_offsets`` and costs 0.1-2 s on a loaded cluster:
  one commit per batch, waited for by the write slot, had halved the sink's throughput).
- A commit covers only partitions still assigned (a lost partition's next owner rewrites from the
  last commit, idempotently) and only offsets above the last committed one. It is retried with
  bounded backoff while the broker answers with a retriable error, until the shutdown deadline
  (``give_up_at``); a timeout (30 s, or the time left once stopping), a rebalance or a fatal error
  gives it up: those batches are redelivered and deduplicated unless a later commit covers them.
- Revocation (:meth:`OffsetCommitter.revoke`): the batches being written get a bounded time to
  finish and commit while the partitions are still ours; the rest is dropped uncommitted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import OffsetAndMetadata

from shared.backoff import Backoff
from shared.errors import is_retriable
from shared.hops import SinkTally
from sink.batch import Batch, BatchAbandonedError
from sink.metrics import SinkMetrics

log = logging.getLogger(__name__)

# Adds the counts of committed-to-be offsets to the ledger (sink.ledger.SinkLedger.advance).
LedgerAdvance = Callable[[dict[TopicPartition, int], SinkTally], Awaitable[None]]

COMMIT_TIMEOUT_S = 30.0  # aiokafka retries a commit while the coordinator is away; we move on after this


class OffsetCommitter:
    """Batches being written, in batch order, and the commits of their offsets (see the module)."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        metrics: SinkMetrics,
        *,
        backoff_initial_s: float,
        backoff_max_s: float,
        give_up_at: Callable[[], float | None],
        ledger: LedgerAdvance | None = None,
    ) -> None:
        """``give_up_at``: the monotonic deadline once the worker is stopping, else None;
        ``ledger``: adds the counts of the batches a commit covers (:mod:`sink.ledger`), before it."""
        self._ledger = ledger
        self.consumer = consumer
        self.metrics = metrics
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._give_up_at = give_up_at
        # Batches being written (or written, behind an earlier one still being written), oldest first.
        self._inflight: deque[asyncio.Task[Batch]] = deque()
        # Offsets of the acknowledged prefix of batches not yet handed to a commit, with the
        # (write start, records) of each batch they cover; one commit task at a time.
        self._acked: dict[TopicPartition, int] = {}
        self._acked_batches: list[tuple[float, int]] = []
        self._acked_tally = SinkTally()
        self._commit_task: asyncio.Task[None] | None = None
        self._fatal: BaseException | None = None  # a write's unexpected error, seen during a rebalance
        self._committed: dict[TopicPartition, int] = {}
        # A batch was given up uncommitted since the last assignment: positions are then ahead of
        # what is written, so committing positions (see commit_positions) would lose it.
        self._lost_batch = False

    # ------------------------------------------------------------------ the queue of writes

    def add(self, write: asyncio.Task[Batch]) -> None:
        """Queues the write of the next batch (batch order = the order of the calls)."""
        self._inflight.append(write)

    def held(self) -> int:
        """Batches held: being written, or written and not yet taken (behind an earlier one)."""
        return len(self._inflight)

    def writing(self) -> int:
        """Batches still being written."""
        return sum(1 for t in self._inflight if not t.done())

    async def wait_for_a_write(self) -> None:
        """Returns when at least one of the batches being written finished."""
        await asyncio.wait([t for t in self._inflight if not t.done()], return_when=asyncio.FIRST_COMPLETED)

    @property
    def lost(self) -> bool:
        """A batch was given up uncommitted since the last assignment: nothing later is committed."""
        return self._lost_batch

    def committed(self) -> dict[TopicPartition, int]:
        """The offsets this committer committed since the last revocation."""
        return dict(self._committed)

    def take_written(self, *, raise_errors: bool = True) -> None:
        """Moves the finished writes at the head of the queue (in batch order) to the committer.

        A batch cancelled (revoked while MongoDB was slow) or given up (shutdown) marks the
        assignment lost: no batch after it is committed, its records are read again by whoever owns
        the partition next. Any other error of a write is raised (the worker fails), or kept for
        the loop when ``raise_errors`` is false (inside a rebalance callback)."""
        if self._fatal is not None and raise_errors:
            fatal, self._fatal = self._fatal, None
            raise fatal
        while self._inflight and self._inflight[0].done():
            task = self._inflight[0]
            if task.cancelled():
                self._lost_batch = True
            elif isinstance(exc := task.exception(), BatchAbandonedError):
                self._lost_batch = True
                log.warning("%s", exc)
            elif exc is not None:
                if not raise_errors:
                    return  # left at the head: the loop raises it
                self._inflight.popleft()
                raise exc
            elif not self._lost_batch:
                batch = task.result()
                for tp, offset in batch.offsets.items():
                    self._acked[tp] = max(self._acked.get(tp, 0), offset)
                self._acked_batches.append((batch.started, batch.records))
                self._acked_tally.merge(batch.tally)
            self._inflight.popleft()
        self._kick_commit()

    async def finish(self) -> None:
        """Waits for every write in batch order, takes each, then waits for every commit."""
        while self._inflight:
            await asyncio.wait({self._inflight[0]})
            self.take_written()
        await self.flush()

    # ------------------------------------------------------------------ commits

    def _kick_commit(self) -> None:
        """Starts a commit of everything acknowledged so far, unless one is in flight."""
        task = self._commit_task
        if task is not None:
            if not task.done():
                return
            self._commit_task = None
            if not task.cancelled() and (exc := task.exception()) is not None:
                raise exc
        if not self._acked:
            return
        offsets, batches, tally = self._acked, self._acked_batches, self._acked_tally
        self._acked, self._acked_batches, self._acked_tally = {}, [], SinkTally()
        self._commit_task = asyncio.create_task(self._commit_written(offsets, batches, tally), name="sink-commit")

    async def _commit_written(self, offsets: dict[TopicPartition, int], batches: list[tuple[float, int]], tally: SinkTally) -> None:
        committing = time.monotonic()
        if not await self._advance_ledger(offsets, tally):
            return
        await self._commit(offsets)
        done = time.monotonic()
        self.metrics.stage_seconds.labels("commit").inc(done - committing)
        for started, records in batches:
            self.metrics.batch_size.observe(records)
            self.metrics.batch_latency.observe(done - started)

    async def flush(self) -> None:
        """Waits until every acknowledged batch's offsets were committed (or the commit gave up)."""
        while self._commit_task is not None or self._acked:
            if self._commit_task is not None:
                await asyncio.wait({self._commit_task})
            self._kick_commit()

    def _remaining(self) -> float | None:
        give_up_at = self._give_up_at()
        return None if give_up_at is None else max(0.05, give_up_at - time.monotonic())

    async def _advance_ledger(self, offsets: dict[TopicPartition, int], tally: SinkTally) -> bool:
        """The ledger first (retried while MongoDB is away): offsets are committed only after the
        counts of their records are. Given up (stopping, or a refusal): nothing more is committed
        in this assignment, the records are read and counted again by the next owner."""
        if self._ledger is None:
            return True
        backoff = Backoff(self._backoff_initial_s, self._backoff_max_s)
        while True:
            assigned = self.consumer.assignment()
            todo = {tp: o for tp, o in offsets.items() if tp in assigned}
            try:
                await self._ledger(todo, tally)
                return True
            except Exception as exc:
                give_up_at = self._give_up_at()
                if not is_retriable(exc):  # not an outage: the worker fails, loudly (the offsets stay uncommitted)
                    log.error("sink ledger refused (%s: %s): these offsets stay uncommitted", type(exc).__name__, exc)
                    self._fatal = self._fatal or exc
                    self._lost_batch = True
                    return False
                if give_up_at is not None and time.monotonic() > give_up_at:
                    log.warning("sink ledger not written before the shutdown deadline (%s): these offsets stay uncommitted", exc)
                    self._lost_batch = True
                    return False
                self.metrics.write_retries.labels("ledger").inc()
                await asyncio.sleep(backoff.next_delay())

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commits ``offsets`` for the partitions still assigned; a lost partition is skipped (its
        next owner rewrites from the last commit, idempotently). Retried while the broker is away."""
        backoff = Backoff(self._backoff_initial_s, self._backoff_max_s)
        while True:
            assigned = self.consumer.assignment()
            todo = {tp: OffsetAndMetadata(o, "") for tp, o in offsets.items() if tp in assigned and self._committed.get(tp, -1) < o}
            if not todo:
                return
            try:
                await asyncio.wait_for(self.consumer.commit(todo), self._remaining() or COMMIT_TIMEOUT_S)
            except TimeoutError:
                self.metrics.commit_failures.labels("timeout").inc()
                log.warning("commit timed out: the batch will be redelivered and deduplicated unless a later commit covers it")
                return
            except (CommitFailedError, IllegalStateError) as exc:
                self.metrics.commit_failures.labels("rebalanced").inc()
                log.warning("commit skipped, group rebalanced: %s", exc)
                return
            except KafkaError as exc:
                self.metrics.commit_failures.labels("kafka").inc()
                give_up_at = self._give_up_at()
                if not getattr(exc, "retriable", False) or (give_up_at is not None and time.monotonic() > give_up_at):
                    log.warning("commit failed (%s): the batch will be redelivered and deduplicated", exc)
                    return
                await asyncio.sleep(backoff.next_delay())
                continue
            for tp, o in todo.items():
                self._committed[tp] = o.offset
            self.metrics.commits.inc()
            return

    async def commit_positions(self, nothing_buffered: Callable[[], bool]) -> None:
        """When idle (nothing buffered, nothing in flight) commits each partition's position.

        The position can be past the last record's offset + 1: the bridge writes in transactions
        and each ends with a commit marker, which occupies an offset but is never returned. Without
        this, ``/lag`` would never reach 0. Safe because every record below the position was
        returned to us and, nothing being buffered or in flight, is written.
        """
        if self._lost_batch or self._acked:
            return
        if self._commit_task is not None:
            if not self._commit_task.done():
                return  # next idle round
            self._kick_commit()
            if self._commit_task is not None:
                return
        positions = {}
        for tp in self.consumer.assignment():
            with contextlib.suppress(IllegalStateError):
                pos = await self.consumer.position(tp)
                if self._committed.get(tp, -1) < pos:
                    positions[tp] = pos
        if positions and nothing_buffered() and not self._inflight and not self._acked and self._commit_task is None:
            await self._commit(positions)

    # ------------------------------------------------------------------ rebalance and close

    async def revoke(self, timeout_s: float) -> None:
        """The partitions are being revoked: gives the batches in flight ``timeout_s`` to finish
        and commit, then drops whatever is left uncommitted (lost until :meth:`assigned`)."""
        deadline = time.monotonic() + timeout_s
        tasks = [t for t in self._inflight if not t.done()]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=timeout_s)
            if late:
                log.warning("revoked; %d batch(es) still being written after %.1fs: abandoned uncommitted", len(late), timeout_s)
                for task in late:
                    task.cancel()
                self.metrics.abandoned.inc(len(late))
                await asyncio.wait(late)  # cancelled tasks finish at once
        # Commit what was written, while the partitions are still ours.
        self.take_written(raise_errors=False)
        try:
            await asyncio.wait_for(self.flush(), max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            log.warning("revoked; the commit of written batches did not finish in time: they will be read again")
        if self._commit_task is not None:
            self._commit_task.cancel()
            await asyncio.wait({self._commit_task})
            self._commit_task = None
        # Whatever is left belongs to the old assignment: never committed now.
        for task in self._inflight:
            exc = None if task.cancelled() else task.exception()
            if self._fatal is None and exc is not None and not isinstance(exc, BatchAbandonedError):
                self._fatal = exc
        self._inflight.clear()
        self._acked, self._acked_batches, self._acked_tally = {}, [], SinkTally()
        self._committed.clear()
        self._lost_batch = True  # until the new assignment resets positions to the committed offsets

    def assigned(self) -> None:
        """A new assignment: positions are the committed offsets again, commits may resume."""
        self._lost_batch = False

    async def close(self) -> None:
        """Cancels the writes and the commit in flight (nothing more is committed)."""
        tasks = [t for t in (*self._inflight, self._commit_task) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        for task in self._inflight:  # read each end, so none is reported "never retrieved" at ERROR
            if not task.cancelled() and (exc := task.exception()) is not None:
                log.warning("closing: %s", exc)
        self._inflight.clear()
        self._commit_task = None
