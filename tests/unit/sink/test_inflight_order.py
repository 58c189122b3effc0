"""Concurrent batch writes commit strictly in batch order (pure unit test: fake writer and consumer).

With ``max_inflight_batches`` > 1 a later batch's ``insert_many`` can be acknowledged before an
earlier one's. Its offsets must still be committed only after the earlier batch was acknowledged,
and never when the earlier batch failed or was cancelled. Commits run beside the writes: a slow
commit holds no write slot, and the batches acknowledged meanwhile go into the next commit. The
restamp of every attempt is checked here too.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata
from sink.app import Batch, Sink
from sink.mongo import InsertOutcome, MongoUnavailableError
from sink.settings import SinkSettings

from shared.service import ServiceState

TOPIC = "t"


class FakeWriter:
    """``insert`` of a batch (recognized by its first ``_id``) waits until the test releases it."""

    def __init__(self) -> None:
        self.release: dict[str, asyncio.Event] = {}
        self.fail_once: set[str] = set()
        self.attempts: list[tuple[str, str, str]] = []  # (first _id, ingested_at, ingest_hour)
        self.log: list[str] = []

    async def insert(self, docs: list[dict[str, Any]]) -> InsertOutcome:
        first = docs[0]["_id"]
        self.attempts.append((first, docs[0]["ingested_at"], docs[0]["ingest_hour"]))
        await self.release.setdefault(first, asyncio.Event()).wait()
        if first in self.fail_once:
            self.fail_once.discard(first)
            self.release[first].clear()
            raise MongoUnavailableError("connection reset")
        self.log.append(f"acked {first}")
        return InsertOutcome(inserted=len(docs))


class FakeConsumer:
    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.commits: list[dict[TopicPartition, int]] = []
        self.hold: asyncio.Event | None = None  # when set by a test, a commit waits for it

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(TOPIC, p) for p in range(3)}

    async def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        committed = {tp: o.offset for tp, o in offsets.items()}
        text = ",".join(f"{tp.partition}:{o}" for tp, o in sorted(committed.items()))
        if self.hold is not None:
            self.log.append("commit started " + text)
            await self.hold.wait()
        self.commits.append(committed)
        self.log.append("commit " + text)


def batch(first_id: str, offsets: dict[int, int]) -> Batch:
    docs = [{"_id": first_id, "ingested_at": "2000-01-01T00:00:00.000Z", "ingest_hour": "2000-01-01T00", "part": 0}]
    return Batch(epoch=0, records=1, docs=docs, doc_records=[None], offsets={TopicPartition(TOPIC, p): o for p, o in offsets.items()})  # type: ignore[list-item]


def make_sink(inflight: int = 2) -> tuple[Sink, FakeWriter, FakeConsumer]:
    sink = Sink(SinkSettings(max_inflight_batches=inflight, backoff_initial_s=0.01, backoff_max_s=0.01), ServiceState("sink"))
    writer = FakeWriter()
    consumer = FakeConsumer(writer.log)
    sink.writer, sink.consumer = writer, consumer  # type: ignore[assignment]
    return sink, writer, consumer


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def finish(sink: Sink) -> None:
    """What the loop does at the end: every write taken in order, then every commit done."""
    while sink._inflight:
        await asyncio.wait({sink._inflight[0]})
        sink._take_written()
    await sink._flush_commits()


async def test_a_later_batch_acknowledged_first_commits_only_after_the_earlier_one() -> None:
    sink, writer, consumer = make_sink()
    sink._start_write(batch("a", {0: 10, 1: 5}))
    sink._start_write(batch("b", {0: 20, 2: 7}))
    await settle()
    assert [a[0] for a in writer.attempts] == ["a", "b"]  # both writes in flight at once

    writer.release.setdefault("b", asyncio.Event()).set()
    await settle()
    assert writer.log == ["acked b"]  # acknowledged, but not committed: "a" is not acknowledged yet
    assert consumer.commits == []

    sink._take_written()
    await settle()
    assert consumer.commits == []  # still nothing: the head of the queue is not written

    writer.release["a"].set()
    await finish(sink)
    # one commit covers both (offsets per partition are positions: the larger one wins)
    assert writer.log == ["acked b", "acked a", "commit 0:20,1:5,2:7"]


async def test_a_batch_after_one_that_was_cancelled_is_not_committed() -> None:
    sink, writer, consumer = make_sink()
    sink._start_write(batch("a", {0: 10}))
    sink._start_write(batch("b", {0: 20}))
    await settle()
    writer.release.setdefault("b", asyncio.Event()).set()
    await settle()
    sink._inflight[0].cancel()  # e.g. revoked while "a" was still being written
    await finish(sink)  # "b": written, then given up uncommitted
    assert writer.log == ["acked b"] and consumer.commits == []
    assert sink._lost_batch  # positions are ahead of what is written: no idle commit of them
    assert not sink._inflight and not sink._acked


async def test_a_batch_given_up_at_shutdown_stops_later_commits_and_is_not_raised() -> None:
    sink, writer, consumer = make_sink()
    sink._start_write(batch("a", {0: 10}))
    sink._start_write(batch("b", {0: 20}))
    await settle()
    writer.release.setdefault("b", asyncio.Event()).set()
    sink._give_up_at = 0.0  # SIGTERM long ago: "a"'s retry loop gives up
    writer.fail_once.add("a")
    writer.release.setdefault("a", asyncio.Event()).set()
    await finish(sink)
    assert sink._lost_batch and consumer.commits == []
    assert sink.metrics.abandoned._value.get() == 1


async def test_a_slow_commit_holds_no_write_slot_and_the_next_commit_covers_what_was_written_meanwhile() -> None:
    sink, writer, consumer = make_sink(inflight=1)
    consumer.hold = asyncio.Event()
    sink._start_write(batch("a", {0: 10}))
    writer.release.setdefault("a", asyncio.Event()).set()
    await asyncio.wait({sink._inflight[0]})
    sink._take_written()
    await settle()
    assert writer.log == ["acked a", "commit started 0:10"]
    assert not sink._slots_full()  # the commit of "a" is in flight, the write slot is free

    for first, offsets in (("b", {0: 20}), ("c", {0: 30, 1: 4})):
        await sink._wait_for_slot()
        sink._start_write(batch(first, offsets))
        writer.release.setdefault(first, asyncio.Event()).set()
        await asyncio.wait({sink._inflight[0]})
        sink._take_written()
    assert writer.log == ["acked a", "commit started 0:10", "acked b", "acked c"]

    consumer.hold.set()
    await finish(sink)
    assert consumer.commits == [{TopicPartition(TOPIC, 0): 10}, {TopicPartition(TOPIC, 0): 30, TopicPartition(TOPIC, 1): 4}]
    assert sink.metrics.batch_size._sum.get() == 3  # every batch observed once, when its offsets were committed


async def test_an_unexpected_write_error_is_raised_by_the_loop() -> None:
    sink, writer, _ = make_sink()

    async def broken(docs: list[dict[str, Any]]) -> InsertOutcome:
        raise RuntimeError("bug in the writer")

    writer.insert = broken  # type: ignore[method-assign]
    sink._start_write(batch("a", {0: 10}))
    await asyncio.wait({sink._inflight[0]})
    try:
        sink._take_written()
    except RuntimeError as exc:
        assert str(exc) == "bug in the writer"
    else:
        raise AssertionError("the write's error was swallowed")


async def test_every_write_attempt_restamps_ingested_at_and_ingest_hour() -> None:
    sink, writer, consumer = make_sink(inflight=1)
    writer.fail_once.add("a")
    sink._start_write(batch("a", {0: 10}))
    await asyncio.sleep(0.05)
    writer.release["a"].set()  # first attempt fails (connection reset) 50 ms after it started, the retry succeeds
    await asyncio.sleep(0.2)
    writer.release["a"].set()
    await finish(sink)
    assert len(writer.attempts) == 2
    (_, at1, hour1), (_, at2, hour2) = writer.attempts
    assert at1 != "2000-01-01T00:00:00.000Z" and at1 < at2  # the build-time stamp is never written
    assert (hour1, hour2) == (at1[:13], at2[:13])
    assert consumer.commits == [{TopicPartition(TOPIC, 0): 10}]


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
    b.docs = [{"_id": f"d{i}", "ingested_at": "", "ingest_hour": "", "part": 0} for i in range(5)]
    b.doc_records = [None] * 5  # type: ignore[list-item]
    sink._start_write(b)
    await finish(sink)
    # 5 times out → 3 per attempt: d0-d2 times out → 2 per attempt: d0-d1, then d2 (the rest of
    # that part), then d3-d4 (sink.writes keeps each timed-out part's documents together).
    assert writer.sizes == [5, 3, 2, 1, 2]
    assert writer.inserted == ["d0", "d1", "d2", "d3", "d4"]
    assert consumer.commits == [{TopicPartition(TOPIC, 0): 5}]
    assert sink.metrics.write_retries.labels("unavailable")._value.get() == 2
