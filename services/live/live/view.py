"""The read side: every replica's copy of both tables, all partitions, tailed from the changelogs.

Several ``python -m live`` processes with the same ``LIVE_APP_ID`` split the source partitions
between them (one faust consumer group); each process's faust tables hold only the partitions
it counts. The HTTP API must not depend on which replica a request lands on, so each replica
also runs this reader: a plain aiokafka consumer without a group, assigned every partition of
both changelog topics, applying each record (``[key, [start, end]]`` → ``[count, offset]``, the
JSON the counting agent writes, see :mod:`live.streams`) to an in-memory dict. The counting
agent writes a batch's changelog records and waits for the brokers' acknowledgement before its
source offsets can be committed, so the changelogs are the complete, durable state; this reader
is a faithful copy of it.

Read-your-writes: before answering, a read calls :meth:`ChangelogView.sync`, which asks the
brokers for the changelogs' end offsets and waits until the reader has applied everything up to
them. So any count whose source offsets were committed before the request started is in the
answer, on every replica. Concurrent reads share one sync.

Windows leave memory by the same wall-clock rule as faust's own table expiry (``expires`` =
``LIVE_RETENTION_S``): the changelogs' ``retention.ms`` drops them on disk, no tombstones.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from live.counting import WindowEntry, window_start
from shared.kafka import KafkaConnection, create_consumer

log = logging.getLogger(__name__)

WindowKey = tuple[str, tuple[float, float]]


class ChangelogView:
    """A continuously updated copy of the windowed tables, read from their changelog topics."""

    def __init__(
        self,
        conn: KafkaConnection,
        topics: dict[str, str],
        partitions: int,
        *,
        window_s: int,
        retention_s: int,
        sync_timeout_s: float = 10.0,
        prune_every_s: float = 30.0,
    ) -> None:
        """``topics``: table name → changelog topic; ``partitions``: of each changelog."""
        self.conn, self.partitions = conn, partitions
        self.window_s, self.retention_s = window_s, retention_s
        self.sync_timeout_s, self.prune_every_s = sync_timeout_s, prune_every_s
        self.tables: dict[str, dict[WindowKey, list[int]]] = {name: {} for name in topics}
        self._table_of_topic = {topic: name for name, topic in topics.items()}
        self._tps = [TopicPartition(topic, p) for topic in topics.values() for p in range(partitions)]
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._positions: dict[TopicPartition, int] = {}
        self._progress = asyncio.Condition()
        self._sync: asyncio.Task[None] | None = None
        self._caught_up_once = False
        self.records_applied = 0
        self.error: str | None = None

    async def start(self) -> None:
        consumer = create_consumer(
            self.conn, auto_offset_reset="earliest", fetch_max_wait_ms=100, max_partition_fetch_bytes=4 * 1024 * 1024
        )
        await consumer.start()
        consumer.assign(self._tps)
        await consumer.seek_to_beginning(*self._tps)
        self._consumer = consumer
        self._task = asyncio.create_task(self._run(), name="changelog-view")

    async def stop(self) -> None:
        for task in (self._task, self._sync):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    def raise_if_failed(self) -> None:
        """Re-raises what stopped the reader task (anything but a retried KafkaError)."""
        if self._task is not None and self._task.done() and not self._task.cancelled():
            self._task.result()
            raise RuntimeError("changelog view stopped")

    @property
    def caught_up(self) -> bool:
        """True once the reader has reached the end offsets it saw at some point after start."""
        return self._caught_up_once

    async def _run(self) -> None:
        assert self._consumer is not None
        consumer, next_prune = self._consumer, time.monotonic() + self.prune_every_s
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            except KafkaError as exc:  # a broker away: aiokafka reconnects; say so and retry
                self.error = f"{type(exc).__name__}: {exc}"
                log.warning("changelog view: %s", self.error)
                await asyncio.sleep(1.0)
                continue
            self.error = None
            for tp, records in batches.items():
                table = self.tables[self._table_of_topic[tp.topic]]
                for record in records:
                    self._apply(table, record.key, record.value)
                self.records_applied += len(records)
            async with self._progress:
                for tp in batches:
                    self._positions[tp] = await consumer.position(tp)
                for tp in self._tps:  # partitions without records move on too (control records, compaction)
                    if tp not in batches:
                        self._positions[tp] = await consumer.position(tp)
                self._progress.notify_all()
            if time.monotonic() >= next_prune:
                self.prune()
                next_prune = time.monotonic() + self.prune_every_s

    @staticmethod
    def _apply(table: dict[WindowKey, list[int]], raw_key: bytes | None, raw_value: bytes | None) -> None:
        if raw_key is None:
            return
        key, (start, end) = orjson.loads(raw_key)
        window_key = (key, (float(start), float(end)))
        if raw_value is None:
            table.pop(window_key, None)
        else:
            table[window_key] = orjson.loads(raw_value)

    def prune(self, now: float | None = None) -> int:
        """Drops windows faust would have expired (ends at or before the stale bound). Returns how many."""
        stale_before = window_start((now or time.time()) - self.retention_s, self.window_s)
        dropped = 0
        for table in self.tables.values():
            old = [k for k in table if k[1][1] <= stale_before]
            for k in old:
                del table[k]
            dropped += len(old)
        return dropped

    async def sync(self) -> None:
        """Returns once everything in the changelogs when called is applied (read-your-writes).

        Raises ``TimeoutError`` after ``sync_timeout_s``. Concurrent callers share one round.
        """
        if self._sync is None or self._sync.done():
            self._sync = asyncio.create_task(self._sync_once())
        await asyncio.shield(self._sync)

    async def _sync_once(self) -> None:
        assert self._consumer is not None
        ends: dict[TopicPartition, int] = await asyncio.wait_for(self._consumer.end_offsets(self._tps), self.sync_timeout_s)

        def reached() -> bool:
            return all(self._positions.get(tp, -1) >= end for tp, end in ends.items())

        async with self._progress:
            await asyncio.wait_for(self._progress.wait_for(reached), self.sync_timeout_s)
        self._caught_up_once = True

    def entries(self, table: str) -> Iterator[WindowEntry]:
        """A snapshot of one table's entries, in faust's shape: ((scoped key, (start, end)), value)."""
        data: dict[WindowKey, Any] = self.tables[table]
        return iter(list(data.items()))
