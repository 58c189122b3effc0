"""The bridge's ceiling in ``bench/bridge_vs_mirrormaker.py``: a bare aiokafka consume → produce
copier, at least once, with nothing the bridge does per record or per transaction.

    python -m bench.peers.raw_copier --source-topic T --target-topic U --group G [--partitions 6]

Kept honest against the bridge: the same clusters and client library, the same target partition
count and replication, the same producer settings (``acks=all``, idempotent, the bridge's
``linger_ms`` and record-batch size), the same fetch size (``max_records`` per ``getmany``), the
same batching (whole record batches per partition built by ``bridge.batching.send_batches``,
partitioned by the remote key like Kafka's Java client), and the records copied byte for byte
(the bridge's are its normalized events, ~15 % larger). What it leaves out is what the bridge's
guarantees cost: no transactions (so no markers and no coordinator round trips), no offsets
topic, no per-record parsing, validation or dead letters, no pause/resume. Consumer offsets are
committed to ``--group`` after every batch before them is acknowledged (``--in-flight`` batches
may be unacknowledged at once), so a crash re-copies at most those: at least once.

It runs until SIGTERM. Its source and target clusters come from the stack's environment
(``REMOTE_KAFKA_*``, ``LOCAL_KAFKA_*``).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections import deque
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent.parent
sys.path[:0] = [str(REPO), str(REPO / "services" / "bridge")]

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402
from bridge.batching import KeyPartitioner, send_batches  # noqa: E402
from bridge.settings import BridgeSettings  # noqa: E402

from shared.kafka import (  # noqa: E402
    KafkaConnection,
    create_topics,
    wait_for_leaders,
)


async def copy(
    source: KafkaConnection,
    target: KafkaConnection,
    source_topic: str,
    target_topic: str,
    group: str,
    partitions: int,
    *,
    in_flight: int,
    stopping: asyncio.Event,
) -> int:
    """Copies until ``stopping`` is set; returns how many records it copied."""
    s = BridgeSettings.model_construct()  # the bridge's defaults, for the client settings only
    await create_topics(target, [target_topic], partitions=partitions, replication_factor=s.replication_factor)
    await wait_for_leaders(target, [target_topic], timeout_s=60)
    consumer = AIOKafkaConsumer(
        **source.client_kwargs(),
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    producer = AIOKafkaProducer(
        **target.client_kwargs(),
        acks="all",
        enable_idempotence=True,
        linger_ms=s.linger_ms,
        max_batch_size=s.max_batch_bytes,
        max_request_size=s.max_request_bytes,
    )
    await consumer.start()
    await producer.start()
    copied = 0
    try:
        await consumer.topics()
        tps = [TopicPartition(source_topic, p) for p in sorted(consumer.partitions_for_topic(source_topic) or ())]
        if not tps:
            raise SystemExit(f"source topic {source_topic} not found")
        consumer.assign(tps)
        partitioner = KeyPartitioner(partitions)
        pending: deque[tuple[asyncio.Future[Any], dict[TopicPartition, int]]] = deque()
        print(f"raw copier: {source_topic} ({len(tps)} partitions) -> {target_topic}", flush=True)
        while not stopping.is_set():
            fetched = await consumer.getmany(timeout_ms=s.poll_timeout_ms, max_records=s.max_batch_records)
            if fetched:
                records = [(r.key or b"", r.value or b"") for batch in fetched.values() for r in batch]
                futures = await send_batches(producer, target_topic, partitioner, records)
                pending.append((asyncio.gather(*futures), {tp: batch[-1].offset + 1 for tp, batch in fetched.items()}))
                copied += len(records)
            # commit in fetch order what is acknowledged; wait when too much is not yet
            while pending and (len(pending) > in_flight or pending[0][0].done() or not fetched):
                delivered, offsets = pending.popleft()
                await delivered
                await consumer.commit(offsets)
    finally:
        await producer.stop()
        await consumer.stop()
    return copied


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source-topic", required=True)
    parser.add_argument("--target-topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--partitions", type=int, default=6, help="of the target topic (created when missing)")
    parser.add_argument("--in-flight", type=int, default=16, help="fetched batches sent but not yet acknowledged (the benchmark's default)")
    args = parser.parse_args()
    from shared.settings import local_kafka_from_env, remote_kafka_from_env

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    copied = await copy(
        remote_kafka_from_env(),
        local_kafka_from_env(),
        args.source_topic,
        args.target_topic,
        args.group,
        args.partitions,
        in_flight=args.in_flight,
        stopping=stopping,
    )
    print(f"raw copier: stopped after {copied} records", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
