"""Concurrent batch writes commit strictly in batch order (pure unit test: fake writer and consumer).

With ``max_inflight_batches`` > 1 a later batch's ``insert_many`` can be acknowledged before an
earlier one's. Its offsets must still be committed only after the earlier batch was acknowledged
and committed, and never when the earlier batch failed or was cancelled. The restamp of every
attempt is checked here too.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata
from sink.app import Batch, BatchAbandonedError, Sink
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

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(TOPIC, p) for p in range(3)}

    async def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        committed = {tp: o.offset for tp, o in offsets.items()}
        self.commits.append(committed)
        self.log.append("commit " + ",".join(f"{tp.partition}:{o}" for tp, o in sorted(committed.items())))


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

    writer.release["a"].set()
    while sink._inflight:
        await sink._await_oldest()
    assert writer.log == ["acked b", "acked a", "commit 0:10,1:5", "commit 0:20,2:7"]


async def test_a_batch_after_one_that_was_cancelled_is_not_committed() -> None:
    sink, writer, consumer = make_sink()
    sink._start_write(batch("a", {0: 10}))
    sink._start_write(batch("b", {0: 20}))
    await settle()
    writer.release.setdefault("b", asyncio.Event()).set()
    await settle()
    sink._inflight[0].cancel()  # e.g. revoked while "a" was still being written
    await sink._await_oldest()
    task = sink._inflight[0]
    await sink._await_oldest()  # "b": written, then given up uncommitted (logged, not raised)
    assert isinstance(task.exception(), BatchAbandonedError)
    assert writer.log == ["acked b"] and consumer.commits == []
    assert sink._lost_batch  # positions are ahead of what is written: no idle commit of them


async def test_every_write_attempt_restamps_ingested_at_and_ingest_hour() -> None:
    sink, writer, consumer = make_sink(inflight=1)
    writer.fail_once.add("a")
    sink._start_write(batch("a", {0: 10}))
    await asyncio.sleep(0.05)
    writer.release["a"].set()  # first attempt fails (connection reset) 50 ms after it started, the retry succeeds
    await asyncio.sleep(0.2)
    writer.release["a"].set()
    while sink._inflight:
        await sink._await_oldest()
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
    await sink._await_oldest()
    assert writer.sizes == [5, 3, 2, 2, 1]
    assert writer.inserted == ["d0", "d1", "d2", "d3", "d4"]
    assert consumer.commits == [{TopicPartition(TOPIC, 0): 5}]
    assert sink.metrics.write_retries.labels("unavailable")._value.get() == 2
