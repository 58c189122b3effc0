"""What one Kafka transaction costs on the local cluster: the floor under the bridge's latency.

    .venv/bin/python -m bench.bridge_txn_cost [--rounds 40] [--partitions 6]

Measures, one after the other (nothing else from this process in flight), with aiokafka as the
bridge uses it:

- ``produce acks=1`` and ``produce acks=all`` of one small record (RF 3): a plain round trip,
  and one that waits for replication;
- a transaction like the bridge's: begin, one small record to each of ``--partitions`` partitions
  of a topic plus one to an offsets topic, wait for the acks ("produce", which includes
  AddPartitionsToTxn), commit ("commit": EndTxn, the coordinator's two transaction-log writes
  and the markers), then the time until a ``read_committed`` consumer sees the record
  ("visible" after the commit returned).

Prints p50/p99/mean per step and the load average. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402

from bench.probes import load_stack_env  # noqa: E402
from shared.kafka import KafkaConnection, create_topics  # noqa: E402


def summary(name: str, values_s: list[float]) -> str:
    ms = sorted(v * 1000 for v in values_s)
    p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))]
    return f"  {name:34} p50 {statistics.median(ms):7.1f}  p99 {p99:7.1f}  mean {statistics.fmean(ms):7.1f} ms  (n={len(ms)})"


async def run(conn: KafkaConnection, rounds: int, partitions: int) -> None:
    base = f"bench_txn_{uuid.uuid4().hex[:6]}"
    topic, offsets = f"{base}.data", f"{base}.offsets"
    await create_topics(conn, [topic], partitions=partitions, replication_factor=3)
    await create_topics(conn, [offsets], partitions=1, replication_factor=3)  # both return once every broker knows the leaders
    results: dict[str, list[float]] = {}
    for acks in (1, "all"):
        producer = AIOKafkaProducer(**conn.client_kwargs(), acks=acks, linger_ms=0)
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"warm-up", partition=0)
            for _ in range(rounds):
                t = time.perf_counter()
                await producer.send_and_wait(topic, b"x" * 100, partition=0)
                results.setdefault(f"produce acks={acks}", []).append(time.perf_counter() - t)
        finally:
            await producer.stop()

    producer = AIOKafkaProducer(**conn.client_kwargs(), transactional_id=f"{base}.txn", enable_idempotence=True, acks="all", linger_ms=0)
    consumer = AIOKafkaConsumer(**conn.client_kwargs(), enable_auto_commit=False, isolation_level="read_committed")
    await producer.start()
    await consumer.start()
    try:
        tp0 = TopicPartition(topic, 0)
        consumer.assign([tp0])
        await consumer.seek_to_end(tp0)
        for i in range(rounds + 1):
            t0 = time.perf_counter()
            await producer.begin_transaction()
            futures = [await producer.send(topic, f"{i}".encode(), partition=p) for p in range(partitions)]
            futures.append(await producer.send(offsets, f"{i}".encode(), key=b"k", partition=0))
            await asyncio.gather(*futures)
            t1 = time.perf_counter()
            await producer.commit_transaction()
            t2 = time.perf_counter()
            seen = False
            while not seen:
                batch = await consumer.getmany(tp0, timeout_ms=2000)
                seen = any(r.value == f"{i}".encode() for r in batch.get(tp0, []))
            t3 = time.perf_counter()
            if i:  # the first one finds the coordinator
                results.setdefault(f"txn produce ({partitions}+1 partitions)", []).append(t1 - t0)
                results.setdefault("txn commit (EndTxn)", []).append(t2 - t1)
                results.setdefault("txn visible after commit", []).append(t3 - t2)
                results.setdefault("txn total, begin to visible", []).append(t3 - t0)
    finally:
        await consumer.stop()
        await producer.stop()
    print(f"local cluster {conn.bootstrap_servers}, {rounds} rounds, load average before {LOAD_BEFORE}, after {os.getloadavg()}")
    for name, values in results.items():
        print(summary(name, values))
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**conn.client_kwargs())
    await admin.start()
    try:
        await admin.delete_topics([topic, offsets])
    finally:
        await admin.close()


LOAD_BEFORE = os.getloadavg()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--partitions", type=int, default=6)
    args = parser.parse_args()
    load_stack_env()
    sys.path.insert(0, str(REPO / "services" / "bridge"))
    from shared.settings import local_kafka_from_env

    asyncio.run(run(local_kafka_from_env(), args.rounds, args.partitions))


if __name__ == "__main__":
    main()
