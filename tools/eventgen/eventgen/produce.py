"""Writes generated records to Kafka and files each one's (partition, offset) in a Manifest."""

from __future__ import annotations

import asyncio
import sys
from collections import deque
from collections.abc import Iterable, Mapping, Sized
from typing import Any

from aiokafka import AIOKafkaProducer
from tqdm import tqdm

from eventgen.generate import GeneratedRecord
from eventgen.manifest import Manifest
from shared.kafka import KafkaConnection, create_topics

# The brokers accept record batches up to 2 MiB (message.max.bytes); oversized records are ~1.2 MB.
MAX_REQUEST_BYTES = 2 * 1024 * 1024
MAX_PENDING = 5000  # sent but not yet acknowledged records held in memory


async def produce(
    records: Iterable[GeneratedRecord],
    conn: KafkaConnection,
    topic: str,
    *,
    rate: float = 0,
    progress: bool = True,
    partitions: int = 6,
    replication_factor: int = 1,
    total: int | None = None,
    args: Mapping[str, Any] | None = None,
) -> Manifest:
    """Sends ``records`` in order and returns the manifest of where each one landed.

    Creates ``topic`` if missing (``partitions``, ``replication_factor``; an existing topic is
    used as it is). The producer is idempotent with ``acks=all``, so a broker retry neither
    duplicates nor reorders records within a partition; every send is awaited before this
    returns, and the first failed send raises (the manifest is then not returned: the run
    must be treated as failed). ``rate`` caps events per second (0 = as fast as possible);
    ``args`` (the generator arguments) are stored in the manifest; ``total`` sizes the progress
    bar (taken from ``len(records)`` when it has one).
    """
    if rate < 0:
        raise ValueError("rate must be >= 0")
    if total is None and isinstance(records, Sized):
        total = len(records)
    await create_topics(conn, [topic], partitions=partitions, replication_factor=replication_factor)
    manifest = Manifest(topic=topic, args=dict(args or {}))
    producer = AIOKafkaProducer(
        **conn.client_kwargs(),
        acks="all",
        enable_idempotence=True,
        max_request_size=MAX_REQUEST_BYTES,
        max_batch_size=256 * 1024,
        linger_ms=5,
        request_timeout_ms=60_000,
    )
    bar = tqdm(total=total, unit="ev", file=sys.stderr, disable=not progress, mininterval=0.5, desc=f"produce {topic}")
    pending: deque[tuple[GeneratedRecord, asyncio.Future[Any]]] = deque()

    async def settle(keep: int) -> None:
        """Files acknowledged records in production order until at most ``keep`` are pending."""
        acked = 0
        while pending and (len(pending) > keep or pending[0][1].done()):
            record, future = pending.popleft()
            metadata = await future
            manifest.add(record, metadata.partition, metadata.offset)
            acked += 1
        if acked:
            bar.update(acked)

    await producer.start()
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        for n, record in enumerate(records):
            if rate:
                delay = started + n / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            pending.append((record, await producer.send(topic, record.value, key=record.key)))
            if len(pending) >= MAX_PENDING:
                await settle(MAX_PENDING // 2)
            elif pending[0][1].done():
                await settle(MAX_PENDING)  # only what is already acknowledged: never blocks
        await settle(0)
    finally:
        # A failed run leaves unacknowledged futures: cancel them, then stop the producer.
        for _, future in pending:
            future.cancel()
        bar.close()
        await producer.stop()
    return manifest
