"""The remote offsets the bridge has copied, stored on the local cluster.

One compacted topic; key ``"{remote topic}/{partition}"``, value ``{"next_offset": N}``: the
next remote offset to copy. Each record is written inside the transaction that wrote the
events it covers, so a committed value is exactly "everything before N is on the local topic".
"""

from __future__ import annotations

import asyncio
import time

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.errors import BackendUnavailableError
from shared.kafka import KafkaConnection


def offset_key(topic: str, partition: int) -> bytes:
    return f"{topic}/{partition}".encode()


def offset_value(next_offset: int) -> bytes:
    return orjson.dumps({"next_offset": next_offset})


def parse_offset_record(key: bytes | None, value: bytes | None) -> tuple[str, int, int | None] | None:
    """``(topic, partition, next_offset)``; ``next_offset`` None for a tombstone; None if foreign."""
    if key is None:
        return None
    topic, sep, partition = key.decode(errors="replace").rpartition("/")
    if not sep or not partition.isdigit():
        return None
    if value is None:
        return topic, int(partition), None
    return topic, int(partition), int(orjson.loads(value)["next_offset"])


async def read_stored_offsets(conn: KafkaConnection, offsets_topic: str, *, timeout_s: float = 30.0) -> dict[tuple[str, int], int]:
    """Every stored position, as committed at the moment of the call.

    Reads the whole (compacted) topic with ``read_committed`` up to the high watermark taken at
    the start, not only up to the last stable offset: a value committed just before the call
    may sit behind another producer's open transaction, and must not be missed. Call it after
    ``init_transactions`` of the partition's producer, so the previous owner's transaction is
    already committed or aborted.
    """
    consumer = AIOKafkaConsumer(
        **conn.client_kwargs(),
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        await consumer.topics()  # refreshes the metadata: the topic may have been created a moment ago
        partitions = consumer.partitions_for_topic(offsets_topic) or set()
        tps = [TopicPartition(offsets_topic, p) for p in sorted(partitions)]
        if not tps:
            raise BackendUnavailableError(f"offsets topic {offsets_topic} has no partitions (yet)")
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        # ListOffsets v1 has no isolation level: this is the high watermark, not the LSO.
        targets = await consumer.end_offsets(tps)
        stored: dict[tuple[str, int], int] = {}
        deadline = time.monotonic() + timeout_s
        pending = [tp for tp in tps if await consumer.position(tp) < targets[tp]]
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"offsets topic {offsets_topic} not read to {targets} within {timeout_s:.0f}s")
            batch = await consumer.getmany(*pending, timeout_ms=500)
            for records in batch.values():
                for record in records:
                    parsed = parse_offset_record(record.key, record.value)
                    if parsed is None:
                        continue
                    topic, partition, next_offset = parsed
                    if next_offset is None:
                        stored.pop((topic, partition), None)
                    else:
                        stored[(topic, partition)] = next_offset
            pending = [tp for tp in pending if await consumer.position(tp) < targets[tp]]
        return stored
    finally:
        await asyncio.shield(consumer.stop())
