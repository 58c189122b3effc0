"""The committer and the sink's ledger (pure unit test: fake consumer, fake ledger): a commit's
counts reach the ledger before its offsets, merged over the batches it covers in batch order; an
outage of the ledger is waited out, a refusal fails the worker and commits nothing."""

from __future__ import annotations

import asyncio

from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry
from pymongo.errors import AutoReconnect, OperationFailure
from sink.batch import Batch
from sink.commits import OffsetCommitter
from sink.metrics import SinkMetrics

from shared.hops import SinkTally
from tests.unit.sink.test_inflight_order import FakeConsumer, settle, tp


class FakeLedger:
    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.fail: list[Exception] = []
        self.calls: list[tuple[dict[TopicPartition, int], dict[tuple[str, int], dict[str, dict[str, int]]]]] = []

    async def advance(self, offsets: dict[TopicPartition, int], tally: SinkTally) -> None:
        if self.fail:
            self.log.append("ledger failed")
            raise self.fail.pop(0)
        self.calls.append((dict(offsets), {k: {s: dict(c) for s, c in v.items()} for k, v in tally.counts.items()}))
        self.log.append("ledger " + ",".join(f"{t.partition}:{o}" for t, o in sorted(offsets.items())))


def tallied(offsets: dict[int, int], entries: list[tuple[int, str, str]]) -> Batch:
    b = Batch(epoch=0, records=len(entries), offsets={tp(p): o for p, o in offsets.items()})
    for partition, source, outcome in entries:
        b.tally.add(("t", partition), source, outcome)
    return b


def committer_with_ledger(give_up_at: float | None = None) -> tuple[OffsetCommitter, FakeConsumer, FakeLedger, list[str]]:
    log: list[str] = []
    consumer, ledger = FakeConsumer(log), FakeLedger(log)
    committer = OffsetCommitter(
        consumer,
        SinkMetrics(CollectorRegistry()),
        backoff_initial_s=0.01,
        backoff_max_s=0.01,
        give_up_at=lambda: give_up_at,
        ledger=ledger.advance,
    )
    return committer, consumer, ledger, log


def add_done(committer: OffsetCommitter, b: Batch) -> None:
    async def write() -> Batch:
        return b

    committer.add(asyncio.create_task(write()))


async def test_the_ledger_gets_the_merged_counts_before_the_offsets_are_committed() -> None:
    committer, _consumer, ledger, log = committer_with_ledger()
    add_done(committer, tallied({0: 10, 1: 4}, [(0, "r/0", "stored"), (0, "r/0", "duplicates"), (1, "r/1", "stored")]))
    add_done(committer, tallied({0: 12}, [(0, "r/0", "stored"), (0, "?", "dead_lettered")]))
    await settle()
    committer.take_written()
    await committer.finish()
    assert log == ["ledger 0:12,1:4", "commit 0:12,1:4"]
    zero = {"consumed": 0, "stored": 0, "duplicates": 0, "dead_lettered": 0}
    assert ledger.calls == [
        (
            {tp(0): 12, tp(1): 4},
            {
                ("t", 0): {
                    "r/0": {**zero, "consumed": 3, "stored": 2, "duplicates": 1},
                    "?": {**zero, "consumed": 1, "dead_lettered": 1},
                },
                ("t", 1): {"r/1": {**zero, "consumed": 1, "stored": 1}},
            },
        )
    ]


async def test_a_ledger_outage_is_waited_out_and_the_commit_follows() -> None:
    committer, consumer, ledger, log = committer_with_ledger()
    ledger.fail = [AutoReconnect("ferretdb restarting"), AutoReconnect("still")]
    add_done(committer, tallied({0: 3}, [(0, "r/0", "stored")]))
    await settle()
    committer.take_written()
    await committer.finish()
    assert log == ["ledger failed", "ledger failed", "ledger 0:3", "commit 0:3"]
    assert consumer.commits == [{tp(0): 3}] and not committer.lost


async def test_a_ledger_refusal_commits_nothing_and_fails_the_worker() -> None:
    committer, consumer, ledger, log = committer_with_ledger()
    ledger.fail = [OperationFailure("not authorized on kafka_data_db", code=13)]
    add_done(committer, tallied({0: 3}, [(0, "r/0", "stored")]))
    await settle()
    committer.take_written()
    await committer.flush()
    assert log == ["ledger failed"] and consumer.commits == [] and committer.lost
    add_done(committer, tallied({0: 5}, [(0, "r/0", "stored")]))
    await settle()
    try:
        committer.take_written()
    except OperationFailure as exc:
        assert exc.code == 13
    else:
        raise AssertionError("the refusal was not raised")
    assert consumer.commits == []


async def test_at_the_shutdown_deadline_the_ledger_is_given_up_and_nothing_is_committed() -> None:
    committer, consumer, ledger, log = committer_with_ledger(give_up_at=0.0)  # long past
    ledger.fail = [AutoReconnect("down")]
    add_done(committer, tallied({0: 3}, [(0, "r/0", "stored")]))
    await settle()
    committer.take_written()
    await committer.flush()
    assert log == ["ledger failed"] and consumer.commits == [] and committer.lost
    committer.take_written()  # given up, not an error: nothing is raised
