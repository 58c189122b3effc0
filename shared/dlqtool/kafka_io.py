"""The dead-letter tool's one Kafka layer: read a topic to its end, publish a replay in transactions.

Reads are ``read_committed`` (the bridge writes its letters inside its transactions) and
bounded: each partition is read from its start (or the first offset at ``since_ms``) to the end
offset it had when the read began, so a topic that keeps growing still ends a read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TypeAlias

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

from shared.dlqtool.letters import Letter, letter_of
from shared.dlqtool.replay import Ledger, Publish, ledger_of, ledger_record
from shared.errors import BackendUnavailableError
from shared.kafka import KafkaConnection, create_consumer, create_topics

Record: TypeAlias = "ConsumerRecord[bytes, bytes]"


async def read_records(conn: KafkaConnection, topic: str, *, since_ms: int | None = None, timeout_s: float = 30.0) -> list[Record]:
    """Every committed record of ``topic`` (from ``since_ms`` on, when given) up to the end
    offsets read first, in partition and offset order; [] when the topic does not exist."""
    consumer = create_consumer(conn, auto_offset_reset="earliest")
    await consumer.start()
    try:
        async with asyncio.timeout(timeout_s):
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                return []
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            starts = await consumer.beginning_offsets(tps)
            if since_ms is not None:
                at = await consumer.offsets_for_times({tp: since_ms for tp in tps})
                starts = {tp: (at[tp].offset if at[tp] is not None else ends[tp]) for tp in tps}
            todo = {tp for tp in tps if starts[tp] < ends[tp]}
            for tp in tps:
                consumer.seek(tp, starts[tp])
            got: dict[TopicPartition, list[Record]] = {tp: [] for tp in tps}
            while todo:
                batch = await consumer.getmany(*todo, timeout_ms=500)
                for tp, records in batch.items():
                    got[tp].extend(r for r in records if r.offset < ends[tp])
                for tp in list(todo):
                    if await consumer.position(tp) >= ends[tp]:
                        todo.discard(tp)
            return [r for tp in tps for r in got[tp]]
    except TimeoutError:
        raise BackendUnavailableError(f"reading {topic!r} to its end took more than {timeout_s} s") from None
    finally:
        await consumer.stop()


async def read_letters(conn: KafkaConnection, topic: str, *, since_ms: int | None = None, timeout_s: float = 30.0) -> list[Letter]:
    records = await read_records(conn, topic, since_ms=since_ms, timeout_s=timeout_s)
    return [letter_of(r.topic, r.partition, r.offset, r.timestamp, r.key, r.value, list(r.headers or ())) for r in records]


async def read_ledger(conn: KafkaConnection, topic: str, *, timeout_s: float = 30.0) -> Ledger:
    return ledger_of((r.key, r.value) for r in await read_records(conn, topic, timeout_s=timeout_s))


async def ensure_ledger(conn: KafkaConnection, topic: str, *, replication_factor: int) -> None:
    await create_topics(conn, [topic], partitions=1, replication_factor=replication_factor, configs={"cleanup.policy": "compact"})


async def publish(
    conn: KafkaConnection,
    steps: Sequence[Publish],
    *,
    target_topic: str,
    ledger_topic: str,
    transactional_id: str,
    batch_records: int,
    timeout_s: float = 30.0,
) -> int:
    """Writes each step's record to ``target_topic`` and its ledger record to ``ledger_topic``,
    ``batch_records`` steps per transaction; returns how many were committed. A crash (or a
    fenced producer) leaves every committed transaction whole and nothing of the open one: the
    next run's plan finds the committed ones in the ledger and replays the rest."""
    producer = AIOKafkaProducer(**conn.client_kwargs(), transactional_id=transactional_id, enable_idempotence=True, acks="all")
    await producer.start()
    done = 0
    try:
        for first in range(0, len(steps), batch_records):
            chunk = steps[first : first + batch_records]
            async with asyncio.timeout(timeout_s), producer.transaction():
                futures = []
                for step in chunk:
                    futures.append(await producer.send(target_topic, step.value, key=step.key, headers=list(step.headers)))
                    key, value = ledger_record(step)
                    futures.append(await producer.send(ledger_topic, value, key=key))
                await asyncio.gather(*futures)
            done += len(chunk)
        return done
    finally:
        await producer.stop()
