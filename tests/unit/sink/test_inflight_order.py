"""Concurrent batch writes commit strictly in batch order (pure unit test: fake writes and consumer).

With ``max_inflight_batches`` > 1 a later batch's ``insert_many`` can be acknowledged before an
earlier one's. Its offsets must still be committed only after the earlier batch was acknowledged,
and never when the earlier batch failed or was cancelled. Commits run beside the writes: a slow
commit holds no write slot, and the batches acknowledged meanwhile go into the next commit.

The first part drives :class:`sink.commits.OffsetCommitter` through its public API with write
tasks the test finishes itself; the second drives the sink's own writes (fake writer) through
it: the restamp of every attempt, timeout halving, a write's unexpected error, a shutdown, the
visibility lease (no write attempt before its publication).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError, NotCoordinatorForGroupError, UnknownMemberIdError
from aiokafka.structs import OffsetAndMetadata
from prometheus_client import CollectorRegistry
from sink.app import Sink
from sink.batch import Batch, BatchAbandonedError
from sink.commits import OffsetCommitter
from sink.metrics import SinkMetrics
from sink.mongo import InsertOutcome, MongoUnavailableError
from sink.settings import SinkSettings

from shared.service import ServiceState
from shared.visibility import iso_ms

TOPIC = "t"


def tp(partition: int) -> TopicPartition:
    return TopicPartition(TOPIC, partition)


class FakeConsumer:
    def __init__(self, log: list[str], partitions: int = 3) -> None:
        self.log = log
        self.partitions = partitions
        self.commits: list[dict[TopicPartition, int]] = []
        self.hold: asyncio.Event | None = None  # when set by a test, a commit waits for it
        self.fail: list[Exception] = []  # raised by the next commits, one each
        self.positions: dict[TopicPartition, int] = {}

    def assignment(self) -> set[TopicPartition]:
        return {tp(p) for p in range(self.partitions)}

    async def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        committed = {tp: o.offset for tp, o in offsets.items()}
        text = ",".join(f"{tp.partition}:{o}" for tp, o in sorted(committed.items()))
        if self.fail:
            self.log.append("commit failed " + text)
            raise self.fail.pop(0)
        if self.hold is not None:
            self.log.append("commit started " + text)
            await self.hold.wait()
        self.commits.append(committed)
        self.log.append("commit " + text)

    async def position(self, partition: TopicPartition) -> int:
        return self.positions[partition]


def batch(first_id: str, offsets: dict[int, int], records: int = 1) -> Batch:
    stamp = {"ingested_at": "2000-01-01T00:00:00.000Z", "ingest_hour": "2000-01-01T00", "ingest_second": "2000-01-01T00:00:00"}
    docs = [{"_id": first_id, **stamp, "part": 0}]
    return Batch(epoch=0, records=records, docs=docs, doc_records=[None], offsets={tp(p): o for p, o in offsets.items()})  # type: ignore[list-item]


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


# ---------------------------------------------------------------------- the committer alone


class Writes:
    """Write tasks handed to the committer; each waits until the test releases it, then returns
    its batch (logged "acked <first id>") or raises the error the test gave it."""

    def __init__(self, committer: OffsetCommitter, log: list[str]) -> None:
        self.committer = committer
        self.log = log
        self.release: dict[str, asyncio.Event] = {}

    def start(self, first_id: str, offsets: dict[int, int], error: BaseException | None = None) -> asyncio.Task[Batch]:
        release = self.release[first_id] = asyncio.Event()

        async def write() -> Batch:
            await release.wait()
            if error is not None:
                raise error
            self.log.append(f"acked {first_id}")
            return batch(first_id, offsets)

        task = asyncio.create_task(write())
        self.committer.add(task)
        return task


def make_committer(
    give_up_at: float | None = None, partitions: int = 3
) -> tuple[OffsetCommitter, Writes, FakeConsumer, CollectorRegistry, list[str]]:
    log: list[str] = []
    consumer = FakeConsumer(log, partitions)
    registry = CollectorRegistry()
    committer = OffsetCommitter(
        consumer,  # type: ignore[arg-type]
        SinkMetrics(registry),
        backoff_initial_s=0.01,
        backoff_max_s=0.01,
        give_up_at=lambda: give_up_at,
    )
    return committer, Writes(committer, log), consumer, registry, log


async def test_a_later_batch_acknowledged_first_commits_only_after_the_earlier_one() -> None:
    committer, writes, consumer, _, log = make_committer()
    writes.start("a", {0: 10, 1: 5})
    writes.start("b", {0: 20, 2: 7})
    await settle()
    assert (committer.held(), committer.writing()) == (2, 2)  # both writes in flight at once

    writes.release["b"].set()
    await settle()
    assert log == ["acked b"]  # acknowledged, but not committed: "a" is not acknowledged yet
    assert consumer.commits == []

    committer.take_written()
    await settle()
    assert consumer.commits == []  # still nothing: the head of the queue is not written
    assert (committer.held(), committer.writing()) == (2, 1)

    writes.release["a"].set()
    await committer.finish()
    # one commit covers both (offsets per partition are positions: the larger one wins)
    assert log == ["acked b", "acked a", "commit 0:20,1:5,2:7"]
    assert committer.committed() == {tp(0): 20, tp(1): 5, tp(2): 7}
    assert committer.held() == 0 and not committer.lost


async def test_a_batch_after_one_that_was_cancelled_is_not_committed() -> None:
    committer, writes, consumer, _, log = make_committer()
    a = writes.start("a", {0: 10})
    writes.start("b", {0: 20})
    await settle()
    writes.release["b"].set()
    await settle()
    a.cancel()  # e.g. revoked while "a" was still being written
    await committer.finish()  # "b": written, then given up uncommitted
    assert log == ["acked b"] and consumer.commits == []
    assert committer.lost  # positions are ahead of what is written: no idle commit of them
    assert committer.held() == 0

    consumer.positions = {tp(p): 30 for p in range(3)}
    await committer.commit_positions(lambda: True)
    assert consumer.commits == []  # lost: positions are not committed either...
    committer.assigned()
    await committer.commit_positions(lambda: True)
    assert consumer.commits == [{tp(0): 30, tp(1): 30, tp(2): 30}]  # ...until the next assignment


async def test_a_batch_given_up_at_shutdown_stops_later_commits_and_is_not_raised() -> None:
    committer, writes, consumer, _, log = make_committer()
    writes.start("a", {0: 10}, error=BatchAbandonedError("stopping: batch of 1 records abandoned uncommitted"))
    writes.start("b", {0: 20})
    writes.release["b"].set()
    writes.release["a"].set()
    await committer.finish()
    assert log == ["acked b"]
    assert committer.lost and consumer.commits == []


async def test_an_unexpected_write_error_is_raised_by_take_written() -> None:
    committer, writes, consumer, _, _ = make_committer()
    writes.start("a", {0: 10}, error=RuntimeError("bug in the writer"))
    writes.release["a"].set()
    await settle()
    try:
        committer.take_written()
    except RuntimeError as exc:
        assert str(exc) == "bug in the writer"
    else:
        raise AssertionError("the write's error was swallowed")
    assert committer.held() == 0 and consumer.commits == []


async def test_a_slow_commit_is_beside_the_writes_and_the_next_commit_covers_what_was_written_meanwhile() -> None:
    committer, writes, consumer, registry, log = make_committer()
    consumer.hold = asyncio.Event()
    for first, offsets in (("a", {0: 10}), ("b", {0: 20}), ("c", {0: 30, 1: 4})):
        task = writes.start(first, offsets)
        writes.release[first].set()
        await asyncio.wait({task})
        committer.take_written()
        await settle()
        assert committer.writing() == 0 and committer.held() == 0  # the commit of "a" holds no write
    assert log == ["acked a", "commit started 0:10", "acked b", "acked c"]

    consumer.hold.set()
    await committer.finish()
    assert consumer.commits == [{tp(0): 10}, {tp(0): 30, tp(1): 4}]
    assert registry.get_sample_value("sink_batch_size_records_count") == 3  # each batch observed once, when committed
    assert registry.get_sample_value("sink_offset_commits_total") == 2


async def test_a_commit_is_retried_while_the_broker_answers_with_a_retriable_error() -> None:
    committer, writes, consumer, registry, log = make_committer()
    consumer.fail = [NotCoordinatorForGroupError(), NotCoordinatorForGroupError()]
    writes.start("a", {0: 10})
    writes.release["a"].set()
    await committer.finish()
    assert log == ["acked a", "commit failed 0:10", "commit failed 0:10", "commit 0:10"]
    assert consumer.commits == [{tp(0): 10}]
    assert registry.get_sample_value("sink_offset_commit_failures_total", {"reason": "kafka"}) == 2


async def test_a_commit_is_given_up_on_a_rebalance_or_a_fatal_error_and_a_later_one_covers_it() -> None:
    committer, writes, consumer, registry, log = make_committer()
    consumer.fail = [CommitFailedError("rebalanced"), UnknownMemberIdError()]
    for first, offsets in (("a", {0: 10}), ("b", {0: 20}), ("c", {0: 30})):
        writes.start(first, offsets)
        writes.release[first].set()
        await committer.finish()
    assert log == ["acked a", "commit failed 0:10", "acked b", "commit failed 0:20", "acked c", "commit 0:30"]
    assert committer.committed() == {tp(0): 30}
    assert registry.get_sample_value("sink_offset_commit_failures_total", {"reason": "rebalanced"}) == 1
    assert registry.get_sample_value("sink_offset_commit_failures_total", {"reason": "kafka"}) == 1


async def test_a_commit_covers_only_assigned_partitions_and_offsets_above_the_committed_ones() -> None:
    committer, writes, consumer, _, _ = make_committer(partitions=2)
    writes.start("a", {0: 10, 1: 5, 2: 7})  # partition 2 is no longer ours
    writes.release["a"].set()
    await committer.finish()
    writes.start("b", {0: 10, 1: 6})  # partition 0: nothing new
    writes.release["b"].set()
    await committer.finish()
    assert consumer.commits == [{tp(0): 10, tp(1): 5}, {tp(1): 6}]


async def test_revocation_commits_what_was_written_and_drops_the_rest_until_the_next_assignment() -> None:
    committer, writes, consumer, registry, log = make_committer()
    writes.start("a", {0: 10})
    late = writes.start("b", {0: 20})  # never released: still being written when revoked
    writes.release["a"].set()
    await settle()
    await committer.revoke(0.05)
    assert late.cancelled()
    assert log == ["acked a", "commit 0:10"]
    assert registry.get_sample_value("sink_abandoned_batches_total") == 1
    assert committer.held() == 0 and committer.lost and committer.committed() == {}

    writes.start("c", {0: 30})  # a batch of the old assignment, finished after the revocation
    writes.release["c"].set()
    await committer.finish()
    assert consumer.commits == [{tp(0): 10}]
    committer.assigned()
    writes.start("d", {0: 40})
    writes.release["d"].set()
    await committer.finish()
    assert consumer.commits == [{tp(0): 10}, {tp(0): 40}]


async def test_positions_are_committed_only_when_nothing_is_buffered_or_in_flight() -> None:
    committer, writes, consumer, _, _ = make_committer(partitions=1)
    consumer.positions = {tp(0): 12}  # past a transaction marker after the last record (offset 10)
    await committer.commit_positions(lambda: False)
    assert consumer.commits == []  # records buffered
    writes.start("a", {0: 11})
    await committer.commit_positions(lambda: True)
    assert consumer.commits == []  # a write in flight
    writes.release["a"].set()
    await committer.finish()
    await committer.commit_positions(lambda: True)
    await committer.commit_positions(lambda: True)  # nothing new: not committed again
    assert consumer.commits == [{tp(0): 11}, {tp(0): 12}]


async def test_close_cancels_the_writes_and_the_commit_in_flight() -> None:
    committer, writes, consumer, _, _ = make_committer()
    consumer.hold = asyncio.Event()
    writes.start("a", {0: 10})
    writes.release["a"].set()
    await settle()
    committer.take_written()
    b = writes.start("b", {0: 20})
    await settle()
    await committer.close()
    assert b.cancelled() and committer.held() == 0 and consumer.commits == []


# ---------------------------------------------------------------------- the sink's writes through it


class FakeWriter:
    """``insert`` of a batch (recognized by its first ``_id``) waits until the test releases it."""

    def __init__(self) -> None:
        self.release: dict[str, asyncio.Event] = {}
        self.fail_once: set[str] = set()
        self.attempts: list[tuple[str, str, str, str]] = []  # (first _id, ingested_at, ingest_hour, ingest_second)
        self.log: list[str] = []

    async def insert(self, docs: list[dict[str, Any]]) -> InsertOutcome:
        first = docs[0]["_id"]
        self.attempts.append((first, docs[0]["ingested_at"], docs[0]["ingest_hour"], docs[0]["ingest_second"]))
        await self.release.setdefault(first, asyncio.Event()).wait()
        if first in self.fail_once:
            self.fail_once.discard(first)
            self.release[first].clear()
            raise MongoUnavailableError("connection reset")
        self.log.append(f"acked {first}")
        return InsertOutcome(inserted=len(docs))


def make_sink(inflight: int = 2, published: bool = True) -> tuple[Sink, FakeWriter, FakeConsumer]:
    sink = Sink(SinkSettings(max_inflight_batches=inflight, backoff_initial_s=0.01, backoff_max_s=0.01), ServiceState("sink"))
    if published:  # what Sink._start's first publication of the visibility lease does
        sink.visibility.published(sink.visibility.now())
    writer = FakeWriter()
    consumer = FakeConsumer(writer.log)
    sink.writer, sink.consumer = writer, consumer  # type: ignore[assignment]
    # what Sink._start makes with its consumer
    sink.commits = OffsetCommitter(
        consumer,  # type: ignore[arg-type]
        sink.metrics,
        backoff_initial_s=0.01,
        backoff_max_s=0.01,
        give_up_at=lambda: sink._give_up_at,
    )
    return sink, writer, consumer


async def finish(sink: Sink) -> None:
    """What the loop does at the end: every write taken in order, then every commit done."""
    assert sink.commits is not None
    await sink.commits.finish()


async def test_a_later_sink_batch_acknowledged_first_commits_only_after_the_earlier_one() -> None:
    sink, writer, consumer = make_sink()
    sink._start_write(batch("a", {0: 10, 1: 5}))
    sink._start_write(batch("b", {0: 20, 2: 7}))
    await settle()
    assert [a[0] for a in writer.attempts] == ["a", "b"]  # both writes in flight at once

    writer.release.setdefault("b", asyncio.Event()).set()
    await settle()
    assert writer.log == ["acked b"] and consumer.commits == []

    writer.release["a"].set()
    await finish(sink)
    assert writer.log == ["acked b", "acked a", "commit 0:20,1:5,2:7"]


async def test_a_sink_batch_given_up_at_shutdown_stops_later_commits_and_is_not_raised() -> None:
    sink, writer, consumer = make_sink()
    sink._start_write(batch("a", {0: 10}))
    sink._start_write(batch("b", {0: 20}))
    await settle()
    writer.release.setdefault("b", asyncio.Event()).set()
    sink._give_up_at = 0.0  # SIGTERM long ago: "a"'s retry loop gives up
    writer.fail_once.add("a")
    writer.release.setdefault("a", asyncio.Event()).set()
    await finish(sink)
    assert sink.commits is not None and sink.commits.lost and consumer.commits == []
    assert sink.state.registry.get_sample_value("sink_abandoned_batches_total") == 1


async def test_a_slow_commit_holds_no_write_slot() -> None:
    sink, writer, consumer = make_sink(inflight=1)
    assert sink.commits is not None
    consumer.hold = asyncio.Event()
    sink._start_write(batch("a", {0: 10}))
    writer.release.setdefault("a", asyncio.Event()).set()
    await sink._wait_for_slot()
    await settle()
    assert writer.log == ["acked a", "commit started 0:10"]
    assert not sink._slots_full()  # the commit of "a" is in flight, the write slot is free

    for first, offsets in (("b", {0: 20}), ("c", {0: 30, 1: 4})):
        await sink._wait_for_slot()
        sink._start_write(batch(first, offsets))
        writer.release.setdefault(first, asyncio.Event()).set()
    await sink._wait_for_slot()
    assert writer.log == ["acked a", "commit started 0:10", "acked b", "acked c"]

    consumer.hold.set()
    await finish(sink)
    assert consumer.commits == [{tp(0): 10}, {tp(0): 30, tp(1): 4}]
    assert sink.state.registry.get_sample_value("sink_batch_size_records_sum") == 3  # each batch observed once, when committed


async def test_an_unexpected_write_error_is_raised_by_the_loop() -> None:
    sink, writer, _ = make_sink()

    async def broken(docs: list[dict[str, Any]]) -> InsertOutcome:
        raise RuntimeError("bug in the writer")

    writer.insert = broken  # type: ignore[method-assign]
    sink._start_write(batch("a", {0: 10}))
    try:
        await finish(sink)
    except RuntimeError as exc:
        assert str(exc) == "bug in the writer"
    else:
        raise AssertionError("the write's error was swallowed")


async def test_every_write_attempt_restamps_ingested_at_ingest_hour_and_ingest_second() -> None:
    sink, writer, consumer = make_sink(inflight=1)
    writer.fail_once.add("a")
    sink._start_write(batch("a", {0: 10}))
    await asyncio.sleep(0.05)
    writer.release["a"].set()  # first attempt fails (connection reset) 50 ms after it started, the retry succeeds
    await asyncio.sleep(0.2)
    writer.release["a"].set()
    await finish(sink)
    assert len(writer.attempts) == 2
    (_, at1, hour1, second1), (_, at2, hour2, second2) = writer.attempts
    assert at1 != "2000-01-01T00:00:00.000Z" and at1 < at2  # the build-time stamp is never written
    assert (hour1, hour2, second1, second2) == (at1[:13], at2[:13], at1[:19], at2[:19])
    assert consumer.commits == [{tp(0): 10}]


async def test_no_write_attempt_starts_before_the_visibility_lease_is_published() -> None:
    sink, writer, consumer = make_sink(inflight=1, published=False)
    writer.release.setdefault("a", asyncio.Event()).set()
    sink._start_write(batch("a", {0: 10}))
    await asyncio.sleep(0.1)  # backoff 10 ms: several refusals, each an outage, no attempt
    assert writer.attempts == [] and consumer.commits == []
    refusals = sink.state.registry.get_sample_value("sink_write_retries_total", {"reason": "visibility_lease"})
    assert refusals is not None and refusals >= 2
    assert not sink.state.ready and sink.state.not_ready_reason.startswith("mongodb: visibility lease not published yet")
    published = sink.visibility.now()
    sink.visibility.published(published)
    await finish(sink)
    assert [a[0] for a in writer.attempts] == ["a"] and writer.attempts[0][1] >= iso_ms(published)
    assert consumer.commits == [{tp(0): 10}]
    assert sink.visibility.quiet(sink.visibility.now())  # the acknowledged attempt holds nothing back


def test_a_failed_lease_publication_makes_the_sink_not_ready_until_a_publication_or_a_write_succeeds() -> None:
    sink, _, _ = make_sink()
    sink._serving = True  # what _start sets once it is connected
    sink.state.set_ready()
    sink._lease_failed(MongoUnavailableError("visibility lease e/h:1:0: ServerSelectionTimeoutError: down"))
    assert not sink.state.ready
    assert sink.state.not_ready_reason == "mongodb: lease publication failed: visibility lease e/h:1:0: ServerSelectionTimeoutError: down"
    sink._lease_published()
    assert sink.state.ready
    # A write's outage is not cleared by a publication (only a successful write clears it).
    sink.state.set_not_ready("mongodb: AutoReconnect: connection closed")
    sink._lease_published()
    assert not sink.state.ready and sink.state.not_ready_reason == "mongodb: AutoReconnect: connection closed"
    # Before _start finished (Kafka not connected yet) a publication makes nothing ready.
    sink._serving = False
    sink._lease_failed(MongoUnavailableError("down"))
    sink._lease_published()
    assert not sink.state.ready


class SlowForBigWriter:
    """Times out (as pymongo.timeout would) on any attempt of more than ``limit`` documents."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.sizes: list[int] = []
        self.inserted: list[str] = []

    async def insert(self, docs: list[dict[str, Any]]) -> InsertOutcome:
        self.sizes.append(len(docs))
        if len(docs) > self.limit:
            raise MongoUnavailableError("NetworkTimeout: timed out", timed_out=True)
        self.inserted.extend(d["_id"] for d in docs)
        return InsertOutcome(inserted=len(docs))


async def test_an_attempt_that_times_out_is_retried_with_half_the_documents_until_it_fits() -> None:
    sink, _, consumer = make_sink(inflight=1)
    writer = SlowForBigWriter(limit=2)
    sink.writer = writer  # type: ignore[assignment]
    b = batch("d0", {0: 5})
    b.docs = [{"_id": f"d{i}", "ingested_at": "", "ingest_hour": "", "ingest_second": "", "part": 0} for i in range(5)]
    b.doc_records = [None] * 5  # type: ignore[list-item]
    sink._start_write(b)
    await finish(sink)
    # 5 times out → 3 per attempt: d0-d2 times out → 2 per attempt: d0-d1, then d2 (the rest of
    # that part), then d3-d4 (sink.writes keeps each timed-out part's documents together).
    assert writer.sizes == [5, 3, 2, 1, 2]
    assert writer.inserted == ["d0", "d1", "d2", "d3", "d4"]
    assert consumer.commits == [{tp(0): 5}]
    assert sink.state.registry.get_sample_value("sink_write_retries_total", {"reason": "unavailable"}) == 2


async def test_close_reads_every_write_so_an_abandoned_batch_is_not_an_unretrieved_error() -> None:
    """The hour soak of 2026-12-07 logged "Task exception was never retrieved" (a
    ``BatchAbandonedError`` of a shutdown) at ERROR on each sink stop that gave up a batch."""
    import gc

    committer, _, _, _, _ = make_committer()
    reported: list[str] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: reported.append(ctx["message"]))

    async def abandoned() -> Batch:
        raise BatchAbandonedError("stopping: batch of 5000 abandoned uncommitted")

    write = asyncio.create_task(abandoned())
    committer.add(write)
    await asyncio.wait({write})
    await committer.close()
    del write
    gc.collect()
    await asyncio.sleep(0)
    assert [m for m in reported if "never retrieved" in m] == []
