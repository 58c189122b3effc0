"""One owned remote partition's copy pipeline: fetched records → local transactions.

Each partition batch is one transaction on the local cluster holding the batch's normalized
events, its dead letters and the partition's next remote offset (in the compacted offsets topic,
:mod:`bridge.offsets`): a committed offsets value means "everything before N is on the local
topic". Every record passes the isolation boundary :func:`bridge.records.copy_record`, which
never raises: a record becomes an event or a dead letter, never the end of a session.

Transactions take the partition's transactional producers in turn (:mod:`bridge.producers`,
``BRIDGE_TRANSACTIONAL_SLOTS``; pipelined, ``BRIDGE_PIPELINE_TRANSACTIONS``): one produces while
the previous one's commit completes, and a producer is used again only after the others were.
Transaction k+1 is committed only after k committed and aborted if k failed, so the stored
offset never runs ahead of a committed batch. Each transaction's produce
and commit have a deadline (``BRIDGE_TRANSACTION_DEADLINE_S``); any client error ends the copy
task and is kept in :attr:`Copier.failure`, which ends the session (the next owner's fencing
settles a transaction whose outcome is not known).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

from bridge.batching import KeyPartitioner, send_batches, source_partitioner
from bridge.metrics import BridgeMetrics
from bridge.offsets import StoredOffset, offset_key, offset_value
from bridge.producers import open_transaction
from bridge.records import Refusal, copy_record
from bridge.settings import BridgeSettings
from shared.backoff import Backoff
from shared.dlq import HEADROOM_BYTES, dead_letter_of
from shared.errors import BackendUnavailableError
from shared.hops import BridgeCounts

# The worker's one logger, as before the split (its name is in every log line).
log = logging.getLogger("bridge.app")


class PartitionCopy:
    """One owned remote partition: its fencing producers, the records fetched but not yet
    copied, and the task that copies them, one transaction after the other.

    The copy owns the partition's state and its place on the session's consumer (seek, pause,
    resume): the worker hands it records (:meth:`enqueue`), starts it (:meth:`restart_at`) and
    stops it (:meth:`stop`); only its copy task (:class:`Copier`) moves its positions and counts.
    """

    def __init__(
        self,
        tp: TopicPartition,
        producers: tuple[AIOKafkaProducer, ...],
        consumer: AIOKafkaConsumer,
        run: Callable[[PartitionCopy], Coroutine[Any, Any, None]],
    ) -> None:
        self.tp = tp
        # The transactional producers (ids "…{partition}", "…{partition}.1", …): transactions
        # take them in turn, so one can produce while another's commit completes.
        self.producers = producers
        self._consumer = consumer
        self._run = run
        self.next_offset: int | None = None  # stored (committed); None until the first commit when nothing was stored
        self.queued_next: int | None = None  # the next offset expected from the consumer
        self.pending: list[ConsumerRecord[bytes, bytes]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.stopping = False
        self.paused = False
        # The partition's reset epoch and last resume (offsets topic), carried into every value.
        self.source_epoch = 0
        self.last_reset: dict[str, Any] | None = None
        # Cumulative copied / dead-lettered records, as of the last transaction produced (shared.hops).
        self.counts = BridgeCounts()

    def load(self, state: StoredOffset) -> None:
        """Takes the epoch, last reset and counts of the partition's committed offsets value
        (counts absent: stored before the ledger, incomplete from here)."""
        self.source_epoch, self.last_reset = state.source_epoch, state.reset
        self.counts = state.counts if state.counts is not None else BridgeCounts(complete=False)

    def advance_epoch(self, reset: dict[str, Any]) -> None:
        """A resume policy moved the stored position (its value is committed): the next epoch."""
        self.source_epoch += 1
        self.last_reset = reset

    def restart_at(self, position: int) -> None:
        """Seeks the partition to ``position``, starts the copy task and resumes fetching.

        No await inside: no fetched record can slip between the seek and the copy that takes it."""
        self.next_offset = self.queued_next = position
        self.stopping = False
        self._consumer.seek(self.tp, position)
        self._task = asyncio.create_task(self._run(self), name=f"copy-{self.tp.partition}")
        self._consumer.resume(self.tp)
        self.paused = False

    def hold_at(self, position: int) -> None:
        """Gives a partition in incident its position without copying it (it stays paused)."""
        self.next_offset = self.queued_next = position
        self.stopping = True
        self._consumer.seek(self.tp, position)

    def pause(self) -> None:
        self._consumer.pause(self.tp)
        self.paused = True

    async def stop(self) -> None:
        """Lets the copy task finish its open transaction and end; drops the queued records
        (the committed position stays: whoever copies next re-reads them)."""
        self.stopping = True
        self._wake.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        self.pending.clear()

    def enqueue(self, fetched: list[ConsumerRecord[bytes, bytes]], pause_at: int) -> None:
        """Queues fetched records (those before the expected offset were queued already); pauses
        the partition once ``pause_at`` records wait (back-pressure)."""
        expected = self.queued_next
        records = fetched if expected is None or fetched[0].offset >= expected else [r for r in fetched if r.offset >= expected]
        if not records:
            return
        self.pending.extend(records)
        self.queued_next = records[-1].offset + 1
        self._wake.set()
        if len(self.pending) >= pause_at and not self.paused:
            self.pause()

    def take(self, limit: int, resume_below: int) -> list[ConsumerRecord[bytes, bytes]]:
        """The next batch (up to ``limit`` queued records); resumes a paused partition once fewer
        than ``resume_below`` are left."""
        records = self.pending[:limit]
        del self.pending[:limit]
        if self.paused and len(self.pending) < resume_below:
            self._consumer.resume(self.tp)
            self.paused = False
        return records

    async def wait(self) -> None:
        """Until records are queued or the copy is stopped."""
        await self._wake.wait()
        self._wake.clear()


@dataclass
class _Txn:
    """A produced, not yet committed transaction."""

    records: int
    events: int
    dead: int
    next_offset: int
    oldest_ms: int
    dead_by_stage: dict[str, int] = field(default_factory=dict)
    started: float = 0.0
    produced: float = 0.0


class Copier:
    """Runs the copy tasks of the owned partitions (:meth:`copy_loop`, one per partition).

    Shared by all of them: the local topic's partitioner (replaced on each take-over), the
    session backoff (reset as transactions go through) and the first error of any copy task
    (:attr:`failure`, raised in the run loop by :meth:`raise_failure`: it ends the session).
    """

    def __init__(self, settings: BridgeSettings, metrics: BridgeMetrics, backoff: Backoff) -> None:
        self.settings = settings
        self.metrics = metrics
        self._backoff = backoff
        self.partitioner = KeyPartitioner(settings.local_partitions)  # replaced by the topic's real count on assignment
        # An error of a copy task: it ends the session.
        self.failure: BaseException | None = None
        # Per record (bridge.records.copy_record): the plausible event times and the largest
        # local record an event may become.
        self._rules = settings.event_rules()
        self._max_value_bytes = settings.max_request_bytes - HEADROOM_BYTES

    def _partitioner_of(self, tp: TopicPartition) -> Callable[[bytes], int]:
        """The local partition of each event copied from ``tp`` (``BRIDGE_LOCAL_PARTITIONING``)."""
        if self.settings.local_partitioning == "source":
            return source_partitioner(tp.partition, self.partitioner.partitions)
        return self.partitioner

    def raise_failure(self) -> None:
        """Raises (once) the error that ended a copy task, if any: the session ends with it."""
        if self.failure is not None:
            exc, self.failure = self.failure, None
            raise exc

    async def copy_loop(self, copy: PartitionCopy) -> None:
        """Copies the partition's queued records, one transaction per batch, until stopped.

        Pipelined (``BRIDGE_PIPELINE_TRANSACTIONS``): transaction k+1 is begun and produced on
        the partition's next producer while k's commit completes; k+1 is committed only after k
        committed, and aborted if k failed. So the stored offset never gets ahead of a committed
        batch, and each local partition receives k's records before k+1's (k's produce was
        acknowledged before k+1's began). At most one transaction is produced and one committed
        at a time, whatever the number of producers: the producers beyond two only give each
        one time to finish its last commit's markers before it begins again. A new owner fences
        every producer before it reads the offsets.
        """
        s = self.settings
        limit = s.max_batch_records
        previous: asyncio.Task[None] | None = None  # the previous transaction's commit
        slot = 0
        try:
            while not copy.stopping:
                if not copy.pending:
                    if previous is not None:
                        await previous
                        previous = None
                    await copy.wait()
                    continue
                records = copy.take(limit, resume_below=s.max_pending_records // 2)
                producer = copy.producers[slot]
                if s.pipeline_transactions:
                    slot = (slot + 1) % len(copy.producers)
                txn = await self._produce(copy, producer, records)
                if previous is not None:
                    try:
                        await previous
                    except BaseException:
                        await self._abort(producer)
                        raise
                    finally:
                        previous = None
                previous = asyncio.create_task(self._commit(copy, producer, txn), name=f"commit-{copy.tp.partition}")
                if not s.pipeline_transactions:
                    await previous
                    previous = None
                self._backoff.reset()
            if previous is not None:  # stopping: finish the open transaction
                await previous
        except Exception as exc:  # ends the session: everything is closed and restarted
            if previous is not None:
                with contextlib.suppress(Exception):
                    await previous  # bounded by the transaction deadline; its outcome is settled by the next owner
            log.warning(
                "copying partition %s failed: %s: %s",
                copy.tp.partition,
                type(exc).__name__,
                exc,
                extra={"topic": copy.tp.topic, "partition": copy.tp.partition},
            )
            self.failure = self.failure or exc

    async def _produce(self, copy: PartitionCopy, producer: AIOKafkaProducer, records: list[ConsumerRecord[bytes, bytes]]) -> _Txn:
        """Begins a transaction and produces the batch's events, dead letters and next offset
        (acknowledged); the commit is :meth:`_commit`."""
        s = self.settings
        tp = copy.tp
        bridged_at = datetime.now(UTC)
        started = time.perf_counter()
        oldest_ms = records[0].timestamp
        self.metrics.record_age_seconds.labels("txn_start").observe(max(0.0, time.time() * 1000 - oldest_ms) / 1000)
        epoch = copy.source_epoch
        events, dead, dead_by_stage = await self._build(tp, epoch, records, bridged_at)
        txn = _Txn(
            records=len(records),
            events=len(events),
            dead=len(dead),
            next_offset=records[-1].offset + 1,
            oldest_ms=oldest_ms,
            dead_by_stage=dead_by_stage,
        )
        txn.started = started
        phases = self.metrics.phase_seconds
        built = time.perf_counter()
        phases.labels("build").observe(built - started)
        try:
            # Bounded: aiokafka retries a produce to an unreachable leader, and EndTxn to an
            # unreachable coordinator, forever (its batches expire only when the leader is
            # unknown). Past the deadline the session ends; the next owner's init_transactions
            # fences this producer and settles its transaction, so its outcome need not be known.
            async with asyncio.timeout(s.transaction_deadline_s), open_transaction(producer):
                futures = await send_batches(producer, s.local_topic, self._partitioner_of(tp), events)
                for record, error in dead:
                    futures.append(await self._send_dead_letter(producer, record, error, epoch))
                counts = copy.counts.plus(len(events), len(dead))
                stored_value = offset_value(txn.next_offset, source_epoch=epoch, reset=copy.last_reset, counts=counts)
                futures.append(await producer.send(s.offsets_topic, key=offset_key(tp.topic, tp.partition), value=stored_value))
                sent = time.perf_counter()
                await asyncio.gather(*futures)
        except TimeoutError:
            self.metrics.transactions.labels("aborted").inc()
            raise BackendUnavailableError(
                f"transaction of partition {tp.partition} not produced within {s.transaction_deadline_s:.0f}s (local cluster unreachable?)"
            ) from None
        except BaseException:
            self.metrics.transactions.labels("aborted").inc()
            raise
        # The next transaction's value builds on these counts; if this one aborts, the session ends
        # and the next owner starts from the committed value.
        copy.counts = counts
        txn.produced = time.perf_counter()
        phases.labels("send").observe(sent - built)
        phases.labels("produce").observe(txn.produced - sent)
        return txn

    async def _build(
        self, tp: TopicPartition, epoch: int, records: list[ConsumerRecord[bytes, bytes]], bridged_at: datetime
    ) -> tuple[list[tuple[bytes, bytes]], list[tuple[ConsumerRecord[bytes, bytes], Refusal]], dict[str, int]]:
        """Each record through the isolation boundary: the local events, the refused records with
        their refusal, and the refusals counted by stage."""
        events: list[tuple[bytes, bytes]] = []
        dead: list[tuple[ConsumerRecord[bytes, bytes], Refusal]] = []
        dead_by_stage: dict[str, int] = {}
        rules, max_value_bytes = self._rules, self._max_value_bytes
        for i, record in enumerate(records):
            if i and i % 500 == 0:
                await asyncio.sleep(0)  # let heartbeats and the other partitions' I/O through
            # The isolation boundary: never raises; whatever the record holds, it is an event or a dead letter.
            result = copy_record(
                record.value,
                record.key,
                topic=tp.topic,
                partition=tp.partition,
                offset=record.offset,
                bridged_at=bridged_at,
                rules=rules,
                max_value_bytes=max_value_bytes,
                source_epoch=epoch,
            )
            if isinstance(result, Refusal):
                dead.append((record, result))
                dead_by_stage[result.stage] = dead_by_stage.get(result.stage, 0) + 1
            else:
                events.append(result)
        return events, dead, dead_by_stage

    async def _commit(self, copy: PartitionCopy, producer: AIOKafkaProducer, txn: _Txn) -> None:
        s = self.settings
        tp = copy.tp
        try:
            async with asyncio.timeout(s.transaction_deadline_s):
                await producer.commit_transaction()
        except TimeoutError:
            self.metrics.transactions.labels("aborted").inc()
            raise BackendUnavailableError(
                f"transaction of partition {tp.partition} not committed within {s.transaction_deadline_s:.0f}s (local cluster unreachable?)"
            ) from None
        except BaseException:
            self.metrics.transactions.labels("aborted").inc()
            raise
        committed = time.perf_counter()
        copy.next_offset = txn.next_offset
        self.metrics.phase_seconds.labels("commit").observe(committed - txn.produced)
        self.metrics.record_age_seconds.labels("committed").observe(max(0.0, time.time() * 1000 - txn.oldest_ms) / 1000)
        self.metrics.transactions.labels("committed").inc()
        self.metrics.consumed.inc(txn.records)
        self.metrics.produced.inc(txn.events)
        for stage, count in txn.dead_by_stage.items():
            self.metrics.dead_lettered.labels(stage).inc(count)
        self.metrics.stored_offset.labels(str(tp.partition)).set(txn.next_offset)
        self.metrics.batch_seconds.observe(committed - txn.started)

    async def _abort(self, producer: AIOKafkaProducer) -> None:
        """Aborts ``producer``'s open transaction, bounded; if that fails the session ends anyway
        and the next owner's fencing aborts it."""
        self.metrics.transactions.labels("aborted").inc()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(producer.abort_transaction(), self.settings.close_timeout_s)

    async def _send_dead_letter(
        self, producer: AIOKafkaProducer, record: ConsumerRecord[bytes, bytes], refusal: Refusal, source_epoch: int
    ) -> asyncio.Future[Any]:
        s = self.settings
        # the epoch travels with the letter: a replay gives an id-less record the event_id of this epoch
        dead = dead_letter_of(record, refusal, max_request_bytes=s.max_request_bytes, source_epoch=source_epoch)
        future: asyncio.Future[Any] = await producer.send(s.dlq_topic, **dead._asdict())
        return future
