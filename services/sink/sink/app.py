"""The sink worker: consume → build documents → write to MongoDB → commit offsets.

Wiring (:func:`create_sink`: the service state and the worker) and the loop; the pieces live
beside it: :mod:`sink.batch` (records → documents and dead letters), :mod:`sink.writes` (a batch
to MongoDB), :mod:`sink.deadletters` (dead letters to Kafka), :mod:`sink.commits` (the in-order
offset committer, whose docstring states when offsets are committed).

Guarantees (see ../README.md):

- Offsets of a batch are committed only after MongoDB acknowledged every document of it and the
  brokers every dead letter of it, and after every earlier batch was (:mod:`sink.commits`); a
  crash before that redelivers the batch, and as ``_id = event_id`` and a duplicate key counts as
  "already written", redelivery never stores an event twice.
- Reads are ``read_committed``: records of aborted bridge transactions are never seen.
- Up to ``max_inflight_batches`` batches are written at the same time (each its own
  ``insert_many``) while the next one is collected; at most twice as many are held.
- ``ingested_at`` is stamped at the start of each write attempt, never when the batch is built,
  and an attempt lasts at most ``write_attempt_timeout_s``: the ETL's incremental window
  (watermark minus settle margin) cannot pass a stamp before its document is visible. The
  process also publishes a visibility lease (:mod:`sink.visibility`, the contract in
  :mod:`shared.visibility`): every ``visibility_interval_s`` the instant through which everything
  it stamped is visible, so a reader can bound its window within seconds instead of the settle
  margin; it publishes before its first write attempt, starts none more than
  ``visibility_lease_s`` after its last successful publication (an outage meanwhile), and
  deletes its lease document on a clean stop.
- MongoDB down: the batch is retried with bounded backoff, the service is not ready, nothing is
  committed, the consumer stops fetching (back-pressure) and the sink resumes by itself.
- Rebalance: on revocation the batches being written get ``revoke_flush_timeout_s`` to finish and
  commit; records not yet written are dropped uncommitted and read again by the next owner.
- SIGTERM: the open batch is flushed if MongoDB answers within ``shutdown_flush_s``, offsets are
  committed, clients closed, and the worker returns (the process exits 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import IllegalStateError, KafkaError
from aiokafka.structs import ConsumerRecord
from pymongo import AsyncMongoClient

from shared.backoff import Backoff
from shared.errors import BackendUnavailableError, is_retriable
from shared.kafka import create_consumer, create_topics, group_members, group_membership
from shared.service import ServiceState
from sink.batch import Batch, build_batch
from sink.batchwrites import BatchWrites
from sink.commits import OffsetCommitter
from sink.deadletters import DLQ_MAX_REQUEST_BYTES
from sink.documents import IngestStamp
from sink.lag import group_lag
from sink.ledger import SinkLedger
from sink.metrics import SinkMetrics
from sink.mongo import MongoUnavailableError, MongoWriter
from sink.settings import SinkSettings
from sink.visibility import LeasePublisher, VisibilityLease

log = logging.getLogger(__name__)

IDLE_POLL_MS = 250  # how long one poll waits when nothing is buffered (bounds the reaction to SIGTERM)
CLOSE_TIMEOUT_S = 2.0  # closing the clients after SIGTERM (leave group, flush producer)
LEASE_DELETE_TIMEOUT_S = 1.0  # deleting the visibility lease document at the end (within CLOSE_TIMEOUT_S)
LEASE_NOT_READY = "mongodb: lease publication failed: "  # the not-ready reason of a failed lease publication


class Sink(BatchWrites, ConsumerRebalanceListener):
    """One sink process. ``run(stop)`` is the worker :func:`shared.service.run_service` drives."""

    def __init__(self, settings: SinkSettings, state: ServiceState) -> None:
        self.settings = settings
        self.state = state
        self.metrics = SinkMetrics(state.registry)
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.writer: MongoWriter | None = None
        self._lag_consumer: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._pending: list[ConsumerRecord[bytes | None, bytes | None]] = []
        self._pending_bytes = 0
        self._epoch = 0  # bumped on every revocation: batches of an older epoch are not written
        # The batches being written and the commits of their offsets (made with the consumer).
        self.commits: OffsetCommitter | None = None
        self.ledger: SinkLedger | None = None  # counts per local and remote partition (sink.ledger)
        self._give_up_at: float | None = None  # monotonic deadline once SIGTERM arrived
        self._backoff = Backoff(settings.backoff_initial_s, settings.backoff_max_s)
        # This process's write attempts and its lease (sink.visibility); published once MongoDB is connected.
        self.visibility = VisibilityLease(lease_s=settings.visibility_lease_s, attempt_timeout_s=settings.write_attempt_timeout_s)
        self.lease_publisher: LeasePublisher | None = None
        # The lease's own client: its publications never take (and, after an outage, never
        # discard) the write path's pooled connections, so a write still meets the outage first.
        self._lease_client: AsyncMongoClient[dict[str, Any]] | None = None
        self._serving = False  # _start finished: readiness is the writes' and the lease's
        state.lag = self.lag
        state.on_scrape = self.lag  # sink_lag_records fresh at every scrape

    # ------------------------------------------------------------------ lifecycle

    async def run(self, stop: asyncio.Event) -> None:
        """Runs until ``stop`` is set; then returns within ``shutdown_flush_s`` + ~3 s, whatever
        MongoDB or Kafka do (the process must exit 0 within 10 s of SIGTERM)."""
        log.info("starting: %s", self.settings.masked())
        deadline = asyncio.timeout(None)
        watcher = asyncio.create_task(self._watch_stop(stop, deadline), name="sink-stop-watch")
        try:
            async with deadline:
                if await self._start(stop):
                    await self._loop(stop)
                    await self._drain()
        except TimeoutError:
            if not deadline.expired():
                raise
            log.error(
                "shutdown flush overran its %.1fs: stopping without it (uncommitted records are read again)", self.settings.shutdown_flush_s
            )
        finally:
            watcher.cancel()
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await self._close()
            except TimeoutError:
                log.error("clients did not close within %.1fs", CLOSE_TIMEOUT_S)
        log.info("stopped")

    async def _watch_stop(self, stop: asyncio.Event, deadline: asyncio.Timeout) -> None:
        """From SIGTERM on, every retry loop has until ``_give_up_at`` to succeed; a second later
        the worker is interrupted, whatever it is waiting for."""
        await stop.wait()
        flush = self.settings.shutdown_flush_s
        self._give_up_at = time.monotonic() + flush
        deadline.reschedule(asyncio.get_running_loop().time() + flush + 1.0)
        log.info("stop requested: flushing for at most %.1fs", flush)

    async def _start(self, stop: asyncio.Event) -> bool:
        """Connects everything, retrying with backoff until it works or ``stop`` is set."""
        s = self.settings
        kafka = s.local_kafka.client_kwargs()
        self.writer = MongoWriter(s)
        self._lease_client = AsyncMongoClient(
            s.mongodb_uri.get_secret_value(),
            serverSelectionTimeoutMS=s.mongodb_timeout_ms,
            connectTimeoutMS=s.mongodb_timeout_ms,
            appname="pipeline-sink-lease",
        )
        backoff = Backoff(s.backoff_initial_s, s.backoff_max_s)
        while not stop.is_set():
            try:
                how = await self.writer.prepare()
                log.info("mongodb ready: write concern %s", how)
                self.ledger = SinkLedger(
                    self.writer.client[s.mongodb_database],
                    s.mongodb_collection,
                    self._group_committed,
                    self._group_members,
                    self.writer.write_concern,
                )
                # The lease is published before any write attempt, and from then on every interval.
                publisher = LeasePublisher(
                    self.visibility,
                    self._lease_client[s.mongodb_database],
                    s.mongodb_collection,
                    interval_s=s.visibility_interval_s,
                    write_concern=self.writer.write_concern,
                    metrics=self.metrics,
                    on_failed=self._lease_failed,
                    on_published=self._lease_published,
                )
                through = await publisher.publish()
                log.info("visibility lease %s published (visible through %s)", publisher.id, through.isoformat(timespec="milliseconds"))
                self.lease_publisher = publisher
                publisher.start()
                break
            except MongoUnavailableError as exc:
                self.state.set_not_ready(f"mongodb: {exc}")
                await _sleep_or_stop(stop, backoff.next_delay())
        while not stop.is_set():
            try:
                await create_topics(s.local_kafka, [s.dlq_topic], partitions=s.dlq_partitions, replication_factor=s.replication_factor)
                self.producer = AIOKafkaProducer(
                    **kafka, acks="all", enable_idempotence=True, max_request_size=DLQ_MAX_REQUEST_BYTES, linger_ms=5
                )
                await self.producer.start()
                self.consumer = create_consumer(
                    s.local_kafka,
                    group_id=s.group_id,
                    group_instance_id=s.group_instance_id,
                    client_id=f"sink-{s.group_id}",
                    auto_offset_reset="earliest",
                    max_poll_interval_ms=s.max_poll_interval_ms,
                    **s.consumer_options(),
                )
                self.commits = OffsetCommitter(
                    self.consumer,
                    self.metrics,
                    backoff_initial_s=s.backoff_initial_s,
                    backoff_max_s=s.backoff_max_s,
                    give_up_at=lambda: self._give_up_at,
                    ledger=self.ledger.advance if self.ledger is not None else None,
                )
                await self.consumer.start()
                self.consumer.subscribe([s.topic], listener=self)
                self._lag_consumer = create_consumer(s.local_kafka)
                await self._lag_consumer.start()
                self._admin = AIOKafkaAdminClient(**kafka)
                await self._admin.start()
                break
            except KafkaError as exc:
                self.state.set_not_ready(f"kafka: {type(exc).__name__}: {exc}")
                await self._close_kafka()
                await _sleep_or_stop(stop, backoff.next_delay())
        if stop.is_set():
            return False
        self._serving = True
        self.state.set_ready()
        return True

    def _lease_failed(self, exc: Exception) -> None:
        """A failed publication: not ready (writes stop when the lease lapses). It often tells of
        an outage first: a write waiting for a server to select (up to its attempt timeout) says nothing."""
        self.state.set_not_ready(f"{LEASE_NOT_READY}{exc}"[:300])

    def _lease_published(self) -> None:
        """Ready again when only the lease had made the sink not ready (a write's outage stays until a write succeeds)."""
        if self._serving and not self.state.ready and self.state.not_ready_reason.startswith(LEASE_NOT_READY):
            self.state.set_ready()

    async def _close_kafka(self) -> None:
        for client in (self.consumer, self.producer, self._lag_consumer, self._admin):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.close() if isinstance(client, AIOKafkaAdminClient) else await client.stop()
        self.consumer = self.producer = self._lag_consumer = None
        self._admin = None

    async def _close(self) -> None:
        if self.commits is not None:
            await self.commits.close()
        await asyncio.gather(self._retire_lease(), self._close_kafka())
        if self.writer is not None:
            with contextlib.suppress(Exception):
                await self.writer.close()

    async def _retire_lease(self) -> None:
        """After the final flush: the publisher stops and the lease document is deleted (when no
        attempt without an answer may still land; else it is left to settle), bounded."""
        publisher, self.lease_publisher = self.lease_publisher, None
        if publisher is not None:
            await publisher.stop()
            await publisher.retire(LEASE_DELETE_TIMEOUT_S)
        client, self._lease_client = self._lease_client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()

    @property
    def _committer(self) -> OffsetCommitter:
        assert self.commits is not None, "the committer exists once the sink started"
        return self.commits

    async def _group_members(self) -> set[str]:
        """The sink group's member ids now (the ledger's claims: :mod:`sink.ledger`)."""
        if self._admin is None:
            raise BackendUnavailableError("not connected to Kafka yet")
        return await group_members(self._admin, self.settings.group_id)

    async def _commit_positions(self) -> None:
        """When idle: each partition's position (past the transaction markers), see
        :meth:`sink.commits.OffsetCommitter.commit_positions`."""
        if self.ledger is not None and self.consumer is not None:
            # The ledger documents exist before any offset of a partition is committed (sink.ledger).
            try:
                await self.ledger.load(self.consumer.assignment())
            except Exception as exc:
                if not is_retriable(exc):
                    raise
                log.info("idle commit skipped: sink ledger not readable (%s: %s)", type(exc).__name__, exc)
                return
        await self._committer.commit_positions(lambda: not self._pending)

    # ------------------------------------------------------------------ the loop

    async def _loop(self, stop: asyncio.Event) -> None:
        assert self.consumer is not None
        while not stop.is_set():
            await self._collect(stop)
            if stop.is_set():
                break  # what is buffered is flushed by _drain
            # Build the next batch's documents while earlier batches are still being written.
            batch = self._cut_batch() if self._pending else None
            self._committer.take_written()
            if batch is not None:
                await self._wait_for_slot()
                self._start_write(batch)  # dropped there if a revocation came meanwhile
            elif not self._committer.held():
                await self._commit_positions()

    async def _drain(self) -> None:
        """After SIGTERM: finish the batches in flight, flush what is buffered, commit; bounded in time."""
        while self._pending and self._give_up_at is not None and time.monotonic() < self._give_up_at:
            await self._wait_for_slot()
            self._start_write(self._cut_batch())
        await self._committer.finish()
        if self._pending:
            log.warning("stopping with %d records unwritten and uncommitted; they will be read again", len(self._pending))
        elif self._give_up_at is not None and time.monotonic() < self._give_up_at:
            with contextlib.suppress(KafkaError, IllegalStateError):
                await self._commit_positions()

    async def _collect(self, stop: asyncio.Event) -> None:
        """Fills ``_pending`` until a batch is full, or its wait expired and a write slot is free."""
        assert self.consumer is not None
        s = self.settings
        first_at: float | None = time.monotonic() if self._pending else None
        while not stop.is_set():
            if len(self._pending) >= s.max_batch_events or self._pending_bytes >= s.max_batch_bytes:
                return
            self._committer.take_written()  # hands finished writes to the committer while the next batch fills
            running = self._committer.writing()
            writing, busy = running > 0, self._slots_full()
            now = time.monotonic()
            if first_at is not None and not busy and now - first_at >= s.max_batch_wait_ms / 1000:
                return
            if first_at is None:
                timeout_ms = IDLE_POLL_MS
            else:
                timeout_ms = min(IDLE_POLL_MS, max(1, int(s.max_batch_wait_ms - (now - first_at) * 1000))) if not busy else 20
            # Whatever getmany returns belongs to the current assignment (aiokafka checks each
            # partition's position), even across a rebalance: it must never be dropped here, as
            # the positions have moved past it and an idle commit would skip it.
            fetch_started = time.monotonic()
            data = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=max(1, s.max_batch_events - len(self._pending)))
            self.metrics.stage_seconds.labels("fetch").inc(time.monotonic() - fetch_started)
            for records in data.values():
                self._pending.extend(records)
                self._pending_bytes += sum(len(r.value) if r.value is not None else 0 for r in records)
            self.metrics.buffered.set(len(self._pending))
            if data and first_at is None:
                first_at = time.monotonic()
            if not data and first_at is None and not writing:
                return  # idle: let the loop advance committed offsets past transaction markers

    def _cut_batch(self) -> Batch:
        """Takes at most one batch (count and bytes bounds) from ``_pending`` and builds it."""
        s = self.settings
        started = time.monotonic()
        count, size = 0, 0
        for record in self._pending:
            value_size = len(record.value) if record.value is not None else 0
            if count and (count >= s.max_batch_events or size + value_size > s.max_batch_bytes):
                break
            count += 1
            size += value_size
        records, self._pending = self._pending[:count], self._pending[count:]
        self._pending_bytes -= size
        self.metrics.buffered.set(len(self._pending))
        batch = build_batch(records, IngestStamp.at(datetime.now(UTC)), s.max_document_bytes, self._epoch)
        self.metrics.consumed.inc(batch.records)
        self.metrics.stage_seconds.labels("build").inc(time.monotonic() - started)
        return batch

    def _start_write(self, batch: Batch) -> None:
        if batch.epoch != self._epoch:
            self.metrics.abandoned.inc()
            return
        self._committer.add(asyncio.create_task(self._write_batch(batch), name="sink-write"))

    def _slots_full(self) -> bool:
        """No new write may start: ``max_inflight_batches`` are being written, or as many written
        batches already wait behind an earlier one still being written (bounds the memory held)."""
        n = self.settings.max_inflight_batches
        return self._committer.writing() >= n or self._committer.held() >= 2 * n

    async def _wait_for_slot(self) -> None:
        waited = time.monotonic()
        self._committer.take_written()
        while self._slots_full():
            await self._committer.wait_for_a_write()
            self._committer.take_written()
        self.metrics.stage_seconds.labels("slot_wait").inc(time.monotonic() - waited)

    # ------------------------------------------------------------------ rebalance

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        """Gives the batch in flight a bounded time to commit, then drops what is not written."""
        self._epoch += 1
        dropped = len(self._pending)
        self._pending, self._pending_bytes = [], 0
        self.metrics.buffered.set(0)
        await self._committer.revoke(self.settings.revoke_flush_timeout_s)
        self.metrics.assigned.set(0)
        log.info(
            "partitions revoked: %s (dropped %d buffered records, they will be read again)",
            _names(revoked),
            dropped,
            extra={"partitions": [f"{tp.topic}:{tp.partition}" for tp in sorted(revoked)], "count": dropped},
        )

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self._committer.assigned()
        if self.ledger is not None and self.consumer is not None:
            self.ledger.forget(group_membership(self.consumer))
        self.metrics.assigned.set(len(assigned))
        log.info(
            "partitions assigned: %s", _names(assigned), extra={"partitions": [f"{tp.topic}:{tp.partition}" for tp in sorted(assigned)]}
        )

    # ------------------------------------------------------------------ lag

    async def lag(self) -> dict[str, Any]:
        """``/lag``: :func:`sink.lag.group_lag` of the topic and group, once connected to Kafka."""
        if self._lag_consumer is None or self._admin is None:
            raise BackendUnavailableError("not connected to Kafka yet")
        return await group_lag(self._lag_consumer, self._admin, self.settings.topic, self.settings.group_id, self.metrics)


async def _sleep_or_stop(stop: asyncio.Event, delay: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), delay)


def _names(tps: Iterable[TopicPartition]) -> str:
    return ",".join(f"{tp.topic}:{tp.partition}" for tp in sorted(tps)) or "-"


def create_sink(settings: SinkSettings) -> tuple[ServiceState, Sink]:
    """The service state (HTTP surface, ``/lag``) and the worker, wired together."""
    state = ServiceState(name="sink")
    sink = Sink(settings, state)
    return state, sink
