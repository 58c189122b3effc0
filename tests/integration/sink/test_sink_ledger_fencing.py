"""The sink's ledger under rebalances it did not see coming, against the real store.

Hypothesis generates interleavings of owners of one local partition: new assignments (a newer
generation; the previous owner becomes a zombie that keeps working until it notices), static
members replaced within a generation, the group deleted (generations start again at 1, no
committed offset), and each owner's batches split in two steps, as the sink splits them: fetched
and tallied (after loading the ledger), then advanced and committed (the committer). A Kafka
commit succeeds only for the group's current member and generation, as the coordinator decides.

Whatever the order, once the last owner has read the partition to its end the ledger holds each
record counted exactly once, and stays complete. Before the ledger named its owner, a zombie's
advance between the new owner's load and its first advance was counted and the owner's dropped
(an undercount), and a zombie's late advance marked the ledger incomplete (found by the soak).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, cast

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pymongo import AsyncMongoClient
from sink.ledger import SinkLedger

from shared.hops import SINK_LEDGER_COLLECTION, SinkTally
from shared.kafka import KafkaConnection, create_consumer, group_members, group_membership
from tests.integration.sink.helpers import TEST_DATABASE, create_topic

TP = TopicPartition("t", 0)
RECORDS = 120
SOURCE = "remote/0"


@dataclass
class Owner:
    member: str
    generation: int
    ledger: SinkLedger
    position: int  # the next record this owner fetches
    pending: list[tuple[int, SinkTally]] = field(default_factory=list)  # (end, tally) tallied, not advanced


@dataclass
class Group:
    """What the Kafka coordinator knows: the generation, its members, the committed offset."""

    generation: int = 0
    members: set[str] = field(default_factory=set)
    committed: int | None = None
    owners: list[Owner] = field(default_factory=list)
    joined: int = 0

    def current(self) -> Owner | None:
        return next((o for o in reversed(self.owners) if o.member in self.members), None)


STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("join"), st.just(0), st.just(0)),
        st.tuples(st.just("static"), st.just(0), st.just(0)),
        st.tuples(st.just("reset"), st.just(0), st.just(0)),
        st.tuples(st.just("fetch"), st.integers(0, 2), st.integers(1, 40)),
        st.tuples(st.just("commit"), st.integers(0, 2), st.just(0)),
    ),
    max_size=24,
)


async def _play(client: AsyncMongoClient[dict[str, Any]], collection: str, steps: list[tuple[str, int, int]]) -> dict[str, Any]:
    group = Group()
    database = client[TEST_DATABASE]

    async def committed(_: TopicPartition) -> int | None:
        return group.committed

    async def members() -> set[str]:
        return set(group.members)

    def join(generation: int) -> None:
        group.joined += 1
        member = f"m{group.joined}"
        group.generation, group.members = generation, {member}  # the previous owner left: a zombie now
        ledger = SinkLedger(database, collection, committed, members)
        ledger.forget((generation, member))
        group.owners.append(Owner(member, generation, ledger, group.committed or 0))

    async def fetch(owner: Owner, size: int) -> None:
        end = min(owner.position + size, RECORDS)
        if end == owner.position:
            return
        await owner.ledger.load([TP])
        tally = SinkTally()
        for offset in range(owner.position, end):
            if owner.ledger.counts(TP, cast(Any, SimpleNamespace(offset=offset))):
                tally.add((TP.topic, TP.partition), SOURCE, "stored")
        owner.pending.append((end, tally))
        owner.position = end

    async def commit(owner: Owner) -> None:
        if not owner.pending:
            return
        merged = SinkTally()
        for _, tally in owner.pending:
            merged.merge(tally)
        end = owner.pending[-1][0]
        owner.pending.clear()
        await owner.ledger.advance({TP: end}, merged)
        if owner.member in group.members and owner.generation == group.generation:
            group.committed = end  # the coordinator refuses a zombie's commit

    join(1)
    for kind, who, size in steps:
        if kind == "join":
            join(group.generation + 1)
        elif kind == "static":  # the same instance id restarted: same generation, a new member id
            join(group.generation)
        elif kind == "reset":  # the group deleted: its offsets and generations gone
            group.committed = None
            join(1)
        else:
            owner = group.owners[-1 - who % len(group.owners)]  # who: the newest owner (0), the one before it (1) …
            await (fetch(owner, size) if kind == "fetch" else commit(owner))
    last = group.current()
    assert last is not None
    while last.position < RECORDS or last.pending:
        await fetch(last, 50)
        await commit(last)
    doc = await database[SINK_LEDGER_COLLECTION].find_one({"collection": collection})
    assert doc is not None
    return doc


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=STEPS)
# The zombie's advance lands between the new owner's load and its first advance.
@example(steps=[("fetch", 0, 10), ("join", 0, 0), ("fetch", 0, 30), ("commit", 1, 0), ("commit", 0, 0)])
# The zombie's advance comes after the new owner's: it must count nothing, and mark nothing.
@example(steps=[("fetch", 0, 30), ("join", 0, 0), ("fetch", 0, 10), ("commit", 0, 0), ("commit", 1, 0)])
# A zombie that loads only after its successor did (a late first load): refused, not the owner.
@example(steps=[("join", 0, 0), ("fetch", 0, 10), ("fetch", 1, 20), ("commit", 1, 0), ("commit", 0, 0)])
# The group deleted after a newer generation had claimed: that owner left, its claim is taken over.
@example(steps=[("join", 0, 0), ("fetch", 0, 30), ("commit", 0, 0), ("reset", 0, 0), ("fetch", 0, 50), ("commit", 0, 0)])
# A static member replaced (same generation): the old member's late first load must not take the claim back.
@example(steps=[("static", 0, 0), ("fetch", 0, 1), ("fetch", 1, 1)])
def test_every_record_is_counted_once_whatever_the_rebalances(mongodb_uri: str, steps: list[tuple[str, int, int]]) -> None:
    collection = f"fencing_{uuid.uuid4().hex[:10]}"

    async def run() -> dict[str, Any]:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri, serverSelectionTimeoutMS=5000)
        try:
            return await _play(client, collection, steps)
        finally:
            await client[TEST_DATABASE][SINK_LEDGER_COLLECTION].delete_many({"collection": collection})
            await client.close()

    doc = asyncio.run(run())
    assert doc["next_offset"] == RECORDS
    assert doc["counts"] == {SOURCE: {"consumed": RECORDS, "stored": RECORDS}}, doc
    assert doc["complete"] is True


async def test_the_owner_the_ledger_names_is_the_coordinators(local_kafka: KafkaConnection, unique_name: str) -> None:
    """The claim's generation and member id are the group coordinator's, read at assignment, and
    the group's members as the admin client describes them: what the ledger's claims compare."""
    await create_topic(local_kafka, unique_name, partitions=2)
    seen: list[tuple[int, str]] = []
    first = create_consumer(local_kafka, group_id=unique_name)
    second = create_consumer(local_kafka, group_id=unique_name)
    admin = AIOKafkaAdminClient(**local_kafka.client_kwargs())
    await admin.start()

    class Listener(ConsumerRebalanceListener):
        def __init__(self, consumer: AIOKafkaConsumer) -> None:
            self.consumer = consumer

        async def on_partitions_revoked(self, revoked: Any) -> None:
            pass

        async def on_partitions_assigned(self, assigned: Any) -> None:
            seen.append(group_membership(self.consumer))

    try:
        await first.start()
        first.subscribe([unique_name], listener=Listener(first))
        while not seen:
            await first.getmany(timeout_ms=200)
        generation, member = seen[-1]
        assert generation >= 1 and member
        assert await group_members(admin, unique_name) == {member}
        await second.start()
        second.subscribe([unique_name], listener=Listener(second))
        while len({m for _, m in seen}) < 2 or max(g for g, _ in seen) == generation:
            await asyncio.gather(first.getmany(timeout_ms=200), second.getmany(timeout_ms=200))
        (g1, m1), (g2, m2) = group_membership(first), group_membership(second)
        assert g1 == g2 > generation and m1 != m2  # both in the new generation, each its own member id
        assert await group_members(admin, unique_name) == {m1, m2}
        await second.stop()
        await first.stop()
        assert await group_members(admin, unique_name) == set()
    finally:
        for consumer in (first, second):
            await consumer.stop()
        await admin.close()
