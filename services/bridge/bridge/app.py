"""The bridge's worker: the remote consumer session, partitions changing hands, health and lag.

Exactly once across two clusters, without KIP-447 (which needs input and output on one cluster):

- Each remote partition this process owns has its own transactional producers
  (:mod:`bridge.producers`, ``BRIDGE_TRANSACTIONAL_SLOTS``); starting them on take-over fences
  the previous owner.
- Each partition batch is one local transaction holding the normalized events, the dead
  letters and the partition's next remote offset (:mod:`bridge.copier`, one copy task per
  owned partition, pipelined over its producers).
- On assignment the position is read back from the offsets topic (``read_committed``), after
  the fencing, and the remote consumer seeks there. The remote group's committed offsets are
  written afterwards for monitoring only; they are never read.
- A stored or fetch position the remote log no longer holds is a source-reset incident
  (:mod:`bridge.incidents`, :mod:`bridge.source_resets`), never a silent skip.

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
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError, NoOffsetForPartitionError, OffsetOutOfRangeError
from aiokafka.structs import ConsumerRecord

from bridge.batching import KeyPartitioner
from bridge.copier import Copier, PartitionCopy
from bridge.health import fetched_since, remote_gone, remote_unanswered
from bridge.incidents import find_incident, plan_positions
from bridge.metrics import BridgeMetrics
from bridge.offsets import read_stored_states
from bridge.producers import close_producers, start_producer
from bridge.settings import BridgeSettings
from bridge.source_resets import SourceResets, now_iso
from shared.backoff import Backoff
from shared.errors import BackendUnavailableError, describe, is_retriable
from shared.kafka import create_consumer, create_topics, partition_lags, refused_connections, topic_partitions, wait_for_leaders
from shared.service import ServiceState

log = logging.getLogger(__name__)

__all__ = ["Bridge", "create_bridge"]

# The remote check's TCP probe (shared.kafka.refused_connections): a kernel accepts in
# microseconds even when its broker is starved, so 5 s without an answer is a path that is gone.
REMOTE_CONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class _Positions:
    """A take-over's positions: where each partition starts, which are held in incident, and
    what was stored (by partition number; None: never copied)."""

    start: dict[TopicPartition, int]
    held: set[TopicPartition]
    stored: dict[int, int | None]


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
        self._fetched_at_check: dict[TopicPartition, int | None] = {}  # each copy's next offset at the last remote check
        # This session's assignment was taken over (its producers reached the local cluster):
        # until then the remote check alone never makes the bridge ready.
        self._taken_over = False
        self._consumer: AIOKafkaConsumer | None = None
        # The owned partitions' copy tasks; an error of one ends the session.
        self._copier = Copier(settings, metrics, self._backoff)
        # Partitions assigned but not taken over yet, and a counter of rebalances to notice one
        # that happens during a take-over.
        self._pending: list[TopicPartition] | None = None
        self._generation = 0
        self._topics_ready = False
        # Owned partitions in a source-reset incident (held under policy "fail"), the policy, and
        # stopping/restarting a partition's copy around an incident found mid-session.
        self._resets = SourceResets(settings, state, metrics, self._copies, self._copier)

    # ------------------------------------------------------------------ run loop

    async def run(self, stop: asyncio.Event) -> None:
        """Copies until ``stop`` is set; retriable errors restart the session after a backoff."""
        while not stop.is_set():
            try:
                await self.ensure_topics()
                await self._session(stop)
            except Exception as exc:
                # Retriable errors (brokers down, fencing, timeouts) end the session; a new one
                # starts after a backoff. Anything else ends the service.
                if not is_retriable(exc):
                    raise
                self.metrics.restarts.inc()
                delay = self._backoff.next_delay()
                self.state.set_not_ready(f"{describe(exc)}; retrying in {delay:.1f}s")
                log.warning("session ended by %s; restarting in %.1fs", describe(exc), delay)
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
        consumer = create_consumer(
            s.remote_kafka,
            group_id=s.group_id,
            client_id=f"bridge-{s.group_id}",
            # Never reset silently: an out-of-range fetch raises OffsetOutOfRangeError (a source
            # reset incident); a partition never stored starts at BRIDGE_START_FROM by an
            # explicit seek in take_over.
            auto_offset_reset="none",
            # Fetch sizes, session and metadata age (a remote topic created or grown after the
            # bridge subscribed is seen this soon).
            **s.consumer_options(),
        )
        self._copier.failure = None
        self._pending, self._taken_over = None, False
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
                    await self._resets.out_of_range(consumer, exc)
                    continue
                except NoOffsetForPartitionError:
                    # A partition assigned but not taken over yet (no committed group offset to
                    # fall back on): take_over seeks it explicitly. Records fetched for other
                    # partitions stay buffered for the next call.
                    await asyncio.sleep(0)
                    continue
                # No await between getmany and the hand-over: the records match the assignment.
                self._hand_over(consumer, batch)
                self._copier.raise_failure()
                if time.monotonic() >= next_check:
                    await self._check_remote(consumer)
                    next_check = time.monotonic() + s.lag_interval_s
        finally:
            self._consumer = None
            await self._close_copies(list(self._copies))
            await consumer.stop()

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
            copy.enqueue(fetched, pause_at=limit)

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
        """Fences the previous owners, reads the stored positions (final only after the fencing),
        then starts copying every assigned partition from its position."""
        generation, assigned, self._pending = self._generation, self._pending or [], None
        consumer = self._consumer
        if consumer is None or not assigned:
            self._taken_over = consumer is not None  # nothing to copy: nothing to wait for
            return
        self.metrics.rebalances.inc()
        copies = await self._fence(consumer, assigned)
        try:
            positions = await self._positions(consumer, copies)
        except BaseException:
            await close_producers([p for c in copies.values() for p in c.producers], self.settings.close_timeout_s)
            raise
        if generation != self._generation:  # another rebalance meanwhile: its take-over follows
            log.info("assignment %s superseded before it was taken over", sorted(positions.stored))
            for tp in copies:
                self._resets.incidents.pop(tp, None)
            self._resets.refresh()
            await close_producers([p for c in copies.values() for p in c.producers], self.settings.close_timeout_s)
            return
        self._start(copies, positions)
        self._taken_over = True

    async def _fence(self, consumer: AIOKafkaConsumer, assigned: list[TopicPartition]) -> dict[TopicPartition, PartitionCopy]:
        """Starts every assigned partition's producers (``init_transactions`` fences the previous
        owner) and sizes the local topic; on any failure closes what started and raises."""
        slots = range(self.settings.transactional_slots)
        started = await asyncio.gather(
            *(start_producer(self.settings, tp, slot) for tp in assigned for slot in slots), return_exceptions=True
        )
        producers = [p for p in started if isinstance(p, AIOKafkaProducer)]
        failures = [r for r in started if isinstance(r, BaseException)]
        if failures:
            await close_producers(producers, self.settings.close_timeout_s)
            raise failures[0]
        try:
            self._copier.partitioner = KeyPartitioner(len(await producers[0].partitions_for(self.settings.local_topic)))
        except BaseException:
            await close_producers(producers, self.settings.close_timeout_s)
            raise
        n = len(slots)
        run = self._copier.copy_loop
        return {tp: PartitionCopy(tp, tuple(producers[i * n : (i + 1) * n]), consumer, run) for i, tp in enumerate(assigned)}

    async def _positions(self, consumer: AIOKafkaConsumer, copies: dict[TopicPartition, PartitionCopy]) -> _Positions:
        """Each partition's start position: the stored one (or ``BRIDGE_START_FROM`` for one never
        copied), after the source-reset policy; and the partitions held in incident (policy
        ``fail``: they keep the stored position)."""
        states = await read_stored_states(self.settings.local_kafka, self.settings.offsets_topic)
        tps = list(copies)
        unstored = [tp for tp in tps if (tp.topic, tp.partition) not in states]
        first: dict[TopicPartition, int] = {}
        if unstored:  # where to start a partition never copied before
            earliest = self.settings.start_from == "earliest"
            first = await (consumer.beginning_offsets(unstored) if earliest else consumer.end_offsets(unstored))
        known = [tp for tp in tps if (tp.topic, tp.partition) in states]
        log_starts: dict[TopicPartition, int] = {}
        log_ends: dict[TopicPartition, int] = {}
        if known:
            log_starts = await asyncio.wait_for(consumer.beginning_offsets(known), 10)
            log_ends = await asyncio.wait_for(consumer.end_offsets(known), 10)
        for tp in known:
            copies[tp].load(states[(tp.topic, tp.partition)])
        positions: dict[TopicPartition, int] = {}
        held: set[TopicPartition] = set()
        for tp, start in plan_positions(tps, states, first, log_starts, log_ends, now_iso()).items():
            positions[tp] = start.position
            if start.incident is None:
                continue
            # A source reset: an incident, never a skip.
            recorded = states[(tp.topic, tp.partition)].incident is not None
            resumed = await self._resets.on_incident(copies[tp], start.incident, recorded=recorded, via="take-over")
            if resumed is None:
                held.add(tp)
            else:
                positions[tp] = resumed
        stored = {tp.partition: st.next_offset if (st := states.get((tp.topic, tp.partition))) is not None else None for tp in tps}
        return _Positions(positions, held, stored)

    def _start(self, copies: dict[TopicPartition, PartitionCopy], positions: _Positions) -> None:
        """Seeks, registers and resumes every partition as one step (no await), so no fetched
        record can slip between a seek and its copy (records fetched before were dropped: no
        copy). A held partition keeps its stored position, stays paused and is not copied."""
        for tp, copy in copies.items():
            if tp in positions.held:
                copy.hold_at(positions.start[tp])
            else:
                copy.restart_at(positions.start[tp])
        self._copies.update(copies)
        log.info("assigned %s, resuming at %s", sorted(positions.stored), positions.stored)

    async def release(self, revoked: Sequence[TopicPartition]) -> None:
        """Rebalance listener: waits for the open transactions to end, then closes the revoked
        partitions' producers (an assignment not taken over yet is dropped)."""
        self._generation += 1
        self._pending = None
        await self._close_copies([tp for tp in revoked if tp in self._copies])

    async def _close_copies(self, tps: Sequence[TopicPartition]) -> None:
        """Lets each copy task finish its open transaction, then closes the producers. Records
        fetched but not copied are dropped: whoever owns the partition next re-reads them."""
        copies = [self._copies.pop(tp) for tp in tps if tp in self._copies]
        await asyncio.gather(*(c.stop() for c in copies))
        for copy in copies:
            self._resets.incidents.pop(copy.tp, None)
            for gauge in (self.metrics.lag, self.metrics.stored_offset):
                with contextlib.suppress(KeyError):
                    gauge.remove(str(copy.tp.partition))
        self._resets.refresh()
        await close_producers([p for c in copies for p in c.producers], self.settings.close_timeout_s)

    # ------------------------------------------------------------------ health, lag, monitoring

    async def _check_remote(self, consumer: AIOKafkaConsumer) -> None:
        """Reads the remote end offsets (the lag gauges, and proof the remote cluster answers),
        then commits the stored positions to the remote group for monitoring tools."""
        copying = [tp for tp, c in self._copies.items() if not c.stopping]
        previous, self._fetched_at_check = self._fetched_at_check, {tp: c.queued_next for tp, c in self._copies.items()}
        # Probed only when nothing arrived since the last check: records arriving prove the
        # cluster answers (and a busy remote is not sent a bare connection every check).
        arriving = fetched_since(previous, self._fetched_at_check)
        refused = None if arriving else await refused_connections(self.settings.remote_kafka, REMOTE_CONNECT_TIMEOUT_S)
        if remote_gone(refused, previous, self._fetched_at_check):  # whatever is queued; no offsets' timeout to wait out
            self.state.set_not_ready(f"remote cluster does not answer: {refused}")
            return
        try:
            ends = await asyncio.wait_for(consumer.end_offsets(list(self._copies)), 10) if self._copies else {}
            starts = await asyncio.wait_for(consumer.beginning_offsets(copying), 10) if copying else {}
        except (KafkaError, TimeoutError) as exc:
            throttled = any(c.paused for c in self._copies.values())
            if remote_unanswered(exc, previous, self._fetched_at_check, throttled=throttled):
                self.state.set_not_ready(f"remote cluster does not answer: {describe(exc)}")
            else:
                log.info("remote offsets not read within 10 s while records kept arriving or queued: busy, still ready")
            return
        # The fetch position (what the partition's copy has reached, in memory or committed)
        # outside the log: a source reset. Records between the committed position and it are
        # queued in memory, so retention passing only the committed position loses nothing.
        for tp in copying:
            copy = self._copies.get(tp)
            if copy is None or copy.stopping or copy.queued_next is None or tp not in ends:
                continue
            fetched = copy.queued_next
            at = now_iso()
            incident = find_incident(
                tp.topic, tp.partition, stored=fetched, log_start=starts[tp], log_end=ends[tp], at=at, fetch_offset=fetched
            )
            if incident is not None:
                await self._resets.live_incident(consumer, copy, fetched, incident.kind, via="remote check")
        positions = {tp: c.next_offset for tp, c in self._copies.items() if c.next_offset is not None and tp not in self._resets.incidents}
        for tp, end in ends.items():
            if tp in positions:
                self.metrics.lag.labels(str(tp.partition)).set(max(0, end - positions[tp]))
            elif tp in self._resets.incidents:  # no number: the incident gauge says it (never a 0)
                with contextlib.suppress(KeyError):
                    self.metrics.lag.remove(str(tp.partition))
        if self._resets.incidents:
            self._resets.refresh()
        elif self._taken_over:
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
        tps = await topic_partitions(consumer, s.remote_topic, refresh=False)
        # Positions first, log offsets after (shared.kafka.partition_lags).
        states = await read_stored_states(s.local_kafka, s.offsets_topic, timeout_s=10)
        fetched = {tp: c.queued_next for tp, c in self._copies.items() if not c.stopping and c.queued_next is not None}
        stored = {tp: st.next_offset if (st := states.get((tp.topic, tp.partition))) is not None else None for tp in tps}
        out: dict[str, Any] = {}
        incidents = 0
        for p in await partition_lags(consumer, stored, timeout_s=10):
            tp, start, end = p.tp, p.log_start, p.end
            state = states.get((tp.topic, tp.partition))
            # An incident has no lag (never a 0 while nothing is copied): this process's own
            # view for a partition it holds; for one it copies, its fetch position outside the
            # log (the run loop acts on it at its next check); else what the offsets topic and
            # the log offsets say.
            incident = self._resets.incidents.get(tp)
            copying = tp in fetched
            if incident is None and state is not None and (copying or tp not in self._copies):
                incident = find_incident(
                    tp.topic,
                    tp.partition,
                    stored=state.next_offset,
                    log_start=start,
                    log_end=end,
                    at=now_iso(),
                    source_epoch=state.source_epoch,
                    recorded=None if copying else state.incident,
                    fetch_offset=fetched.get(tp),
                )
            incidents += incident is not None
            out[str(tp.partition)] = {
                "end_offset": end,
                "log_start": start,
                "stored_offset": p.position,
                "lag": None if incident is not None else p.lag,
                "owned_here": tp in self._copies,
                "source_epoch": state.source_epoch if state is not None else 0,
                "incident": incident.as_dict() if incident is not None else None,
            }
        total = None if incidents else sum(p["lag"] for p in out.values())
        return {"topic": s.remote_topic, "partitions": out, "total_lag": total, "incidents": incidents}


def create_bridge(settings: BridgeSettings) -> tuple[ServiceState, Bridge]:
    """The service state (HTTP surface) and the worker, wired together."""
    state = ServiceState(name="bridge")
    bridge = Bridge(settings, state, BridgeMetrics.create(state.registry))
    state.lag = bridge.lag
    return state, bridge
