"""A generated mix through the running processes: remote Kafka → bridge → local Kafka → sink → FerretDB.

The per-record fuzz test (test_fuzz_hops.py) drives the hops' functions; this one proves the
same property where it matters, in the real services: a few hundred records drawn from the same
Hypothesis strategy (nasty strings, deep nesting, huge and out-of-range numbers, reserved names,
implausible times, repeated ids) are produced to the remote topic, and once both hops report lag
0 every record is accounted for exactly once at each hop:

- remote: every remote offset is either a local record (``source_offset``) or a bridge dead
  letter (``dlq.source.offset``) — never both, never neither;
- local: every local record is either a stored document, a counted duplicate of one (same
  content), or a sink dead letter (``sink.*`` stage, its local coordinates) — and nothing else is
  stored. The processes never exit.
"""

from __future__ import annotations

import asyncio
import uuid
import warnings
from collections import Counter
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from hypothesis.errors import NonInteractiveExampleWarning
from pymongo import AsyncMongoClient
from sink.documents import unescape_fields

from shared.dlq import HEADER_SOURCE_OFFSET, HEADER_SOURCE_PARTITION, HEADER_SOURCE_TOPIC, HEADER_STAGE, read_dead_letter_headers
from shared.event import DELIVERY_FIELDS, SINK_FIELDS
from shared.kafka import KafkaConnection, create_topics
from tests.integration.e2e.test_pipeline import read_committed, wait_lag_zero
from tests.integration.fuzz.test_fuzz_hops import batches
from tests.support.processes import ServiceProcess, free_port

pytestmark = pytest.mark.timeout(600)

DATABASE = "fuzz_tests"
PARTITIONS = 3
MAX_REMOTE_VALUE = 900_000  # the remote broker takes records up to its default 1 MB


def draw_records(batches_wanted: int) -> list[bytes]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonInteractiveExampleWarning)
        records = [r for _ in range(batches_wanted) for r in batches().example()]
    return [r for r in records if len(r) <= MAX_REMOTE_VALUE]


def content(doc: dict) -> dict:
    """What an event says, outside the delivery fields and the sink's own. Compared as Python
    values: FerretDB stores -0.0 as 0.0 (equal here; NaN cannot reach the store)."""
    return {k: v for k, v in doc.items() if k not in DELIVERY_FIELDS and k not in ("_id", *SINK_FIELDS)}


def metric(text: str, name: str) -> float:
    """The value of an unlabelled sample in Prometheus text."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exposed")


async def produce_raw(conn: KafkaConnection, topic: str, values: list[bytes]) -> dict[tuple[int, int], bytes]:
    producer = AIOKafkaProducer(**conn.client_kwargs(), acks="all", enable_idempotence=True, max_request_size=2_000_000)
    await producer.start()
    try:
        futures = [await producer.send(topic, value=v, key=str(i).encode(), partition=i % PARTITIONS) for i, v in enumerate(values)]
        metas = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return {(m.partition, m.offset): v for m, v in zip(metas, values, strict=True)}


async def test_a_generated_mix_is_accounted_for_exactly_once_at_every_hop(
    tmp_path: Path, remote_kafka: KafkaConnection, local_kafka: KafkaConnection, mongodb_uri: str
) -> None:
    uid = uuid.uuid4().hex[:8]
    remote_topic, local_topic, dlq = f"fz_{uid}_views", f"fz_{uid}_processed", f"fz_{uid}_processed.dlq"
    collection = f"fz_{uid}"
    ports = {"bridge": free_port(), "sink": free_port()}
    env = {
        "bridge": {
            "BRIDGE_REMOTE_TOPIC": remote_topic,
            "BRIDGE_LOCAL_TOPIC": local_topic,
            "BRIDGE_DLQ_TOPIC": dlq,
            "BRIDGE_OFFSETS_TOPIC": f"{local_topic}.bridge-offsets",
            "BRIDGE_GROUP_ID": f"fz_{uid}_bridge",
            "BRIDGE_LOCAL_PARTITIONS": str(PARTITIONS),
            "BRIDGE_HTTP_HOST": "127.0.0.1",
            "BRIDGE_HTTP_PORT": str(ports["bridge"]),
        },
        "sink": {
            "MONGODB_DATABASE": DATABASE,
            "MONGODB_COLLECTION": collection,
            "SINK_TOPIC": local_topic,
            "SINK_DLQ_TOPIC": dlq,
            "SINK_GROUP_ID": f"fz_{uid}_sink",
            "SINK_MAX_BATCH_EVENTS": "64",  # several batches, so refusals and duplicates cross batch boundaries
            "SINK_HTTP_HOST": "127.0.0.1",
            "SINK_HTTP_PORT": str(ports["sink"]),
        },
    }
    values = draw_records(80)
    await create_topics(remote_kafka, [remote_topic], partitions=PARTITIONS, replication_factor=1)
    procs = [ServiceProcess(name, name, env[name], port=ports[name], log_dir=tmp_path / "logs") for name in ("bridge", "sink")]
    client: AsyncMongoClient = AsyncMongoClient(mongodb_uri)
    try:
        for p in procs:
            p.start()
        for p in procs:
            await asyncio.to_thread(p.wait_ready, 120)
        remote = await produce_raw(remote_kafka, remote_topic, values)
        bridge, sink = procs
        await wait_lag_zero(bridge, 180)
        await wait_lag_zero(sink, 180)
        assert bridge.alive and sink.alive, bridge.tail() + sink.tail()

        local = await read_committed(local_kafka, local_topic)
        dead = [(m, read_dead_letter_headers(m.headers)) for m in await read_committed(local_kafka, dlq)]
        stored = {d["_id"]: d for d in await client[DATABASE][collection].find({}).to_list()}

        # Hop 1: every remote record became exactly one local record or one bridge dead letter.
        copied = Counter((e["source_partition"], e["source_offset"]) for e in (orjson.loads(m.value) for m in local))
        refused = Counter(
            (int(h[HEADER_SOURCE_PARTITION]), int(h[HEADER_SOURCE_OFFSET]))
            for _, h in dead
            if h[HEADER_STAGE].startswith("bridge.") and h[HEADER_SOURCE_TOPIC] == remote_topic
        )
        assert max([*copied.values(), *refused.values()]) == 1
        assert not set(copied) & set(refused)
        assert set(copied) | set(refused) == set(remote), "a remote record vanished at the bridge"
        for _, h in dead:
            assert h["dlq.error.class"] and h["dlq.error.message"], h
        bridge_dead_values = {
            (int(h[HEADER_SOURCE_PARTITION]), int(h[HEADER_SOURCE_OFFSET])): m.value
            for m, h in dead
            if h[HEADER_STAGE].startswith("bridge.")
        }
        for coords, value in bridge_dead_values.items():
            assert value == remote[coords][: len(value)], "a dead letter keeps the original bytes (or their head)"

        # Hop 2: every local record is stored, a same-content duplicate of a stored one, or a sink dead letter.
        sink_dead = Counter(
            (int(h[HEADER_SOURCE_PARTITION]), int(h[HEADER_SOURCE_OFFSET])) for _, h in dead if h[HEADER_STAGE].startswith("sink.")
        )
        assert max(sink_dead.values(), default=1) == 1
        accounted_ids: set[str] = set()
        for m in local:
            if (m.partition, m.offset) in sink_dead:
                continue
            event = orjson.loads(m.value)
            doc = stored.get(event["event_id"])
            assert doc is not None, f"local record {m.partition}/{m.offset} neither stored nor dead-lettered"
            accounted_ids.add(event["event_id"])
            # Stored, or a duplicate of what is stored: the same event either way (a conflict is a dead letter).
            assert content(unescape_fields(doc)) == content(event), f"local record {m.partition}/{m.offset} differs from the stored one"
        orphans = set(stored) - accounted_ids
        if orphans:  # say which local records they came from and why those were dead-lettered
            why = [
                (
                    m.partition,
                    m.offset,
                    h.get(HEADER_STAGE),
                    h.get("dlq.error.message", "")[:300],
                    m.value[:600],
                    stored.get(orjson.loads(m.value)["event_id"]),
                )
                for m in local
                if orjson.loads(m.value)["event_id"] in orphans
                for dm, h in dead
                if h[HEADER_STAGE].startswith("sink.")
                and (int(h[HEADER_SOURCE_PARTITION]), int(h[HEADER_SOURCE_OFFSET])) == (m.partition, m.offset)
            ]
            raise AssertionError(f"stored but every local record of theirs was dead-lettered: {sorted(orphans)} {why}\n{sink.tail(60)}")
        assert set(stored) == accounted_ids
        n_local, n_bridge_dead, n_sink_dead = len(local), sum(refused.values()), sum(sink_dead.values())
        duplicates = n_local - n_sink_dead - len(stored)
        status, metrics = sink.get("/metrics")
        assert status == 200
        print(
            f"\nprocess fuzz: remote {len(remote)} = local {n_local} + bridge DLQ {n_bridge_dead}; "
            f"local {n_local} = stored {len(stored)} + duplicates {duplicates} + sink DLQ {n_sink_dead}; "
            f"DLQ stages {dict(Counter(h[HEADER_STAGE] for _, h in dead))}"
        )
        assert len(remote) == n_local + n_bridge_dead
        assert metric(metrics, "sink_duplicate_documents_total") == duplicates
        assert metric(metrics, "sink_written_documents_total") == len(stored)
    finally:
        for p in procs:
            p.stop_quietly()
        await client[DATABASE].drop_collection(collection)
        await client.close()
