"""The sink benchmark's Kafka side and its two consumers' runs (``bench/sink_vs_connector.py``):
producing the events once, the end offsets and each partition's last event id, and running the
sink or the connector until the last event of every partition is stored."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from bench.peers.mongo_connector import SinkConnector, connect_standalone
from bench.probes import cpu_seconds, free_port, peak_rss_mib
from bench.sink_store import DATABASE, PresentIds
from shared.kafka import KafkaConnection

REPO = Path(__file__).resolve().parent.parent
STAGES = ("fetch", "build", "slot_wait", "insert", "commit_wait", "commit")  # the stage labels of the sink's sink_stage_seconds_total


async def produce(conn: KafkaConnection, topic: str, values: list[bytes]) -> float:
    # request_timeout_ms: the shared brokers stall for tens of seconds under load (load average > 10);
    # aiokafka's default (40 s) then fails the whole run in the middle of producing.
    producer = AIOKafkaProducer(
        **conn.client_kwargs(), acks="all", enable_idempotence=True, linger_ms=20, max_batch_size=524_288, request_timeout_ms=300_000
    )
    await producer.start()
    t0 = time.monotonic()
    try:
        pending = []
        for v in values:
            pending.append(await producer.send(topic, value=v))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.monotonic() - t0


async def end_offsets(conn: KafkaConnection, topic: str) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(**conn.client_kwargs(), enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        return dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


async def last_event_ids(conn: KafkaConnection, end: dict[TopicPartition, int]) -> list[str]:
    """The ``event_id`` of each partition's last record."""
    consumer = AIOKafkaConsumer(**conn.client_kwargs(), enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(end))
        ids = []
        for tp, offset in end.items():
            if offset > 0:
                consumer.seek(tp, offset - 1)
                record = await consumer.getone(tp)
                ids.append(orjson.loads(record.value)["event_id"])
        return ids
    finally:
        await consumer.stop()


async def wait_done(
    uri: str,
    collection: str,
    conn: KafkaConnection,
    group: str,
    end: dict[TopicPartition, int],
    last_ids: list[str],
    proc: subprocess.Popen[bytes],
    timeout: float,
    failed: Any = None,
) -> tuple[float, int]:
    """Waits until the last event of every partition is in the collection; returns when that was
    seen and how many events were done (fewer only when ``timeout`` ran out, then counted by the
    group's committed offsets). Both consumers write each partition in offset order, so the last
    ones present means all are; the same criterion for both, since Connect commits offsets late
    ("Commit of offsets timed out" while its task is busy) and FerretDB counts by reading every
    document (minutes for a million). ``failed()`` (optional) returns a reason when the consumer
    died without its process exiting."""
    ids = PresentIds(uri, collection)
    await ids.start()
    admin = AIOKafkaAdminClient(**conn.client_kwargs())
    await admin.start()
    total = sum(end.values())
    missing = set(last_ids)
    deadline = time.monotonic() + timeout
    last_print = 0.0
    done = 0
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"process {proc.pid} exited with {proc.returncode}")
            reason = failed() if failed else None
            if reason:
                raise RuntimeError(reason)
            missing -= await ids.present(sorted(missing))
            now = time.monotonic()
            if not missing:
                return now, total
            if now - last_print > 10:
                try:
                    offsets = await admin.list_consumer_group_offsets(group, partitions=list(end))
                    done = sum(max(0, m.offset) for tp, m in offsets.items() if tp in end)
                except KafkaError:  # a busy broker now and then
                    pass
                print(f"    … {done:,}/{total:,} committed", flush=True)
                last_print = now
            await asyncio.sleep(0.25)
    finally:
        await ids.close()
        await admin.close()
    print(f"    timed out after {timeout:.0f}s at {done:,}/{total:,}", flush=True)
    return time.monotonic(), done


async def wait_committed(conn: KafkaConnection, group: str, end: dict[TopicPartition, int], timeout: float = 120) -> bool:
    """Whether the group's committed offsets reach ``end`` within ``timeout`` (checked, not timed)."""
    admin = AIOKafkaAdminClient(**conn.client_kwargs())
    await admin.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                offsets = await admin.list_consumer_group_offsets(group, partitions=list(end))
            except KafkaError:  # a busy broker now and then; ask again
                await asyncio.sleep(1)
                continue
            if all(offsets.get(tp) is not None and offsets[tp].offset >= o for tp, o in end.items()):
                return True
            await asyncio.sleep(0.5)
        return False
    finally:
        await admin.close()


def sink_batches(port: int) -> str:
    """Batch count, mean size and mean latency from the sink's /metrics."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError as exc:
        return f"(no metrics: {exc})"
    m = {k: float(v) for k, v in (line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))}
    n = m.get("sink_batch_size_records_count", 0)
    if not n:
        return "no batches"
    size, latency = m["sink_batch_size_records_sum"] / n, m["sink_batch_latency_seconds_sum"] / n
    stages = ", ".join(f"{stage} {m[key]:.1f}s" for stage in STAGES if (key := f'sink_stage_seconds_total{{stage="{stage}"}}') in m)
    return f"{n:.0f} batches, mean {size:.0f} records, mean write+commit {latency:.2f}s; time per stage: {stages}"


async def run_sink(
    conn: KafkaConnection, topic: str, collection: str, end: dict[TopicPartition, int], last_ids: list[str], log: Path, inflight: int
) -> tuple[float, float]:
    group = f"{collection}_group"
    env = {
        **os.environ,
        "SINK_MAX_INFLIGHT_BATCHES": str(inflight),
        "SINK_TOPIC": topic,
        "SINK_GROUP_ID": group,
        "SINK_DLQ_TOPIC": f"{topic}.dlq",
        "MONGODB_DATABASE": DATABASE,
        "MONGODB_COLLECTION": collection,
        "SINK_HTTP_HOST": "127.0.0.1",
        "SINK_HTTP_PORT": str(port := free_port()),
    }
    with log.open("wb") as out:
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "sink"], env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)  # noqa: ASYNC220
        try:
            t1, _ = await wait_done(os.environ["MONGODB_URI"], collection, conn, group, end, last_ids, proc, timeout=3600)
            rss = peak_rss_mib(proc.pid)
            print(f"    offsets committed to the end: {await wait_committed(conn, group, end)}", flush=True)
            print(f"    sink process CPU: {cpu_seconds(proc.pid):.1f}s; {sink_batches(port)}", flush=True)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
    return t1 - t0, rss


async def run_connector(
    conn: KafkaConnection,
    topic: str,
    collection: str,
    uri: str,
    end: dict[TopicPartition, int],
    last_ids: list[str],
    tasks: int,
    log: Path,
    mode: str,
    batch: int,
    timeout: float,
) -> tuple[float, int]:
    """Seconds from start until done, and how many records were done (all, or fewer at ``timeout``)."""
    spec = SinkConnector(topic, DATABASE, collection, uri, tasks=tasks, mode=mode, batch=batch)
    with connect_standalone(conn, spec, log) as worker:
        group = f"connect-{worker.name}"
        t1, done = await wait_done(uri, collection, conn, group, end, last_ids, worker.proc, timeout=timeout, failed=worker.failure)
        if done >= sum(end.values()):
            print(f"    offsets committed to the end: {await wait_committed(conn, group, end)}", flush=True)
    return t1 - worker.started, done
