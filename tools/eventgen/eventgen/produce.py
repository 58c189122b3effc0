"""Writes generated records to Kafka and files each one's (partition, offset) in a Manifest.

Records are packed into per-partition record batches here (``create_batch``/``send_batch``)
instead of one ``send()`` per record: aiokafka's per-record path (a future per record, a pure-
Python murmur2 per key) caps a producer at ~13 k records/s on these machines, which would make
the generator the bottleneck of a load test. The partition of a key is the Java client's default
(murmur2 of the key bytes), cached per key since visitors repeat.
"""

from __future__ import annotations

import asyncio
import sys
from collections import deque
from collections.abc import Iterable, Mapping, Sized
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.partitioner import DefaultPartitioner
from tqdm import tqdm

from eventgen.generate import GeneratedRecord
from eventgen.manifest import Manifest
from shared.kafka import KafkaConnection, create_topics

# The brokers accept record batches up to 2 MiB (message.max.bytes); oversized records are ~1.2 MB
# and travel alone in their batch.
MAX_REQUEST_BYTES = 2 * 1024 * 1024
MAX_BATCH_BYTES = 1024 * 1024
LINGER_SECONDS = 0.05  # an open batch is sent this long after the previous flush, once its partition is idle
YIELD_EVERY = 64  # records between two turns of the event loop
MAX_PENDING = 20_000  # records built but not yet acknowledged, held in memory


class KeyPartitioner:
    """The Java client's default partition for a key (murmur2), remembered per key.

    ``cache`` is public so the hot loop can look a key up without a call.
    """

    def __init__(self, partitions: int) -> None:
        self._all = list(range(partitions))
        self.cache: dict[bytes | None, int] = {}
        self._round_robin = 0

    def __call__(self, key: bytes | None) -> int:
        if key is None:  # never the case for generated records; spread deterministically
            self._round_robin += 1
            return self._round_robin % len(self._all)
        partition = self.cache.get(key)
        if partition is None:
            if len(self.cache) >= 1_000_000:
                self.cache.clear()
            partition = self.cache[key] = DefaultPartitioner()(key, self._all, self._all)
        return partition


class _OpenBatch:
    __slots__ = ("builder", "future", "partition", "size")

    def __init__(self, builder: Any, partition: int) -> None:
        self.builder = builder
        self.partition = partition
        self.size = 0
        self.future: asyncio.Future[Any] | None = None  # set once handed to the producer


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
    delivery_timeout_s: float = 60.0,
) -> Manifest:
    """Sends ``records`` in order and returns the manifest of where each one landed.

    Creates ``topic`` if missing (``partitions``, ``replication_factor``; an existing topic is
    used as it is). The producer is idempotent with ``acks=all``: a broker retry neither
    duplicates nor reorders records within a partition, and records of one key keep their
    order. Every batch is awaited before this returns; the first failed batch raises (no
    manifest then: treat the run as failed). ``rate`` caps records per second (0 = as fast as
    possible); ``args`` (the generator arguments) are stored in the manifest; ``total`` sizes
    the progress bar (taken from ``len(records)`` when it has one). ``delivery_timeout_s``: how
    long a batch may wait for a broker (a cluster outage up to that long is waited out, a longer
    one fails the run).
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
        max_batch_size=MAX_BATCH_BYTES,
        request_timeout_ms=int(delivery_timeout_s * 1000),
    )
    bar = tqdm(total=total, unit="ev", file=sys.stderr, disable=not progress, mininterval=0.5, desc=f"produce {topic}")
    open_batches: dict[int, _OpenBatch] = {}
    last_sent: dict[int, asyncio.Future[Any]] = {}  # partition → future of its latest batch
    pending: deque[tuple[GeneratedRecord, _OpenBatch, int]] = deque()  # production order

    async def flush(partition: int) -> None:
        batch = open_batches.pop(partition, None)
        if batch is not None:
            # waits while the partition's previous batch is still queued: back-pressure
            batch.future = last_sent[partition] = await producer.send_batch(batch.builder, topic, partition=partition)

    async def flush_idle() -> None:
        """Sends open batches of partitions with nothing in flight; busy ones keep filling up
        (adaptive batching: a slow broker gets bigger batches instead of a queue of small ones)."""
        for partition in list(open_batches):
            previous = last_sent.get(partition)
            if previous is None or previous.done():
                await flush(partition)
        await asyncio.sleep(0)  # let the sender task run

    async def flush_all() -> None:
        for partition in list(open_batches):
            await flush(partition)
        await asyncio.sleep(0)

    async def settle(keep: int) -> None:
        """Files acknowledged records in production order until at most ``keep`` are pending."""
        acked = 0
        while pending:
            record, batch, index = pending[0]
            if len(pending) <= keep and not (batch.future is not None and batch.future.done()):
                break
            if batch.future is None:
                await flush(batch.partition)
                assert batch.future is not None
            metadata = await batch.future
            pending.popleft()
            manifest.add(record, batch.partition, metadata.offset + index)  # batch future: base offset
            acked += 1
        if acked:
            bar.update(acked)

    await producer.start()
    try:
        known = await producer.partitions_for(topic)
        partition_of = KeyPartitioner(len(known))
        partition_cache = partition_of.cache
        loop = asyncio.get_running_loop()
        started = last_flush = loop.time()
        for n, record in enumerate(records):
            if rate:
                delay = started + n / rate - loop.time()
                if delay > 0:
                    await flush_all()
                    last_flush = loop.time()
                    await asyncio.sleep(max(0.0, started + n / rate - last_flush))
            partition = partition_cache.get(record.key)
            if partition is None:
                partition = partition_of(record.key)
            batch = open_batches.get(partition)
            if batch is None:
                batch = open_batches[partition] = _OpenBatch(producer.create_batch(), partition)
            if batch.builder.append(key=record.key, value=record.value, timestamp=None) is None:
                await flush(partition)
                batch = open_batches[partition] = _OpenBatch(producer.create_batch(), partition)
                if batch.builder.append(key=record.key, value=record.value, timestamp=None) is None:
                    raise MessageSizeTooLargeError(f"record of {len(record.value)} bytes does not fit a batch")
            pending.append((record, batch, batch.size))
            batch.size += 1
            now = loop.time()
            if now - last_flush >= LINGER_SECONDS:
                await flush_idle()
                last_flush = now
            if len(pending) >= MAX_PENDING:
                await settle(MAX_PENDING // 2)
            elif not n % YIELD_EVERY:
                # Generating is CPU work on the event loop's thread: hand the loop to the
                # sender and the connections regularly, or acks wait for the next flush.
                await asyncio.sleep(0)
                await settle(MAX_PENDING)  # only what is already acknowledged: never blocks
        await flush_all()
        await settle(0)
    finally:
        bar.close()
        await producer.stop()
    return manifest
