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

Start: from the snapshot in ``LIVE_DATA_DIR`` when there is a usable one (the tables and the
offsets they hold; written every ``snapshot_every_s`` and on stop), else from the log start; see
:mod:`live.recovery`. ``start_replayed`` / ``start_seconds``: records applied and seconds spent
until the view first caught up (also the gauges ``live_view_start_replayed_records`` and
``live_view_start_seconds``; ``live_view_snapshot_restarts`` is 1 when it started from a snapshot).

Windows leave memory by the same wall-clock rule as faust's own table expiry (``expires`` =
``LIVE_RETENTION_S``): the changelogs' ``retention.ms`` drops them on disk, no tombstones.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry, Gauge

from live.counting import WindowEntry, window_start
from live.recovery import group_by_partition, read_snapshot, snapshot_meta, write_snapshot
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
        snapshot_path: Path | None = None,
        snapshot_every_s: float = 30.0,
        registry: CollectorRegistry | None = None,
    ) -> None:
        """``topics``: table name → changelog topic; ``partitions``: of each changelog;
        ``snapshot_path``: where the snapshot is read on start and written (None: never)."""
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
        self.topics = dict(topics)
        self.snapshot_path, self.snapshot_every_s = snapshot_path, snapshot_every_s
        self._meta = snapshot_meta(self.topics, partitions, window_s)
        self.snapshot_loaded = False
        self.start_replayed: int | None = None
        self.start_seconds: float | None = None
        self._started_at = time.monotonic()
        self._version = 0  # bumped on every change of the tables (apply, prune, load)
        self._grouped: tuple[int, dict[str, dict[int, list[Any]]]] | None = None
        registry = registry or CollectorRegistry()
        self._g_loaded = Gauge(
            "live_view_snapshot_restarts", "Starts of this process whose changelog view loaded its snapshot (0 or 1)", registry=registry
        )
        self._g_replayed = Gauge(
            "live_view_start_replayed_records", "Changelog records the view applied before it first caught up", registry=registry
        )
        self._g_seconds = Gauge("live_view_start_seconds", "Seconds from the view's start to its first catch-up", registry=registry)
        self._g_snapshot_bytes = Gauge("live_view_snapshot_bytes", "Size of the last snapshot written", registry=registry)
        self._g_snapshot_seconds = Gauge("live_view_snapshot_write_seconds", "Time the last snapshot write took", registry=registry)

    async def start(self) -> None:
        consumer = create_consumer(
            self.conn, auto_offset_reset="earliest", fetch_max_wait_ms=100, max_partition_fetch_bytes=4 * 1024 * 1024
        )
        await consumer.start()
        consumer.assign(self._tps)
        self._started_at = time.monotonic()
        if not await self._restore(consumer):
            await consumer.seek_to_beginning(*self._tps)
        self._consumer = consumer
        self._task = asyncio.create_task(self._run(), name="changelog-view")

    async def _restore(self, consumer: AIOKafkaConsumer) -> bool:
        """Loads the snapshot and seeks every partition to its offset; False when there is no
        usable snapshot (the caller then reads from the log start)."""
        if self.snapshot_path is None:
            return False
        loaded = read_snapshot(self.snapshot_path, self._meta)
        if loaded is None:
            return False
        positions, tables = loaded
        starts = await consumer.beginning_offsets(self._tps)
        ends = await consumer.end_offsets(self._tps)
        for tp in self._tps:
            offset = positions.get((tp.topic, tp.partition))
            if offset is None or not starts[tp] <= offset <= ends[tp]:
                # Records after the snapshot were deleted (older than the retention), or the topic
                # is not the one the snapshot was taken of: the snapshot is not a prefix of it.
                log.warning(
                    "changelog view: snapshot not usable for %s (offset %s, log %s..%s): replaying the changelogs",
                    tp,
                    offset,
                    starts[tp],
                    ends[tp],
                )
                return False
        for name, table in tables.items():
            self.tables[name] = table
        for tp in self._tps:
            offset = positions[tp.topic, tp.partition]
            consumer.seek(tp, offset)
            self._positions[tp] = offset
        self._version += 1
        dropped = self.prune()
        self.snapshot_loaded = True
        self._g_loaded.set(1)
        log.info(
            "changelog view: snapshot loaded (%d entries, %d expired dropped); reading the changelogs from its offsets (%d records behind)",
            sum(len(t) for t in self.tables.values()),
            dropped,
            sum(ends[tp] - positions[tp.topic, tp.partition] for tp in self._tps),
        )
        return True

    def snapshot(self) -> int:
        """Writes the snapshot now (the tables and the offsets they hold). Returns its bytes."""
        assert self.snapshot_path is not None
        if len(self._positions) < len(self._tps):
            return 0  # not every partition read once yet: no consistent offsets to write
        t0 = time.monotonic()
        positions = {(tp.topic, tp.partition): offset for tp, offset in self._positions.items()}
        size = write_snapshot(self.snapshot_path, self._meta, positions, self.tables)
        self._g_snapshot_bytes.set(size)
        self._g_snapshot_seconds.set(time.monotonic() - t0)
        return size

    def seed(self, table: str, topic: str, partition: int) -> tuple[int, list[Any]] | None:
        """What :class:`live.recovery.SeededStore` seeds a faust table partition with: the view's
        position in that changelog partition and the entries of that partition at it. Synchronous:
        the position and the entries are of the same moment."""
        position = self._positions.get(TopicPartition(topic, partition))
        if position is None or self.topics.get(table) != topic:
            return None
        if self._grouped is None or self._grouped[0] != self._version:
            self._grouped = (self._version, {name: group_by_partition(t) for name, t in self.tables.items()})
        return position, list(self._grouped[1][table].get(partition, []))

    async def stop(self) -> None:
        for task in (self._task, self._sync):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self.snapshot_path is not None and self._caught_up_once and self._task is not None:
            try:
                self.snapshot()  # a clean stop leaves nothing to replay
            except OSError as exc:
                log.warning("changelog view: snapshot on stop failed: %s", exc)
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
        next_snapshot = time.monotonic() + self.snapshot_every_s
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
            if batches:
                self._version += 1
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
            if self.snapshot_path is not None and self._caught_up_once and time.monotonic() >= next_snapshot:
                try:
                    self.snapshot()
                except OSError as exc:  # a full disk costs the next start time, not the counts
                    log.warning("changelog view: snapshot failed: %s", exc)
                next_snapshot = time.monotonic() + self.snapshot_every_s

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
        if dropped:
            self._version += 1
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
        if not self._caught_up_once:
            self.start_replayed, self.start_seconds = self.records_applied, time.monotonic() - self._started_at
            self._g_replayed.set(self.start_replayed)
            self._g_seconds.set(self.start_seconds)
            log.info(
                "changelog view caught up: %d records replayed in %.1fs (%s)",
                self.start_replayed,
                self.start_seconds,
                "from the snapshot's offsets" if self.snapshot_loaded else "from the log start",
            )
        self._caught_up_once = True

    def entries(self, table: str) -> Iterator[WindowEntry]:
        """A snapshot of one table's entries, in faust's shape: ((scoped key, (start, end)), value)."""
        data: dict[WindowKey, Any] = self.tables[table]
        return iter(list(data.items()))
