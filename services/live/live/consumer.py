"""faust-streaming's aiokafka consumer as the live app runs it: read_committed, batch delivery of
the counted topic, and two fixes to faust's offset bookkeeping. Each one names what it works around
(faust-streaming 0.15.3, aiokafka 0.12.0; see services/live/README.md, "faust patches").

1. **read_committed with at_least_once.** faust builds its worker consumer with
   ``isolation_level="read_committed"`` only when ``processing_guarantee`` is ``exactly_once``
   (``AIOKafkaConsumerThread._create_worker_consumer``; no setting for it upstream). We run
   ``at_least_once`` (exactly_once loses and doubles counts after kill -9: faust-streaming issues
   #517, #323) and set the isolation level on the consumer faust builds.
2. **Batch delivery.** faust hands every record one by one to the conductor (a ``wait_first`` of
   four tasks per record, an Event, a queue put, a per-event ack and sensors): measured, that
   machinery, not the counting, took the time (bench/results/HISTORY.md). For the counted topic
   :meth:`_ReadCommittedConsumer._drain_messages` gives each ``getmany`` result to one batch
   handler, which counts it and returns once the brokers acknowledged its changelog records;
   only then are its offsets acked (faust's own bookkeeping: ``_acked``, gaps, the commit loop).
   Every other topic (the tables' changelogs, read by recovery and standbys) still goes through
   faust's per-record path.
3. **Resume after seek, not before.** At the end of a rebalance faust's table recovery
   (``Recovery.on_recovery_completed``) resumes the source partitions and *then* awaits
   ``perform_seek()``. Records prefetched for a newly assigned partition are then delivered and
   acked before faust knows the partition's committed offset; ``perform_seek`` sets
   ``_committed_offset`` / ``_read_offset`` under them and the same offsets come again: acked
   offsets above the committed one with a hole (``_new_offset`` never commits across it: lag
   frozen) or the same offset acked twice. Upstream fixed the order for apps without tables
   (PR #217, issue #216), not in ``on_recovery_completed``; related open reports: #221
   (prefetched events after a rebalance), #502 (processed twice after rebalancing). Here, during
   a rebalance, source partitions stay paused until ``perform_seek`` returned.
4. **No stale offsets in the acked list.** faust 0.15's ``ack`` refuses duplicates (its
   ``_acked_index``) and offsets below the committed one, but ``_new_offset`` drops a committed
   run from that index before the commit round trip updates ``_committed_offset``: an ack of the
   same offset in between is taken again. Dropped before computing the next offset to commit.
6. **The stall detector sees the batches.** faust's ``verify_event_path`` logs "Stream has not
   started processing" at ERROR, every few seconds per partition, for a partition whose records
   were fetched while its monitor's ``stream_inbound_time`` was never set: the per-record path
   sets it (``Monitor.on_stream_event_in``), the batch path of patch 2 did not (208 false errors
   in the first 20 minutes of an hour soak). A counted batch stamps its partitions.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from time import monotonic
from typing import Any, ClassVar, cast

import aiokafka
import faust
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from faust.types.transports import ConsumerT, TransportT
from faust.types.tuples import ack_lock
from mode.utils.futures import notify

# One getmany result of the counted topic: [(partition, its new records in offset order)].
RecordBatch = list[tuple[TP, list[Any]]]
BatchHandler = Callable[[RecordBatch], Awaitable[None]]


class _ReadCommittedConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # Read by AIOKafkaConsumer.start() when it builds its fetcher (patch 1).
        consumer._isolation_level = "read_committed"
        return consumer


class _ReadCommittedConsumer(faust_aiokafka.Consumer):
    """faust's aiokafka consumer with the patches of the module docstring.

    ``batch_topic`` / ``batch_handler``: set by :class:`live.streams.LiveCounters`; unset, the
    consumer is faust's (every record through the conductor).
    """

    _deferred_resume: set[TP]
    batch_topic: str | None = None
    batch_handler: BatchHandler | None = None

    def _new_consumer_thread(self) -> Any:
        return _ReadCommittedConsumerThread(self, loop=self.loop, beacon=self.beacon)

    # ---- patch 2: batch delivery of the counted topic

    async def _drain_messages(self, fetcher: Any) -> None:
        if self.batch_handler is None:
            await super()._drain_messages(fetcher)
            return
        consumer_should_stop, fetcher_should_stop = self._stopped.is_set, fetcher._stopped.is_set
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                self.diag.set_flag(CONSUMER_FETCHING)
                records, active = await self._wait_next_records(1.0)
                await self.sleep(0)
                if records is None or self.should_stop:
                    continue
                if not self.flow_active:  # what faust's getmany does when flow stopped under it
                    try:
                        await self.perform_seek()
                    except Exception as exc:  # faust logs and goes on, as here
                        self.log.warning(f"exception performing seek when flow not active {exc}")
                    continue
                await self._deliver(records, active)
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    async def _deliver(self, records: Mapping[TP, list[Any]], active: set[TP] | None) -> None:
        generation = self.app.consumer_generation_id
        batch: RecordBatch = []
        for tp, recs in records.items():
            if not self.flow_active or self.app.consumer_generation_id != generation:
                break  # as faust's getmany: a rebalance started, the rest is fetched again after the seek
            if active is not None and tp not in active and tp not in self._buffered_partitions:
                continue
            if tp.topic != self.batch_topic:
                for record in recs:
                    await self._deliver_one(tp, record)
                continue
            read = self._read_offset[tp]
            fresh = [r for r in recs if read is None or r.offset >= read]
            if not fresh:
                continue
            previous = read
            for record in fresh:  # offsets the broker skipped (transaction markers) count as acked
                if previous and record.offset - previous > 1:
                    await self._add_gap(tp, previous + 1, record.offset)
                previous = record.offset
            batch.append((tp, fresh))
        if not batch:
            return
        await cast(BatchHandler, self.batch_handler)(batch)  # counted, changelog acknowledged
        monitor = self.app.monitor
        if monitor is not None:  # patch 6: what faust's per-record path stamps for its stall detector
            counted_at = monotonic()
            for tp, _ in batch:
                monitor.stream_inbound_time[tp] = counted_at
        if self.app.consumer_generation_id != generation or not self.flow_active:
            return  # rebalanced meanwhile: the changelog holds the counts, redelivery is skipped by offset
        acked = 0
        with ack_lock:
            for tp, fresh in batch:
                self._read_offset[tp] = fresh[-1].offset
                committed, index, acked_tp = self._committed_offset[tp], self._acked_index[tp], self._acked[tp]
                for record in fresh:
                    offset = record.offset
                    if (committed is None or offset >= committed) and offset not in index:
                        index.add(offset)
                        acked_tp.append(offset)
                        acked += 1
            self._n_acked += acked
        notify(self._waiting_for_ack)
        if self._commit_every is not None and self._n_acked >= self._commit_every:
            self._n_acked = 0
            await self.commit()

    async def _deliver_one(self, tp: TP, record: Any) -> None:
        """faust's per-record path (its ``_drain_messages`` body) for any other topic."""
        offset, read = record.offset, self._read_offset[tp]
        if read is not None and offset < read:
            return
        if offset - (read or 0) > 1 and read and self.app.topics.acks_enabled_for(tp.topic):
            await self._add_gap(tp, read + 1, offset)
        await self.wait_first(self.callback(self._to_message(tp, record)), self.suspend_flow.wait())
        self._read_offset[tp] = offset

    # ---- patch 3: resume after seek

    def resume_partitions(self, tps: Iterable[TP]) -> None:
        tps = set(tps)
        if self.app.rebalancing:
            source = {tp for tp in tps if not self._is_changelog_tp(tp)}
            self._deferred().update(source)
            tps -= source
        super().resume_partitions(tps)

    async def perform_seek(self) -> None:
        await super().perform_seek()
        deferred, self._deferred_resume = self._deferred(), set()
        super().resume_partitions(deferred & self.assignment())

    def _deferred(self) -> set[TP]:
        if not hasattr(self, "_deferred_resume"):
            self._deferred_resume = set()
        return self._deferred_resume

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        self._deferred().difference_update(revoked)
        await super().on_partitions_revoked(revoked)

    # ---- patch 4: no stale offsets in the acked list

    def _new_offset(self, tp: TP) -> int | None:
        acked = self._acked[tp]
        if acked:
            committed = self._committed_offset[tp]
            acked[:] = sorted({offset for offset in acked if committed is None or offset >= committed})
        return super()._new_offset(tp)


class _ReadCommittedTransport(faust_aiokafka.Transport):
    Consumer: ClassVar[type[ConsumerT]] = _ReadCommittedConsumer


class LiveApp(faust.App):
    """A faust app whose worker consumer is :class:`_ReadCommittedConsumer`."""

    def _new_transport(self) -> TransportT:
        return _ReadCommittedTransport(self.conf.broker_consumer, self, loop=self.loop)
