"""The local stack's Kafka clusters behave as the design needs: SASL enforced, RF 3 survives a
broker outage, aborted transactions invisible to read_committed readers, a created topic known
with its leaders to every broker before ``create_topics`` returns."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError
from aiokafka.protocol.metadata import MetadataRequest
from pydantic import SecretStr

from shared.kafka import KafkaConnection, create_topics
from tests.conftest import STACK_ENV
from tests.support.kafka_whole import start_broker, stop_broker

STACK_HOME = STACK_ENV.parent

pytestmark = pytest.mark.timeout(240)


async def read_all(
    conn: KafkaConnection, topic: str, *, expected: int, isolation: str = "read_committed", timeout: float = 30
) -> list[bytes]:
    """Every value of a topic's partitions from the beginning, stopping at the end offsets."""
    consumer = AIOKafkaConsumer(**conn.client_kwargs(), enable_auto_commit=False, isolation_level=isolation, auto_offset_reset="earliest")
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or await _partitions(consumer, topic))]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        out: list[bytes] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while [tp for tp in parts if await consumer.position(tp) < ends[tp]] and loop.time() < deadline:
            batch = await consumer.getmany(*parts, timeout_ms=500)
            for msgs in batch.values():
                out.extend(m.value for m in msgs)
        return out
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()
    return consumer.partitions_for_topic(topic) or set()


@pytest.mark.parametrize("cluster", ["local", "remote"])
async def test_sasl_refuses_a_wrong_password(cluster: str, local_kafka: KafkaConnection, remote_kafka: KafkaConnection) -> None:
    good = local_kafka if cluster == "local" else remote_kafka
    bad = good.model_copy(update={"sasl_password": SecretStr("wrong-" + uuid.uuid4().hex)})
    log_file = STACK_HOME / "logs" / f"kafka-{cluster}-1.log"
    seen = len(log_file.read_text(errors="replace"))
    producer = AIOKafkaProducer(
        **{**bad.client_kwargs(), "bootstrap_servers": good.bootstrap_servers.split(",")[0]}, request_timeout_ms=5000
    )
    with pytest.raises(KafkaError):
        await producer.start()
    await producer.stop()
    # The broker closed the connection because of the credentials, and says so in its log.
    await asyncio.sleep(0.5)
    assert "Failed authentication" in log_file.read_text(errors="replace")[seen:]
    # The right password on the same listener works, so the refusal was about the credentials.
    producer = AIOKafkaProducer(**good.client_kwargs())
    await producer.start()
    await producer.stop()


@pytest.mark.exclusive  # stops the stack's broker kafka-local-3, which every test uses
async def test_local_topic_survives_one_broker_down(local_kafka: KafkaConnection, unique_name: str) -> None:
    topic = unique_name
    await create_topics(local_kafka, [topic], partitions=3, replication_factor=3, configs={"min.insync.replicas": "2"})
    producer = AIOKafkaProducer(**local_kafka.client_kwargs(), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        before = [f"before-{i}".encode() for i in range(300)]
        for v in before:
            await producer.send(topic, v)
        await producer.flush()
        await stop_broker("kafka-local-3")
        try:
            during = [f"during-{i}".encode() for i in range(300)]
            sent = [await producer.send(topic, v) for v in during]
            await asyncio.wait_for(asyncio.gather(*sent), 60)
            got = await read_all(local_kafka, topic, expected=600)
            assert sorted(got) == sorted(before + during)
        finally:
            await start_broker("kafka-local-3", local_kafka)  # whole again before other tests run
    finally:
        await producer.stop()
    # And after the broker is back nothing is lost either.
    assert sorted(await read_all(local_kafka, topic, expected=600)) == sorted(before + during)


async def test_aborted_transaction_is_invisible_to_read_committed(local_kafka: KafkaConnection, unique_name: str) -> None:
    topic = unique_name
    await create_topics(local_kafka, [topic], partitions=1, replication_factor=3)
    producer = AIOKafkaProducer(**local_kafka.client_kwargs(), transactional_id=f"{unique_name}-tx")
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send(topic, b"committed-1")
        await producer.begin_transaction()
        await producer.send(topic, b"aborted")
        await producer.abort_transaction()
        async with producer.transaction():
            await producer.send(topic, b"committed-2")
    finally:
        await producer.stop()
    assert await read_all(local_kafka, topic, expected=2) == [b"committed-1", b"committed-2"]
    # The aborted record is in the log: read_uncommitted sees it, so the filtering is real.
    assert await read_all(local_kafka, topic, expected=3, isolation="read_uncommitted") == [b"committed-1", b"aborted", b"committed-2"]


async def test_created_topics_have_leaders_on_every_broker_when_create_topics_returns(
    local_kafka: KafkaConnection, unique_name: str
) -> None:
    """A producer may use the topics at once: no broker still answers "unknown topic" (an aiokafka
    producer that caches that answer can stall a transaction for its whole timeout)."""
    topics = [f"{unique_name}.{i}" for i in range(3)]
    assert await create_topics(local_kafka, topics, partitions=4, replication_factor=3) == topics
    client = AIOKafkaClient(**local_kafka.client_kwargs())
    await client.bootstrap()
    try:
        brokers = sorted(b.nodeId for b in client.cluster.brokers())
        assert len(brokers) == 3
        for node_id in brokers:
            response = await client.send(node_id, MetadataRequest[1](topics))
            leaders = {name: sorted((p[1], p[2] >= 0) for p in parts) for error, name, _, parts in response.topics if error == 0}
            assert leaders == {t: [(p, True) for p in range(4)] for t in topics}, (node_id, response.topics)
    finally:
        await client.close()
    # existing topics: nothing created, nothing to wait for
    assert await create_topics(local_kafka, topics, partitions=4, replication_factor=3) == []
