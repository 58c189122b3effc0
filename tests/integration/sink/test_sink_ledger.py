"""The sink's ledger (sink.ledger, shared.hops) against the real stack: every local record counted
exactly once per remote partition, through kill -9 mid-stream and a replay from the beginning.

Expected counts come from the produced records, per remote partition, in plain Python.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaError
from eventgen.samples import bridged_events as make_events
from pymongo import AsyncMongoClient

from shared.hops import SINK_LEDGER_COLLECTION
from shared.kafka import KafkaConnection
from tests.integration.sink.conftest import SinkNames
from tests.integration.sink.helpers import (
    TEST_DATABASE,
    count_documents,
    encode,
    produce,
    produce_plain,
    reset_group_to_beginning,
    wait_until,
)
from tests.integration.sink.test_sink import FAST_GROUP, StartSink, counter, wait_caught_up

NAMES = ("consumed", "stored", "duplicates", "dead_lettered")


async def ledger_docs(mongodb_uri: str, collection: str) -> list[dict[str, Any]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri, serverSelectionTimeoutMS=5000)
    try:
        return [d async for d in client[TEST_DATABASE][SINK_LEDGER_COLLECTION].find({"collection": collection})]
    finally:
        await client.close()


def totals(docs: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per ledger key, the sum over the local partitions' documents (plain Python)."""
    out: dict[str, dict[str, int]] = {}
    for doc in docs:
        for key, counts in doc["counts"].items():
            target = out.setdefault(key, dict.fromkeys(NAMES, 0))
            for name in NAMES:
                target[name] += counts.get(name, 0)
    return out


async def documents_by_partition(mongodb_uri: str, collection: str) -> Counter[int]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri, serverSelectionTimeoutMS=5000)
    try:
        return Counter([d["source_partition"] async for d in client[TEST_DATABASE][collection].find({}, {"source_partition": 1})])
    finally:
        await client.close()


@pytest.mark.slow
@pytest.mark.timeout(420)
async def test_ledger_counts_each_record_once_through_kill_9_and_a_replay(
    names: SinkNames, local_kafka: KafkaConnection, mongodb_uri: str, sinks: StartSink
) -> None:
    rng = random.Random(15)
    events = make_events(6000, seed=15)
    # A true duplicate (the same event from another remote record) and two records the sink refuses.
    duplicate = {**events[10], "source_offset": 999_999}
    no_id = {"event_time": "2020-06-04T10:21:27.000Z", "source_topic": "product_views", "source_partition": 2, "source_offset": 7}
    env = names.env(SINK_MAX_BATCH_EVENTS="400", SINK_GROUP_INSTANCE_ID="ledger-sink", **FAST_GROUP)

    await produce(local_kafka, names.topic, encode(events[:2000]), aborted_every=3)
    first = sinks("first", env)
    await wait_until("the sink writing", lambda: counter(first, "sink_written_documents_total") > 0, 90)
    stream = asyncio.create_task(produce(local_kafka, names.topic, encode(events[2000:4000]), per_transaction=200, rate=800))
    await asyncio.sleep(rng.uniform(0.5, 1.5))
    first.kill()
    await stream
    second = sinks("second", env)
    await wait_until("the sink writing", lambda: counter(second, "sink_written_documents_total") > 0, 90)
    stream = asyncio.create_task(produce(local_kafka, names.topic, encode(events[4000:]), per_transaction=200, rate=800))
    await asyncio.sleep(rng.uniform(0.5, 1.5))
    second.kill()
    await stream
    await produce_plain(local_kafka, names.topic, [b"not json {", orjson.dumps(no_id)])
    await produce(local_kafka, names.topic, [orjson.dumps(duplicate)])
    final = sinks("final", env)
    await wait_caught_up(final, 180)
    assert final.terminate()[0] == 0
    assert await count_documents(mongodb_uri, names.collection) == 6000

    # Independently: per remote partition, what each record must have been counted as.
    per_partition = Counter(e["source_partition"] for e in events)
    dup_partition = duplicate["source_partition"]
    expected = {
        f"product_views/{p}": {
            "consumed": n + (p == dup_partition) + (p == 2),
            "stored": n,
            "duplicates": int(p == dup_partition),
            "dead_lettered": int(p == 2),
        }
        for p, n in per_partition.items()
    }
    expected["?"] = {"consumed": 1, "stored": 0, "duplicates": 0, "dead_lettered": 1}  # not JSON: no source to read
    docs = await ledger_docs(mongodb_uri, names.collection)
    assert totals(docs) == expected
    assert all(d["complete"] for d in docs) and len(docs) == 6
    assert await documents_by_partition(mongodb_uri, names.collection) == per_partition

    # A replay from the beginning counts nothing again: every record is below next_offset.
    positions = {d["_id"]: d["next_offset"] for d in docs}
    # The static member of the last sink stays in the group until its session times out (6 s).
    deadline = time.monotonic() + 60
    while True:
        try:
            await reset_group_to_beginning(local_kafka, names.topic, names.group)
            break
        except (KafkaError, ValueError):  # ValueError: no partition known yet (metadata not loaded)
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1)
    replay = sinks("replay", env)
    await wait_caught_up(replay, 180)
    m = replay.metrics()
    assert m["sink_duplicate_documents_total"] == 6001
    assert replay.terminate()[0] == 0
    again = await ledger_docs(mongodb_uri, names.collection)
    assert totals(again) == expected
    assert {d["_id"]: d["next_offset"] for d in again} == positions
