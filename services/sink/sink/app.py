"""The sink worker: consume → build documents → write to MongoDB → commit offsets.

Guarantees (see ../README.md):

- Offsets of a batch are committed only after MongoDB acknowledged every document of it (with the
  configured write concern) and every dead-lettered record of it was acknowledged by the brokers
  (``acks=all``). A crash anywhere before that redelivers the batch; because ``_id = event_id``
  and a duplicate key counts as "already written", redelivery never stores an event twice.
- Reads are ``read_committed``: records of aborted bridge transactions are never seen.
- Up to ``max_inflight_batches`` batches are written at the same time (each its own
  ``insert_many``) while the next one is collected. Commits are decoupled from writes: a batch's
  offsets join the next commit only once it *and every earlier batch* were acknowledged, so a
  committed offset never skips unwritten data. One commit is in flight at a time and covers every
  batch acknowledged since the previous one (an offset commit costs 0.1-2 s on a loaded cluster:
  one commit per batch, waited for by the write slot, had halved the sink's throughput).
- ``ingested_at`` is stamped at the start of each write attempt (not when the batch is built): a
  batch retried for minutes still lands with a stamp no older than one attempt
  (``write_attempt_timeout_s``), so the ETL's incremental window (watermark minus settle margin)
  cannot pass it by before it is visible.
- MongoDB down: the batch is retried with bounded backoff, the service is not ready, nothing is
  committed, the consumer stops fetching (back-pressure) and the sink resumes by itself.
- Rebalance (several sinks in one group): on revocation the batch being written gets
  ``revoke_flush_timeout_s`` to finish and commit; records not yet written are dropped
  uncommitted and the partition's next owner reads them again.
- SIGTERM: the open batch is flushed if MongoDB answers within ``shutdown_flush_s``, offsets are
  committed, clients closed, and the worker returns (the process exits 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaError,
    MessageSizeTooLargeError,
)
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from shared.backoff import Backoff
from shared.dlq import dead_letter_headers
from shared.errors import InvalidEventError
from shared.kafka import create_topics
from shared.service import ServiceState
from sink.documents import STAGE_BUILD, STAGE_WRITE, IngestStamp, document_of
from sink.metrics import SinkMetrics
from sink.mongo import STORE_CODE_RE, MongoUnavailableError, MongoWriter
from sink.settings import SinkSettings
from sink.writes import CONFLICT_ERROR_CLASS, STAGE_CONFLICT, write_documents

log = logging.getLogger(__name__)

IDLE_POLL_MS = 250  # how long one poll waits when nothing is buffered (bounds the reaction to SIGTERM)
HEADER_STORE_CODE = "dlq.error.code"  # sink.write dead letters: the store's error code (e.g. 1 for FerretDB's InternalError)
DLQ_MAX_VALUE_BYTES = 1_000_000  # a dead letter the brokers refuse as too large is resent truncated to this
CLOSE_TIMEOUT_S = 2.0  # closing the clients after SIGTERM (leave group, flush producer)
COMMIT_TIMEOUT_S = 30.0  # aiokafka retries a commit while the coordinator is away; we move on after this


class BatchAbandonedError(Exception):
    """A batch given up uncommitted (shutdown while MongoDB is down); it will be redelivered."""


@dataclass
class DeadLetter:
    record: ConsumerRecord[bytes | None, bytes | None]
    stage: str
    error_class: str
    message: str


@dataclass
class Batch:
    """Records cut from the stream, turned into documents and dead letters; ``offsets`` to commit."""

    epoch: int
    records: int = 0
    docs: list[dict[str, Any]] = field(default_factory=list)
    doc_records: list[ConsumerRecord[bytes | None, bytes | None]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    started: float = 0.0  # monotonic start of its write


def build_batch(
    records: Iterable[ConsumerRecord[bytes | None, bytes | None]], stamp: IngestStamp, max_document_bytes: int, epoch: int
) -> Batch:
    """Documents and dead letters of ``records``; ``offsets`` = next offset per partition. Each
    record is isolated: an ``InvalidEventError`` is dead-lettered with its stage, any other
    exception from building its document with stage ``sink.build`` (its class and message)."""
    batch = Batch(epoch=epoch)
    for record in records:
        batch.records += 1
        try:
            doc = document_of(record.value, stamp, max_document_bytes)
        except InvalidEventError as exc:
            batch.dead_letters.append(DeadLetter(record, exc.stage, exc.error_class, exc.reason))
        except Exception as exc:  # one record never fails the batch: whatever it raises, it is dead-lettered
            log.warning("record %s/%d/%d could not be built: %r", record.topic, record.partition, record.offset, exc)
            batch.dead_letters.append(DeadLetter(record, STAGE_BUILD, type(exc).__name__, str(exc) or repr(exc)))
        else:
            batch.docs.append(doc)
            batch.doc_records.append(record)
        tp = TopicPartition(record.topic, record.partition)
        batch.offsets[tp] = max(batch.offsets.get(tp, 0), record.offset + 1)
    return batch


class Sink(ConsumerRebalanceListener):
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
        # Batches being written (or written, behind an earlier one still being written), oldest first.
        self._inflight: deque[asyncio.Task[Batch]] = deque()
        # Offsets of the acknowledged prefix of batches not yet handed to a commit, with the
        # (write start, records) of each batch they cover; one commit task at a time.
        self._acked: dict[TopicPartition, int] = {}
        self._acked_batches: list[tuple[float, int]] = []
        self._commit_task: asyncio.Task[None] | None = None
        self._fatal: BaseException | None = None  # a write's unexpected error, seen during a rebalance
        self._committed: dict[TopicPartition, int] = {}
        # A batch was given up uncommitted since the last assignment: positions are then ahead of
        # what is written, so committing positions (see _commit_positions) would lose it.
        self._lost_batch = False
        self._give_up_at: float | None = None  # monotonic deadline once SIGTERM arrived
        self._backoff = Backoff(settings.backoff_initial_s, settings.backoff_max_s)
        state.lag = self.lag

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
        backoff = Backoff(s.backoff_initial_s, s.backoff_max_s)
        while not stop.is_set():
            try:
                how = await self.writer.prepare()
                log.info("mongodb ready: write concern %s", how)
                break
            except MongoUnavailableError as exc:
                self.state.set_not_ready(f"mongodb: {exc}")
                await _sleep_or_stop(stop, backoff.next_delay())
        while not stop.is_set():
            try:
                await create_topics(s.local_kafka, [s.dlq_topic], partitions=s.dlq_partitions, replication_factor=s.replication_factor)
                self.producer = AIOKafkaProducer(**kafka, acks="all", enable_idempotence=True, max_request_size=4 << 20, linger_ms=5)
                await self.producer.start()
                self.consumer = AIOKafkaConsumer(
                    **kafka,
                    group_id=s.group_id,
                    group_instance_id=s.group_instance_id,
                    client_id=f"sink-{s.group_id}",
                    isolation_level="read_committed",
                    enable_auto_commit=False,
                    auto_offset_reset="earliest",
                    fetch_max_bytes=s.fetch_max_bytes,
                    max_partition_fetch_bytes=s.max_partition_fetch_bytes,
                    metadata_max_age_ms=s.metadata_max_age_ms,
                    session_timeout_ms=s.session_timeout_ms,
                    heartbeat_interval_ms=s.heartbeat_interval_ms,
                    max_poll_interval_ms=s.max_poll_interval_ms,
                )
                await self.consumer.start()
                self.consumer.subscribe([s.topic], listener=self)
                self._lag_consumer = AIOKafkaConsumer(**kafka, isolation_level="read_committed", enable_auto_commit=False)
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
        self.state.set_ready()
        return True

    async def _close_kafka(self) -> None:
        for client in (self.consumer, self.producer, self._lag_consumer, self._admin):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.close() if isinstance(client, AIOKafkaAdminClient) else await client.stop()
        self.consumer = self.producer = self._lag_consumer = None
        self._admin = None

    async def _close(self) -> None:
        tasks = [t for t in (*self._inflight, self._commit_task) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        self._inflight.clear()
        self._commit_task = None
        await self._close_kafka()
        if self.writer is not None:
            with contextlib.suppress(Exception):
                await self.writer.close()

    # ------------------------------------------------------------------ the loop

    async def _loop(self, stop: asyncio.Event) -> None:
        assert self.consumer is not None
        while not stop.is_set():
            await self._collect(stop)
            if stop.is_set():
                break  # what is buffered is flushed by _drain
            # Build the next batch's documents while earlier batches are still being written.
            batch = self._cut_batch() if self._pending else None
            self._take_written()
            if batch is not None:
                await self._wait_for_slot()
                self._start_write(batch)  # dropped there if a revocation came meanwhile
            elif not self._inflight:
                await self._commit_positions()

    async def _drain(self) -> None:
        """After SIGTERM: finish the batches in flight, flush what is buffered, commit; bounded in time."""
        while self._pending and self._give_up_at is not None and time.monotonic() < self._give_up_at:
            await self._wait_for_slot()
            self._start_write(self._cut_batch())
        while self._inflight:
            await asyncio.wait({self._inflight[0]})
            self._take_written()
        await self._flush_commits()
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
            self._take_written()  # hands finished writes to the committer while the next batch fills
            running = self._writing()
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
        self._inflight.append(asyncio.create_task(self._write_batch(batch), name="sink-write"))

    def _writing(self) -> int:
        return sum(1 for t in self._inflight if not t.done())

    def _slots_full(self) -> bool:
        """No new write may start: ``max_inflight_batches`` are being written, or as many written
        batches already wait behind an earlier one still being written (bounds the memory held)."""
        n = self.settings.max_inflight_batches
        return self._writing() >= n or len(self._inflight) >= 2 * n

    async def _wait_for_slot(self) -> None:
        waited = time.monotonic()
        self._take_written()
        while self._slots_full():
            await asyncio.wait([t for t in self._inflight if not t.done()], return_when=asyncio.FIRST_COMPLETED)
            self._take_written()
        self.metrics.stage_seconds.labels("slot_wait").inc(time.monotonic() - waited)

    def _take_written(self, *, raise_errors: bool = True) -> None:
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
            self._inflight.popleft()
        self._kick_commit()

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
        offsets, batches = self._acked, self._acked_batches
        self._acked, self._acked_batches = {}, []
        self._commit_task = asyncio.create_task(self._commit_written(offsets, batches), name="sink-commit")

    async def _commit_written(self, offsets: dict[TopicPartition, int], batches: list[tuple[float, int]]) -> None:
        committing = time.monotonic()
        await self._commit(offsets)
        done = time.monotonic()
        self.metrics.stage_seconds.labels("commit").inc(done - committing)
        for started, records in batches:
            self.metrics.batch_size.observe(records)
            self.metrics.batch_latency.observe(done - started)

    async def _flush_commits(self) -> None:
        """Waits until every acknowledged batch's offsets were committed (or the commit gave up)."""
        while self._commit_task is not None or self._acked:
            if self._commit_task is not None:
                await asyncio.wait({self._commit_task})
            self._kick_commit()

    # ------------------------------------------------------------------ one batch

    async def _write_batch(self, batch: Batch) -> Batch:
        """Dead letters and documents acknowledged; the committer commits the offsets later."""
        batch.started = time.monotonic()
        await asyncio.gather(self._send_dead_letters(batch.dead_letters), self._write_documents(batch))
        return batch

    async def _write_documents(self, batch: Batch) -> None:
        """Inserts every document of the batch (:func:`sink.writes.write_documents`); returns only
        once each is inserted, a duplicate, or dead-lettered (refused: ``sink.write``/``sink.encode``;
        same ``_id`` with different content: ``sink.conflict``). Outages are retried with bounded
        backoff for as long as they last (not ready meanwhile); at shutdown the batch is abandoned.

        Each attempt is bounded by ``write_attempt_timeout_s`` (less once stopping); an attempt that
        runs out of time is retried with half as many documents (down to one), so a MongoDB too
        slow for a whole batch within the bound (e.g. FerretDB's one-by-one path for duplicates,
        under load) still makes progress instead of timing out on the same batch forever."""
        assert self.writer is not None
        self.writer.attempt_timeout = self._attempt_timeout
        records = batch.doc_records

        async def on_unavailable(exc: Exception) -> None:
            self._check_give_up(batch)
            self.metrics.write_retries.labels("unavailable").inc()
            self.state.set_not_ready(f"mongodb: {exc}"[:300])
            await self._sleep_backoff()

        self._check_give_up(batch)
        inserting = time.monotonic()
        try:
            result = await write_documents(
                self.writer, batch.docs, max_attempts=self.settings.document_write_attempts, on_unavailable=on_unavailable
            )
        finally:
            self.metrics.stage_seconds.labels("insert").inc(time.monotonic() - inserting)
        self.metrics.written.inc(len(result.inserted))
        self.metrics.duplicates.inc(len(result.duplicates))
        self.metrics.conflicting_duplicates.inc(len(result.conflicts))
        dead = [DeadLetter(records[i], stage, error_class, message) for i, (stage, error_class, message) in sorted(result.refused.items())]
        dead += [DeadLetter(records[i], STAGE_CONFLICT, CONFLICT_ERROR_CLASS, message) for i, message in sorted(result.conflicts.items())]
        if result.refused:
            log.warning("mongodb refused %d document(s), dead-lettering: %s", len(result.refused), dead[0].message[:200])
        if result.conflicts:
            first = next(iter(result.conflicts.values()))
            log.warning("%d conflicting duplicate(s), dead-lettering: %s", len(result.conflicts), first[:200])
        if dead:
            await self._send_dead_letters(dead)
        self._backoff.reset()
        self.state.set_ready()

    async def _send_dead_letters(self, dead: list[DeadLetter]) -> None:
        """Produces each dead letter (``acks=all``) and waits for every acknowledgement."""
        if not dead:
            return
        assert self.producer is not None
        todo = dead
        while todo:
            self._check_give_up(None)
            futures = []
            for d in todo:
                futures.append(await self.producer.send(self.settings.dlq_topic, **self._dead_letter_record(d)))
            results = await asyncio.gather(*futures, return_exceptions=True)
            failed = []
            for d, sent in zip(todo, results, strict=True):
                res = sent
                if isinstance(res, MessageSizeTooLargeError) and d.record.value and len(d.record.value) > DLQ_MAX_VALUE_BYTES:
                    res = await self._send_truncated(d)
                if isinstance(res, BaseException):
                    failed.append(d)
                else:
                    self.metrics.dead_lettered.labels(d.stage).inc()
            if failed:
                self.state.set_not_ready(f"dead-letter topic: {results[0]!r}"[:300])
                self.metrics.write_retries.labels("dead_letter").inc()
                await self._sleep_backoff()
            todo = failed

    def _dead_letter_record(self, d: DeadLetter, value: bytes | None = None, extra: tuple[tuple[str, bytes], ...] = ()) -> dict[str, Any]:
        r = d.record
        code = STORE_CODE_RE.match(d.message) if d.stage == STAGE_WRITE else None
        if code is not None:  # the store's own error code, machine-readable beside the message
            extra = (*extra, (HEADER_STORE_CODE, code.group(1).encode()))
        headers = dead_letter_headers(
            source_topic=r.topic,
            source_partition=r.partition,
            source_offset=r.offset,
            stage=d.stage,
            error_class=d.error_class,
            error_message=d.message,
            original_headers=[(k, bytes(v)) for k, v in r.headers],
        )
        return {"key": r.key, "value": r.value if value is None else value, "headers": [*headers, *extra]}

    async def _send_truncated(self, d: DeadLetter) -> Any:
        """The brokers refused the original bytes as too large: keep the head, say so in a header."""
        assert self.producer is not None and d.record.value is not None
        extra = (("dlq.value.truncated.from", str(len(d.record.value)).encode()),)
        try:
            return await self.producer.send_and_wait(
                self.settings.dlq_topic, **self._dead_letter_record(d, d.record.value[:DLQ_MAX_VALUE_BYTES], extra)
            )
        except KafkaError as exc:
            return exc

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commits ``offsets`` for the partitions still assigned; a lost partition is skipped (its
        next owner rewrites from the last commit, idempotently). Retried while the broker is away."""
        assert self.consumer is not None
        backoff = Backoff(self.settings.backoff_initial_s, self.settings.backoff_max_s)
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
                if not getattr(exc, "retriable", False) or (self._give_up_at is not None and time.monotonic() > self._give_up_at):
                    log.warning("commit failed (%s): the batch will be redelivered and deduplicated", exc)
                    return
                await asyncio.sleep(backoff.next_delay())
                continue
            for tp, o in todo.items():
                self._committed[tp] = o.offset
            self.metrics.commits.inc()
            return

    async def _commit_positions(self) -> None:
        """When idle (nothing buffered, nothing in flight) commits each partition's position.

        The position can be past the last record's offset + 1: the bridge writes in transactions
        and each ends with a commit marker, which occupies an offset but is never returned. Without
        this, ``/lag`` would never reach 0. Safe because every record below the position was
        returned to us and, nothing being buffered or in flight, is written.
        """
        assert self.consumer is not None
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
        if positions and not self._pending and not self._inflight and not self._acked and self._commit_task is None:
            await self._commit(positions)

    # ------------------------------------------------------------------ retries and deadlines

    def _remaining(self) -> float | None:
        return None if self._give_up_at is None else max(0.05, self._give_up_at - time.monotonic())

    def _attempt_timeout(self) -> float:
        """One insert_many attempt: at most ``write_attempt_timeout_s``, less once stopping."""
        remaining = self._remaining()
        limit = self.settings.write_attempt_timeout_s
        return limit if remaining is None else min(limit, remaining)

    def _check_give_up(self, batch: Batch | None) -> None:
        if self._give_up_at is not None and time.monotonic() >= self._give_up_at:
            self.metrics.abandoned.inc()
            size = f"{batch.records} records" if batch else "dead letters"
            raise BatchAbandonedError(f"stopping: batch of {size} abandoned uncommitted (MongoDB or Kafka did not answer in time)")

    async def _sleep_backoff(self) -> None:
        delay = self._backoff.next_delay()
        remaining = self._remaining()
        await asyncio.sleep(delay if remaining is None else min(delay, remaining))

    # ------------------------------------------------------------------ rebalance

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        """Gives the batch in flight a bounded time to commit, then drops what is not written."""
        self._epoch += 1
        dropped = len(self._pending)
        self._pending, self._pending_bytes = [], 0
        self.metrics.buffered.set(0)
        deadline = time.monotonic() + self.settings.revoke_flush_timeout_s
        tasks = [t for t in self._inflight if not t.done()]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=self.settings.revoke_flush_timeout_s)
            if late:
                log.warning(
                    "revoked; %d batch(es) still being written after %.1fs: abandoned uncommitted",
                    len(late),
                    self.settings.revoke_flush_timeout_s,
                )
                for task in late:
                    task.cancel()
                self.metrics.abandoned.inc(len(late))
                await asyncio.wait(late)  # cancelled tasks finish at once
        # Commit what was written, while the partitions are still ours.
        self._take_written(raise_errors=False)
        try:
            await asyncio.wait_for(self._flush_commits(), max(0.1, deadline - time.monotonic()))
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
        self._acked, self._acked_batches = {}, []
        self._committed.clear()
        self._lost_batch = True  # until the new assignment resets positions to the committed offsets
        self.metrics.assigned.set(0)
        log.info("partitions revoked: %s (dropped %d buffered records, they will be read again)", _names(revoked), dropped)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self._lost_batch = False
        self.metrics.assigned.set(len(assigned))
        log.info("partitions assigned: %s", _names(assigned))

    # ------------------------------------------------------------------ lag

    async def lag(self) -> dict[str, Any]:
        """Per partition of the topic: the group's committed offset vs the end (last stable) offset."""
        if self._lag_consumer is None or self._admin is None:
            raise RuntimeError("not connected to Kafka yet")
        topic = self.settings.topic
        partitions = self._lag_consumer.partitions_for_topic(topic)
        if not partitions:
            # topics() returns fresh metadata without updating the client's cache: refresh it, so
            # a topic created after the sink started is seen now, not after metadata_max_age_ms.
            await self._lag_consumer._client.force_metadata_update()
            partitions = self._lag_consumer.partitions_for_topic(topic) or set()
        if not partitions:
            # Not "caught up": nothing is known yet (the topic may not exist). /lag answers 503.
            raise RuntimeError(f"no partitions known for topic {topic!r} yet")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        end = await self._lag_consumer.end_offsets(tps)
        begin = await self._lag_consumer.beginning_offsets(tps)
        committed = await self._admin.list_consumer_group_offsets(self.settings.group_id, partitions=tps)
        rows, total = [], 0
        for tp in tps:
            meta = committed.get(tp)
            c = meta.offset if meta is not None and meta.offset >= 0 else None
            lag = max(0, end[tp] - (c if c is not None else begin[tp]))
            total += lag
            rows.append({"partition": tp.partition, "committed": c, "end": end[tp], "lag": lag})
            self.metrics.lag.labels(str(tp.partition)).set(lag)
        self.metrics.lag_total.set(total)
        return {"topic": topic, "group": self.settings.group_id, "partitions": rows, "total_lag": total, "caught_up": total == 0}


async def _sleep_or_stop(stop: asyncio.Event, delay: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), delay)


def _names(tps: Iterable[TopicPartition]) -> str:
    return ",".join(f"{tp.topic}:{tp.partition}" for tp in sorted(tps)) or "-"
