"""Wires the bridge: remote consumer → two transactional producers per remote partition → local.

Exactly once across two clusters, without KIP-447 (which needs input and output on one cluster):

- Each remote partition this process owns has its own two transactional producers whose
  ``transactional.id`` is derived from the partition (and a slot, 0 or 1). Starting them runs
  ``init_transactions``, which bumps the ids' epochs: the previous owner (dead, or a zombie that
  has not noticed the rebalance) is fenced and its open transactions aborted. Transactions
  alternate between the two (pipelined: one produces while the other commits; see
  :meth:`Bridge._copy_loop`).
- Each partition batch is one local transaction holding the normalized events, the dead
  letters and the partition's next remote offset (in the compacted offsets topic).
- On assignment the position is read back from the offsets topic (``read_committed``), after
  the fencing, and the remote consumer seeks there. The remote group's committed offsets are
  written afterwards for monitoring only; they are never read.

Any client error ends the session: everything is closed, the service reports not-ready, waits a
bounded backoff and starts over from the stored offsets, so an aborted or half-known transaction
never leaks into the output.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaConnectionError, KafkaError, NoOffsetForPartitionError, OffsetOutOfRangeError
from aiokafka.protocol.metadata import MetadataRequest
from aiokafka.structs import ConsumerRecord

from bridge.batching import KeyPartitioner, send_batches
from bridge.incidents import SourceIncident, classify_position, reset_record, resume_position
from bridge.metrics import BridgeMetrics
from bridge.offsets import StoredOffset, offset_key, offset_value, read_stored_states
from bridge.records import DLQ_HEADROOM_BYTES, HEADER_TRUNCATED_FROM, Refusal, copy_record, dead_letter_record
from bridge.settings import BridgeSettings
from shared.backoff import Backoff
from shared.errors import BackendUnavailableError
from shared.kafka import KafkaConnection, create_topics
from shared.service import ServiceState

log = logging.getLogger(__name__)

# Errors that end a session and start a new one after a backoff (brokers down, fencing, timeouts).
RETRIABLE_ERRORS = (KafkaError, OSError, TimeoutError, BackendUnavailableError)
__all__ = ["DLQ_HEADROOM_BYTES", "HEADER_TRUNCATED_FROM", "Bridge", "create_bridge"]
# Transactional producers per owned partition: all are fenced on take-over; with
# BRIDGE_PIPELINE_TRANSACTIONS the transactions alternate between them.
TRANSACTIONAL_SLOTS = 2


@dataclass
class PartitionCopy:
    """One owned remote partition: its fencing producer, the records fetched but not yet
    copied, and the task that copies them, one transaction after the other."""

    tp: TopicPartition
    # Two transactional producers (ids "…{partition}" and "…{partition}.1"): transactions
    # alternate between them, so one can produce while the other's commit completes.
    producers: tuple[AIOKafkaProducer, ...]
    next_offset: int | None = None  # stored (committed); None until the first commit when nothing was stored
    queued_next: int | None = None  # the next offset expected from the consumer
    pending: list[ConsumerRecord[bytes, bytes]] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    stopping: bool = False
    paused: bool = False
    # The partition's reset epoch and last resume (offsets topic), carried into every value.
    source_epoch: int = 0
    last_reset: dict[str, Any] | None = None


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


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, bridge: Bridge) -> None:
        self._bridge = bridge

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        await self._bridge.release(revoked)

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        self._bridge.assigned(assigned)


class Bridge:
    """The worker of the bridge service; :meth:`run` is what :func:`run_service` runs."""

    def __init__(self, settings: BridgeSettings, state: ServiceState, metrics: BridgeMetrics) -> None:
        self.settings = settings
        self.state = state
        self.metrics = metrics
        self._backoff = Backoff(initial=settings.backoff_initial_s, maximum=settings.backoff_max_s)
        self._copies: dict[TopicPartition, PartitionCopy] = {}
        self._partitioner = KeyPartitioner(settings.local_partitions)  # replaced by the topic's real count on assignment
        self._consumer: AIOKafkaConsumer | None = None
        # An error of a copy task: it ends the session.
        self._failure: BaseException | None = None
        # Partitions assigned but not taken over yet, and a counter of rebalances to notice one
        # that happens during a take-over.
        self._pending: list[TopicPartition] | None = None
        self._generation = 0
        self._topics_ready = False
        # Owned partitions in a source-reset incident under policy "fail": not copied, not ready.
        self._incidents: dict[TopicPartition, SourceIncident] = {}
        # Per record (bridge.records.copy_record): the plausible event times and the largest
        # local record an event may become.
        self._rules = settings.event_rules()
        self._max_value_bytes = settings.max_request_bytes - DLQ_HEADROOM_BYTES

    # ------------------------------------------------------------------ run loop

    async def run(self, stop: asyncio.Event) -> None:
        """Copies until ``stop`` is set; retriable errors restart the session after a backoff."""
        while not stop.is_set():
            try:
                await self.ensure_topics()
                await self._session(stop)
            except RETRIABLE_ERRORS as exc:
                self.metrics.restarts.inc()
                delay = self._backoff.next_delay()
                self.state.set_not_ready(f"{type(exc).__name__}: {exc}; retrying in {delay:.1f}s")
                log.warning("session ended by %s: %s; restarting in %.1fs", type(exc).__name__, exc, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        self.state.set_not_ready("stopped")
        log.info("stopped")

    async def ensure_topics(self) -> None:
        """Creates the local topics when missing (idempotent; once per process)."""
        if self._topics_ready:
            return
        s = self.settings
        rf = s.replication_factor
        created = [
            *await create_topics(s.local_kafka, [s.local_topic], partitions=s.local_partitions, replication_factor=rf),
            *await create_topics(s.local_kafka, [s.dlq_topic], partitions=s.dlq_partitions, replication_factor=rf),
            *await create_topics(
                s.local_kafka,
                [s.offsets_topic],
                partitions=s.offsets_partitions,
                replication_factor=rf,
                configs={"cleanup.policy": "compact", "segment.bytes": str(16 * 1024 * 1024)},
            ),
        ]
        if created:
            log.info("created topics %s", created)
        await wait_for_leaders(s.local_kafka, [s.local_topic, s.dlq_topic, s.offsets_topic], timeout_s=s.init_timeout_s)
        self._topics_ready = True

    async def _session(self, stop: asyncio.Event) -> None:
        s = self.settings
        consumer = AIOKafkaConsumer(
            **s.remote_kafka.client_kwargs(),
            group_id=s.group_id,
            client_id=f"bridge-{s.group_id}",
            enable_auto_commit=False,
            # Never reset silently: an out-of-range fetch raises OffsetOutOfRangeError (a source
            # reset incident); a partition never stored starts at BRIDGE_START_FROM by an
            # explicit seek in take_over.
            auto_offset_reset="none",
            isolation_level="read_committed",
            fetch_max_bytes=s.fetch_max_bytes,
            max_partition_fetch_bytes=s.max_partition_fetch_bytes,
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=s.heartbeat_interval_ms,
            # A remote topic created (or grown) after the bridge subscribed is seen this soon.
            metadata_max_age_ms=s.metadata_max_age_ms,
        )
        self._failure = None
        self._pending = None
        await consumer.start()
        try:
            self._consumer = consumer
            consumer.subscribe([s.remote_topic], listener=_Rebalance(self))
            log.info("consuming %s from %s as group %s", s.remote_topic, s.remote_kafka.masked(), s.group_id)
            next_check = 0.0
            while not stop.is_set():
                if self._pending is not None:
                    await self.take_over()
                try:
                    batch = await consumer.getmany(timeout_ms=s.poll_timeout_ms, max_records=s.max_batch_records)
                except OffsetOutOfRangeError as exc:  # the remote log lost our position: an incident
                    await self._out_of_range(consumer, exc)
                    continue
                except NoOffsetForPartitionError:
                    # A partition assigned but not taken over yet (no committed group offset to
                    # fall back on): take_over seeks it explicitly. Records fetched for other
                    # partitions stay buffered for the next call.
                    await asyncio.sleep(0)
                    continue
                # No await between getmany and the hand-over: the records match the assignment.
                self._hand_over(consumer, batch)
                self._raise_failure()
                if time.monotonic() >= next_check:
                    await self._check_remote(consumer)
                    next_check = time.monotonic() + s.lag_interval_s
        finally:
            self._consumer = None
            await self._close_copies(list(self._copies))
            await consumer.stop()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            exc, self._failure = self._failure, None
            raise exc

    def _hand_over(self, consumer: AIOKafkaConsumer, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        """Queues fetched records for their partition's copy task; pauses a partition whose
        queue is full (back-pressure: the task resumes it once it has caught up)."""
        limit = self.settings.max_pending_records
        now_ms = time.time() * 1000
        for tp, fetched in batch.items():
            copy = self._copies.get(tp)
            if copy is None or copy.stopping or not fetched:
                continue  # revoked: the new owner copies these from the stored offset
            self.metrics.record_age_seconds.labels("fetched").observe(max(0.0, now_ms - fetched[0].timestamp) / 1000)
            expected = copy.queued_next
            records = fetched if expected is None or fetched[0].offset >= expected else [r for r in fetched if r.offset >= expected]
            if not records:
                continue
            copy.pending.extend(records)
            copy.queued_next = records[-1].offset + 1
            copy.wake.set()
            if len(copy.pending) >= limit and not copy.paused:
                consumer.pause(tp)
                copy.paused = True

    # ------------------------------------------------------------------ partitions changing hands

    def assigned(self, assigned: Sequence[TopicPartition]) -> None:
        """Rebalance listener: pauses the new partitions; the run loop takes them over.

        The take-over (fencing, reading the stored offsets) takes seconds on a busy cluster: in
        the listener it would hold up the group's heartbeats and get this member evicted.
        """
        self._generation += 1
        self._pending = list(assigned)
        if self._consumer is not None and assigned:
            self._consumer.pause(*assigned)

    async def take_over(self) -> None:
        """Fences the previous owners, then seeks every assigned partition to its stored offset."""
        generation, assigned, self._pending = self._generation, self._pending or [], None
        consumer = self._consumer
        if consumer is None or not assigned:
            return
        self.metrics.rebalances.inc()
        slots = range(TRANSACTIONAL_SLOTS)
        started = await asyncio.gather(*(self._start_producer(tp, slot) for tp in assigned for slot in slots), return_exceptions=True)
        producers = [p for p in started if isinstance(p, AIOKafkaProducer)]
        copies: dict[TopicPartition, PartitionCopy] = {}
        if len(producers) == len(started):
            copies = {tp: PartitionCopy(tp, tuple(producers[i * len(slots) : (i + 1) * len(slots)])) for i, tp in enumerate(assigned)}
        try:
            failures = [r for r in started if isinstance(r, BaseException)]
            if failures:
                await self._close_producers(producers)
                raise failures[0]
            some = producers[0]
            self._partitioner = KeyPartitioner(len(await some.partitions_for(self.settings.local_topic)))
            # Only now, with every previous owner fenced, is the stored offset final.
            states = await read_stored_states(self.settings.local_kafka, self.settings.offsets_topic)
            stored = {k: v.next_offset for k, v in states.items()}
            resume = {tp.partition: stored.get((tp.topic, tp.partition)) for tp in assigned}  # None: never copied
            unstored = [tp for tp in copies if (tp.topic, tp.partition) not in stored]
            if unstored:  # where to start a partition never copied before
                first = self.settings.start_from == "earliest"
                starts = await (consumer.beginning_offsets(unstored) if first else consumer.end_offsets(unstored))
                stored.update({(tp.topic, tp.partition): starts[tp] for tp in unstored})
            # A stored position outside the remote log is a source reset: an incident, never a skip.
            held: set[TopicPartition] = set()
            known = [tp for tp in copies if (tp.topic, tp.partition) in states]
            if known:
                log_starts = await asyncio.wait_for(consumer.beginning_offsets(known), 10)
                log_ends = await asyncio.wait_for(consumer.end_offsets(known), 10)
                for tp in known:
                    state = states[(tp.topic, tp.partition)]
                    copy = copies[tp]
                    copy.source_epoch, copy.last_reset = state.source_epoch, state.reset
                    incident = self._stored_incident(tp, state, log_starts[tp], log_ends[tp])
                    if incident is None:
                        continue
                    position = await self._on_incident(copy, incident, recorded=state.incident is not None, via="take-over")
                    if position is None:
                        held.add(tp)
                    else:
                        stored[(tp.topic, tp.partition)] = position
        except BaseException:
            await self._close_producers([p for c in copies.values() for p in c.producers])
            raise
        if generation != self._generation:  # another rebalance meanwhile: its take-over follows
            log.info("assignment %s superseded before it was taken over", sorted(resume))
            for tp in copies:
                self._incidents.pop(tp, None)
            self._refresh_incidents()
            await self._close_producers([p for c in copies.values() for p in c.producers])
            return
        # No await from here on: seek, register and resume as one step, so no fetched record
        # can slip between a seek and its copy (records fetched before were dropped: no copy).
        for tp, copy in copies.items():
            position = stored[(tp.topic, tp.partition)]
            copy.next_offset = copy.queued_next = position
            consumer.seek(tp, position)  # a held partition too: stays paused, but has a position
            if tp in held:  # in incident (policy fail): not copied
                copy.stopping = True
                continue
            copy.task = asyncio.create_task(self._copy_loop(copy), name=f"copy-{tp.partition}")
        self._copies.update(copies)
        consumer.resume(*(tp for tp in copies if tp not in held))
        log.info("assigned %s, resuming at %s", sorted(resume), resume)

    async def release(self, revoked: Sequence[TopicPartition]) -> None:
        """Rebalance listener: waits for the open transactions to end, then closes the revoked
        partitions' producers (an assignment not taken over yet is dropped)."""
        self._generation += 1
        self._pending = None
        await self._close_copies([tp for tp in revoked if tp in self._copies])

    async def _close_producers(self, producers: Sequence[AIOKafkaProducer]) -> None:
        await asyncio.gather(*(close_producer(p, self.settings.close_timeout_s) for p in producers), return_exceptions=True)

    async def _start_producer(self, tp: TopicPartition, slot: int) -> AIOKafkaProducer:
        s = self.settings
        producer = AIOKafkaProducer(
            **s.local_kafka.client_kwargs(),
            client_id=f"bridge-{s.group_id}-{tp.partition}-{slot}",
            transactional_id=s.transactional_id(tp.partition, slot),
            transaction_timeout_ms=s.transaction_timeout_ms,
            enable_idempotence=True,
            acks="all",
            linger_ms=s.linger_ms,
            max_batch_size=s.max_batch_bytes,
            max_request_size=s.max_request_bytes,
        )
        try:
            # start() runs init_transactions: this is the fencing of the previous owner.
            await asyncio.wait_for(producer.start(), s.init_timeout_s)
        except BaseException:
            await close_producer(producer, s.close_timeout_s)
            raise
        return producer

    async def _close_copies(self, tps: Sequence[TopicPartition]) -> None:
        """Lets each copy task finish its open transaction, then closes the producers. Records
        fetched but not copied are dropped: whoever owns the partition next re-reads them."""
        copies = [self._copies.pop(tp) for tp in tps if tp in self._copies]
        for copy in copies:
            copy.stopping = True
            copy.wake.set()
        await asyncio.gather(*(c.task for c in copies if c.task is not None), return_exceptions=True)
        for copy in copies:
            self._incidents.pop(copy.tp, None)
            for gauge in (self.metrics.lag, self.metrics.stored_offset):
                with contextlib.suppress(KeyError):
                    gauge.remove(str(copy.tp.partition))
        self._refresh_incidents()
        await self._close_producers([p for c in copies for p in c.producers])

    # ------------------------------------------------------------------ copying

    async def _copy_loop(self, copy: PartitionCopy) -> None:
        """Copies the partition's queued records, one transaction per batch, until stopped.

        Pipelined (``BRIDGE_PIPELINE_TRANSACTIONS``): transaction k+1 is begun and produced on
        the other producer while k's commit completes; k+1 is committed only after k committed,
        and aborted if k failed. So the stored offset never gets ahead of a committed batch, and
        each local partition receives k's records before k+1's (k's produce was acknowledged
        before k+1's began). A new owner fences both producers before it reads the offsets.
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
                    await copy.wake.wait()
                    copy.wake.clear()
                    continue
                records = copy.pending[:limit]
                del copy.pending[:limit]
                if copy.paused and len(copy.pending) < s.max_pending_records // 2 and self._consumer is not None:
                    self._consumer.resume(copy.tp)
                    copy.paused = False
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
            log.warning("copying partition %s failed: %s: %s", copy.tp.partition, type(exc).__name__, exc)
            self._failure = self._failure or exc

    async def _produce(self, copy: PartitionCopy, producer: AIOKafkaProducer, records: list[ConsumerRecord[bytes, bytes]]) -> _Txn:
        """Begins a transaction and produces the batch's events, dead letters and next offset
        (acknowledged); the commit is :meth:`_commit`."""
        s = self.settings
        tp = copy.tp
        bridged_at = datetime.now(UTC)
        started = time.perf_counter()
        oldest_ms = records[0].timestamp
        self.metrics.record_age_seconds.labels("txn_start").observe(max(0.0, time.time() * 1000 - oldest_ms) / 1000)
        events: list[tuple[bytes, bytes]] = []
        dead: list[tuple[ConsumerRecord[bytes, bytes], Refusal]] = []
        dead_by_stage: dict[str, int] = {}
        rules, max_value_bytes, epoch = self._rules, self._max_value_bytes, copy.source_epoch
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
            # Not ``producer.transaction()``: on the deadline's cancellation its exit awaits an
            # abort that waits for the same unreachable brokers, and nothing cancels it again.
            async with asyncio.timeout(s.transaction_deadline_s):
                await producer.begin_transaction()
                try:
                    futures = await send_batches(producer, s.local_topic, self._partitioner, events)
                    for record, error in dead:
                        futures.append(await self._send_dead_letter(producer, tp, record, error))
                    stored_value = offset_value(txn.next_offset, source_epoch=epoch, reset=copy.last_reset)
                    futures.append(await producer.send(s.offsets_topic, key=offset_key(tp.topic, tp.partition), value=stored_value))
                    sent = time.perf_counter()
                    await asyncio.gather(*futures)
                except KafkaError:
                    if not producer._txn_manager.is_fatal_error():
                        await producer.abort_transaction()  # still under the deadline
                    raise
        except TimeoutError:
            self.metrics.transactions.labels("aborted").inc()
            raise BackendUnavailableError(
                f"transaction of partition {tp.partition} not produced within {s.transaction_deadline_s:.0f}s (local cluster unreachable?)"
            ) from None
        except BaseException:
            self.metrics.transactions.labels("aborted").inc()
            raise
        txn.produced = time.perf_counter()
        phases.labels("send").observe(sent - built)
        phases.labels("produce").observe(txn.produced - sent)
        return txn

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
        self.metrics.dead_lettered.inc(txn.dead)
        for stage, count in txn.dead_by_stage.items():
            self.metrics.dead_lettered_by_stage.labels(stage).inc(count)
        self.metrics.stored_offset.labels(str(tp.partition)).set(txn.next_offset)
        self.metrics.batch_seconds.observe(committed - txn.started)

    async def _abort(self, producer: AIOKafkaProducer) -> None:
        """Aborts ``producer``'s open transaction, bounded; if that fails the session ends anyway
        and the next owner's fencing aborts it."""
        self.metrics.transactions.labels("aborted").inc()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(producer.abort_transaction(), self.settings.close_timeout_s)

    async def _send_dead_letter(
        self, producer: AIOKafkaProducer, tp: TopicPartition, record: ConsumerRecord[bytes, bytes], refusal: Refusal
    ) -> asyncio.Future[Any]:
        s = self.settings
        key, value, headers = dead_letter_record(
            record.value,
            record.key,
            list(record.headers or ()),
            refusal,
            topic=tp.topic,
            partition=tp.partition,
            offset=record.offset,
            max_request_bytes=s.max_request_bytes,
        )
        future: asyncio.Future[Any] = await producer.send(s.dlq_topic, value=value, key=key, headers=headers)
        return future

    # ------------------------------------------------------------------ source resets (issue 15)

    def _stored_incident(self, tp: TopicPartition, state: StoredOffset, log_start: int, log_end: int) -> SourceIncident | None:
        """The incident of a stored position: one recorded under policy ``fail`` (it stays until
        a resume clears it, even once the new log has grown past the old position), or a
        position outside ``[log_start, log_end]``."""
        if state.incident is not None:
            kind = str(state.incident.get("kind") or classify_position(state.next_offset, log_start, log_end) or "recorded")
            at = str(state.incident.get("at") or _now())
        else:
            found = classify_position(state.next_offset, log_start, log_end)
            if found is None:
                return None
            kind, at = found, _now()
        return SourceIncident(tp.topic, tp.partition, kind, state.next_offset, log_start, log_end, at, source_epoch=state.source_epoch)

    async def _on_incident(self, copy: PartitionCopy, incident: SourceIncident, *, recorded: bool = False, via: str) -> int | None:
        """Applies ``BRIDGE_SOURCE_RESET_POLICY`` to a partition whose copying is stopped (or not
        started): under ``fail`` records the incident (once) and returns None: the partition is
        held; under a resume policy moves the stored position in a transaction on the
        partition's producer (a reset record, the next epoch) and returns the new position."""
        s = self.settings
        tp = copy.tp
        policy = s.source_reset_policy
        if not recorded:
            self.metrics.source_resets.labels(str(tp.partition), incident.kind).inc()
        log.error(
            "source reset incident: topic %s partition %s stored %s log start %s log end %s (%s%s; found by %s); policy %s",
            tp.topic,
            tp.partition,
            incident.stored,
            incident.log_start,
            incident.log_end,
            incident.kind,
            f", fetch position {incident.fetch_offset}" if incident.fetch_offset is not None else "",
            "the recorded incident" if recorded else via,
            policy,
        )
        if policy == "fail":
            if not recorded:  # durable: a restart with "fail" must not find the log "fine" again
                value = offset_value(incident.stored, source_epoch=copy.source_epoch, reset=copy.last_reset, incident=incident.as_dict())
                await self._write_offset_record(copy, value)
            self._incidents[tp] = incident
            self._refresh_incidents()
            return None
        position = resume_position(policy, incident.log_start, incident.log_end)
        reset = reset_record(incident, policy, position, _now())
        await self._write_offset_record(copy, offset_value(position, source_epoch=copy.source_epoch + 1, reset=reset))
        copy.source_epoch += 1
        copy.last_reset = reset
        self.metrics.source_resumes.labels(str(tp.partition), policy).inc()
        self.metrics.stored_offset.labels(str(tp.partition)).set(position)
        log.warning(
            "source reset of %s partition %s resolved by policy %s: position %s -> %s (log start %s, end %s), source epoch %s",
            tp.topic,
            tp.partition,
            policy,
            incident.stored,
            position,
            incident.log_start,
            incident.log_end,
            copy.source_epoch,
        )
        self._incidents.pop(tp, None)
        self._refresh_incidents()
        return position

    async def _write_offset_record(self, copy: PartitionCopy, value: bytes) -> None:
        """One offsets-topic value, alone in a transaction of the partition's (fencing) producer."""
        s = self.settings
        producer = copy.producers[0]
        try:
            async with asyncio.timeout(s.transaction_deadline_s):
                await producer.begin_transaction()
                try:
                    await (await producer.send(s.offsets_topic, key=offset_key(copy.tp.topic, copy.tp.partition), value=value))
                except KafkaError:
                    if not producer._txn_manager.is_fatal_error():
                        await producer.abort_transaction()
                    raise
                await producer.commit_transaction()
        except TimeoutError:
            raise BackendUnavailableError(
                f"offsets record of partition {copy.tp.partition} not committed within {s.transaction_deadline_s:.0f}s"
            ) from None

    def _refresh_incidents(self) -> None:
        """The incident gauge, and readiness: not ready while any owned partition is held."""
        self.metrics.source_incidents.set(len(self._incidents))
        if self._incidents:
            self.state.set_not_ready("; ".join(i.reason() for _, i in sorted(self._incidents.items())))

    async def _out_of_range(self, consumer: AIOKafkaConsumer, exc: OffsetOutOfRangeError) -> None:
        """``getmany`` raised OffsetOutOfRange (``auto_offset_reset="none"``): the remote log no
        longer holds the fetch position. Never a silent reset: an incident for each partition."""
        refused = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
        if not refused:
            raise exc  # cannot tell which partition: end the session, take-over checks them all
        for tp, fetch_offset in refused.items():
            copy = self._copies.get(tp)
            if copy is not None and not copy.stopping:
                await self._live_incident(consumer, copy, int(fetch_offset), None, via="fetch (OffsetOutOfRange)")

    async def _live_incident(
        self, consumer: AIOKafkaConsumer, copy: PartitionCopy, fetch_offset: int, kind: str | None, *, via: str
    ) -> None:
        """Stops a copying partition (its open transaction finishes; queued records are dropped,
        the committed position stays), then applies the policy; resumes copying if it resumes."""
        tp = copy.tp
        consumer.pause(tp)
        copy.paused = True
        copy.stopping = True
        copy.wake.set()
        if copy.task is not None:
            await asyncio.gather(copy.task, return_exceptions=True)
        copy.pending.clear()
        self._raise_failure()  # its last transaction failed: the session ends, take-over re-checks
        log_start = (await asyncio.wait_for(consumer.beginning_offsets([tp]), 10))[tp]
        log_end = (await asyncio.wait_for(consumer.end_offsets([tp]), 10))[tp]
        stored = copy.next_offset if copy.next_offset is not None else fetch_offset
        found = classify_position(fetch_offset, log_start, log_end) or kind or "out_of_range"
        incident = SourceIncident(tp.topic, tp.partition, found, stored, log_start, log_end, _now(), fetch_offset, copy.source_epoch)
        position = await self._on_incident(copy, incident, via=via)
        if position is None or tp not in self._copies or self._copies[tp] is not copy:
            return  # held (policy fail), or revoked meanwhile
        # No await from here on: seek, restart the copy task and resume as one step.
        copy.next_offset = copy.queued_next = position
        copy.stopping = False
        consumer.seek(tp, position)
        copy.task = asyncio.create_task(self._copy_loop(copy), name=f"copy-{tp.partition}")
        consumer.resume(tp)
        copy.paused = False

    # ------------------------------------------------------------------ health, lag, monitoring

    async def _check_remote(self, consumer: AIOKafkaConsumer) -> None:
        """Reads the remote end offsets (the lag gauges, and proof the remote cluster answers),
        then commits the stored positions to the remote group for monitoring tools."""
        copying = [tp for tp, c in self._copies.items() if not c.stopping]
        try:
            ends = await asyncio.wait_for(consumer.end_offsets(list(self._copies)), 10) if self._copies else {}
            starts = await asyncio.wait_for(consumer.beginning_offsets(copying), 10) if copying else {}
        except (KafkaError, TimeoutError) as exc:
            self.state.set_not_ready(f"remote cluster does not answer: {type(exc).__name__}: {exc}")
            return
        # The fetch position (what the partition's copy has reached, in memory or committed)
        # outside the log: a source reset. Records between the committed position and it are
        # queued in memory, so retention passing only the committed position loses nothing.
        for tp in copying:
            copy = self._copies.get(tp)
            if copy is None or copy.stopping or copy.queued_next is None or tp not in ends:
                continue
            kind = classify_position(copy.queued_next, starts[tp], ends[tp])
            if kind is not None:
                await self._live_incident(consumer, copy, copy.queued_next, kind, via="remote check")
        positions = {tp: c.next_offset for tp, c in self._copies.items() if c.next_offset is not None and tp not in self._incidents}
        for tp, end in ends.items():
            if tp in positions:
                self.metrics.lag.labels(str(tp.partition)).set(max(0, end - positions[tp]))
            elif tp in self._incidents:  # no number: the incident gauge says it (never a 0)
                with contextlib.suppress(KeyError):
                    self.metrics.lag.remove(str(tp.partition))
        if self._incidents:
            self._refresh_incidents()
        else:
            self.state.set_ready()
        if positions:
            try:
                await asyncio.wait_for(consumer.commit(positions), 5)
            except (KafkaError, TimeoutError) as exc:  # monitoring only: the next check commits again
                log.debug("remote group commit skipped: %s", exc)

    async def lag(self) -> dict[str, Any]:
        """``GET /lag``: every remote partition's end offset against its stored position."""
        consumer = self._consumer
        if consumer is None:
            raise BackendUnavailableError("not connected")
        s = self.settings
        partitions = consumer.partitions_for_topic(s.remote_topic)
        if not partitions:  # "no partitions, no lag" would read as "caught up"
            raise BackendUnavailableError(f"partitions of {s.remote_topic} not known yet")
        tps = [TopicPartition(s.remote_topic, p) for p in sorted(partitions)]
        # Positions first, log offsets after: a position committed (or fetched) after the end
        # offsets were read would otherwise look like one above the log end.
        states = await read_stored_states(s.local_kafka, s.offsets_topic, timeout_s=10)
        fetched = {tp: c.queued_next for tp, c in self._copies.items() if not c.stopping and c.queued_next is not None}
        ends = await asyncio.wait_for(consumer.end_offsets(tps), 10)
        starts = await asyncio.wait_for(consumer.beginning_offsets(tps), 10)
        out: dict[str, Any] = {}
        incidents = 0
        for tp in tps:
            state = states.get((tp.topic, tp.partition))
            position = state.next_offset if state is not None else None
            base = position if position is not None else starts[tp]
            # An incident has no lag (never a 0 while nothing is copied): this process's own
            # view for a partition it holds; for one it copies, its fetch position outside the
            # log (the run loop acts on it at its next check); else what the offsets topic and
            # the log offsets say.
            incident = self._incidents.get(tp)
            if incident is None and tp in fetched and state is not None:
                kind = classify_position(fetched[tp], starts[tp], ends[tp])
                if kind is not None:
                    incident = SourceIncident(
                        tp.topic, tp.partition, kind, state.next_offset, starts[tp], ends[tp], _now(), fetched[tp], state.source_epoch
                    )
            elif incident is None and state is not None and tp not in self._copies:
                incident = self._stored_incident(tp, state, starts[tp], ends[tp])
            incidents += incident is not None
            out[str(tp.partition)] = {
                "end_offset": ends[tp],
                "log_start": starts[tp],
                "stored_offset": position,
                "lag": None if incident is not None else max(0, ends[tp] - base),
                "owned_here": tp in self._copies,
                "source_epoch": state.source_epoch if state is not None else 0,
                "incident": incident.as_dict() if incident is not None else None,
            }
        total = None if incidents else sum(p["lag"] for p in out.values())
        return {"topic": s.remote_topic, "partitions": out, "total_lag": total, "incidents": incidents}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def close_producer(producer: AIOKafkaProducer, timeout_s: float) -> None:
    """Closes ``producer`` within about ``timeout_s`` seconds.

    ``AIOKafkaProducer.stop`` first waits until every pending batch is delivered, which never
    happens while the brokers are down. Past the timeout the pending batches are failed, the
    sender task cancelled and the connections closed. Nothing is lost: an unfinished transaction
    is aborted by the broker (or by the next ``init_transactions`` of the same id) and its
    records are copied again from the stored offset.
    """
    try:
        await asyncio.wait_for(producer.stop(), timeout_s)
        return
    except TimeoutError:
        log.warning("producer %s did not flush within %.0fs; closing it anyway", producer.client._client_id, timeout_s)
    producer._message_accumulator.fail_all(KafkaConnectionError("producer closed while its cluster was unreachable"))
    sender_task = producer._sender.sender_task if producer._sender is not None else None
    if sender_task is not None and not sender_task.done():
        sender_task.cancel()
        await asyncio.wait([sender_task], timeout=timeout_s)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(producer.client.close(), timeout_s)


async def wait_for_leaders(conn: KafkaConnection, topics: Sequence[str], *, timeout_s: float) -> None:
    """Returns once every broker knows a leader for every partition of ``topics``.

    A topic created a moment ago is known to the controller first; a producer that asks a
    broker which has not caught up yet caches "unknown topic" and its batches can stall until
    they expire (seen with aiokafka 0.12 and transactions). So ask each broker.
    """
    client = AIOKafkaClient(**conn.client_kwargs())
    await client.bootstrap()
    try:
        deadline = time.monotonic() + timeout_s
        pending = {broker.nodeId for broker in client.cluster.brokers()}
        while pending:
            for node_id in sorted(pending):
                response = await client.send(node_id, MetadataRequest[1](list(topics)))
                if all(error == 0 and parts and all(p[2] >= 0 for p in parts) for error, _, _, parts in response.topics):
                    pending.discard(node_id)
            if pending and time.monotonic() > deadline:
                raise BackendUnavailableError(f"brokers {sorted(pending)} know no leaders for {list(topics)} after {timeout_s:.0f}s")
            if pending:
                await asyncio.sleep(0.1)
    finally:
        await client.close()


def create_bridge(settings: BridgeSettings) -> tuple[ServiceState, Bridge]:
    """The service state (HTTP surface) and the worker, wired together."""
    state = ServiceState(name="bridge")
    bridge = Bridge(settings, state, BridgeMetrics.create(state.registry))
    state.lag = bridge.lag
    return state, bridge
