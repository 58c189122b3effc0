"""Writing one batch, for :class:`sink.app.Sink` (a mixin: the worker's state stays in ``Sink``).

A batch's dead letters and documents are written concurrently; the documents' outcome is booked
in the batch's ledger tally (:mod:`sink.ledger`) and in the metrics; refused and conflicting
documents become dead letters. Outages are retried with the worker's backoff, not ready
meanwhile, until the shutdown deadline (:meth:`BatchWrites._check_give_up`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

from shared.backoff import Backoff
from shared.errors import is_retriable
from shared.service import ServiceState
from sink.batch import Batch, BatchAbandonedError, DeadLetter
from sink.deadletters import send_dead_letters
from sink.ledger import SinkLedger, tally_batch
from sink.metrics import SinkMetrics
from sink.mongo import MongoWriter
from sink.settings import SinkSettings
from sink.visibility import VisibilityLease
from sink.writes import CONFLICT_ERROR_CLASS, STAGE_CONFLICT, write_documents

# The worker's one logger, as before the split (its name is in every log line).
log = logging.getLogger("sink.app")


class BatchWrites:
    """The write path of the sink worker (see the module)."""

    settings: SinkSettings
    state: ServiceState
    metrics: SinkMetrics
    consumer: AIOKafkaConsumer | None
    producer: AIOKafkaProducer | None
    writer: MongoWriter | None
    ledger: SinkLedger | None
    _give_up_at: float | None
    _backoff: Backoff
    visibility: VisibilityLease

    # ------------------------------------------------------------------ one batch

    async def _write_batch(self, batch: Batch) -> Batch:
        """Dead letters and documents acknowledged; the committer commits the offsets later."""
        batch.started = time.monotonic()
        await self._load_ledger(batch)
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
            self.metrics.write_retries.labels(getattr(exc, "reason", "unavailable")).inc()
            self.state.set_not_ready(f"mongodb: {exc}"[:300])
            await self._sleep_backoff()

        self._check_give_up(batch)
        inserting = time.monotonic()
        try:
            result = await write_documents(
                self.writer,
                batch.docs,
                max_attempts=self.settings.document_write_attempts,
                on_unavailable=on_unavailable,
                attempts=self.visibility,  # stamps every attempt; refuses (an outage) while the lease lapsed
            )
        finally:
            self.metrics.stage_seconds.labels("insert").inc(time.monotonic() - inserting)
        if self.ledger is not None:
            tally_batch(self.ledger, batch, result)
        self.metrics.written.inc(len(result.inserted))
        self.metrics.duplicates.inc(len(result.duplicates))
        self.metrics.conflicting_duplicates.inc(len(result.conflicts))
        dead = [DeadLetter(records[i], stage, error_class, message) for i, (stage, error_class, message) in sorted(result.refused.items())]
        dead += [DeadLetter(records[i], STAGE_CONFLICT, CONFLICT_ERROR_CLASS, message) for i, message in sorted(result.conflicts.items())]
        if result.refused:
            log.warning(
                "mongodb refused %d document(s), dead-lettering: %s",
                len(result.refused),
                dead[0].message[:200],
                extra={
                    "stage": dead[0].stage,
                    "count": len(result.refused),
                    "offsets": _coordinates(records[i] for i in sorted(result.refused)),
                },
            )
        if result.conflicts:
            first = next(iter(result.conflicts.values()))
            log.warning(
                "%d conflicting duplicate(s), dead-lettering: %s",
                len(result.conflicts),
                first[:200],
                extra={
                    "stage": STAGE_CONFLICT,
                    "count": len(result.conflicts),
                    "offsets": _coordinates(records[i] for i in sorted(result.conflicts)),
                },
            )
        if dead:
            await self._send_dead_letters(dead)
        self._backoff.reset()
        self.state.set_ready()

    async def _group_committed(self, tp: TopicPartition) -> int | None:
        assert self.consumer is not None
        committed: int | None = await self.consumer.committed(tp)
        return committed

    async def _load_ledger(self, batch: Batch) -> None:
        """The ledger positions of the batch's partitions (once per assignment), retried while
        MongoDB is away: records below them were counted by an earlier delivery."""
        while self.ledger is not None:
            try:
                await self.ledger.load(batch.offsets)
                return
            except Exception as exc:
                if not is_retriable(exc):
                    raise
                self._check_give_up(batch)
                self.metrics.write_retries.labels("ledger").inc()
                self.state.set_not_ready(f"mongodb (ledger): {exc}"[:300])
                await self._sleep_backoff()

    async def _send_dead_letters(self, dead: list[DeadLetter]) -> None:
        """Produces each dead letter (``acks=all``) and waits for every acknowledgement
        (:func:`sink.deadletters.send_dead_letters`); failed rounds are retried with backoff, not
        ready meanwhile, until the shutdown deadline."""
        if not dead:
            return
        assert self.producer is not None
        self._check_give_up(None)

        async def on_failed(first: Any) -> None:
            self.state.set_not_ready(f"dead-letter topic: {first!r}"[:300])
            self.metrics.write_retries.labels("dead_letter").inc()
            await self._sleep_backoff()
            self._check_give_up(None)

        await send_dead_letters(
            self.producer,
            self.settings.dlq_topic,
            dead,
            on_sent=lambda d: self.metrics.dead_lettered.labels(d.stage).inc(),
            on_failed=on_failed,
        )

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


def _coordinates(records: Iterable[ConsumerRecord[bytes, bytes]], limit: int = 100) -> list[str]:
    """``topic:partition:offset`` of (at most ``limit``) records: the ``offsets`` log field."""
    return [f"{r.topic}:{r.partition}:{r.offset}" for _, r in zip(range(limit), records, strict=False)]
