"""How ``bench/bridge_vs_mirrormaker.py`` measures a remote → local copier, the same way for each:
throughput seen by a ``read_committed`` consumer of the target topic, and latency at a fixed
produce rate (target receive time minus the remote broker's append time).

A copier is a process started on a source topic that writes a target topic (:class:`Copier`):
the bridge, MirrorMaker 2 and the raw aiokafka copier (``bench/peers/raw_copier.py``). A record's
latency needs the same record on both sides: the bridge's events carry their remote
coordinates (``source_partition``, ``source_offset``); MirrorMaker 2 and the raw copier copy
the value byte for byte, so the value identifies it (every generated event has its own ``_id``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from bench.probes import peak_rss_mib, stop
from shared.kafka import KafkaConnection, create_topics, wait_for_leaders


def value_key(record: ConsumerRecord[bytes, bytes]) -> Hashable:
    """A record copied byte for byte is the one with the same value."""
    return hashlib.blake2b(record.value or b"", digest_size=16).digest()


def bridge_target_key(record: ConsumerRecord[bytes, bytes]) -> Hashable:
    """The bridge's event names the remote record it came from."""
    event = json.loads(record.value or b"{}")
    return (event["source_partition"], event["source_offset"])


def bridge_source_key(record: ConsumerRecord[bytes, bytes]) -> Hashable:
    return (record.partition, record.offset)


@dataclass
class Copier:
    """How to start one copier and recognize its copies: ``start(source topic, run tag)``
    returns its running processes (replicas of one consumer group, usually one) and the target
    topic it writes."""

    name: str
    start: Callable[[str, str], tuple[list[subprocess.Popen[bytes]], str]]
    source_key: Callable[[ConsumerRecord[bytes, bytes]], Hashable] = value_key
    target_key: Callable[[ConsumerRecord[bytes, bytes]], Hashable] = value_key
    port: int | None = None  # the bridge's (first replica's) HTTP port, for its own timings


def exited(procs: list[subprocess.Popen[bytes]]) -> int | None:
    """The exit code of the first replica that has exited, None while all run."""
    return next((code for p in procs if (code := p.poll()) is not None), None)


def peak_rss(procs: list[subprocess.Popen[bytes]]) -> float:
    """The replicas' peak RSS summed, MiB."""
    return sum(peak_rss_mib(p.pid) for p in procs)


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        stop(p)


@dataclass
class Run:
    name: str
    events: int
    total_s: float = 0.0
    steady_eps: float = 0.0
    peak_rss_mb: float = 0.0
    note: str = ""
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    profile: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def total_eps(self) -> float:
        return self.events / self.total_s if self.total_s else 0.0

    def latency(self) -> dict[str, float]:
        lat = self.latencies_ms
        return {"p50_ms": percentile(lat, 0.5), "p99_ms": percentile(lat, 0.99), "max_ms": lat[-1] if lat else float("nan")}


def percentile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


async def topic_partitions(conn: KafkaConnection, topic: str) -> set[int]:
    """The partitions of ``topic`` (empty when it does not exist), from a fresh client's metadata."""
    probe = AIOKafkaConsumer(**conn.client_kwargs())
    await probe.start()
    try:
        return set(probe.partitions_for_topic(topic) or ()) if topic in await probe.topics() else set()
    finally:
        await probe.stop()


async def wait_topic(conn: KafkaConnection, topic: str, procs: list[subprocess.Popen[bytes]], deadline: float) -> list[TopicPartition]:
    """Waits until the copier has created its target topic and every partition has a leader."""
    while not (partitions := await topic_partitions(conn, topic)):
        if exited(procs) is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{topic} never appeared (copier exit code {exited(procs)})")
        await asyncio.sleep(1)
    await wait_for_leaders(conn, [topic], timeout_s=60)
    return [TopicPartition(topic, p) for p in sorted(partitions)]


async def count_until(
    conn: KafkaConnection, topic: str, want: int, *, started: float, timeout_s: float, procs: list[subprocess.Popen[bytes]]
) -> tuple[float, float]:
    """Counts committed records of ``topic`` until ``want``; returns (total seconds, steady events/s)."""
    deadline = time.monotonic() + timeout_s
    tps = await wait_topic(conn, topic, procs, deadline)
    consumer = AIOKafkaConsumer(
        **conn.client_kwargs(), enable_auto_commit=False, isolation_level="read_committed", auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        seen, t10, t90 = 0, 0.0, 0.0
        next_report = time.monotonic() + 15
        while seen < want:
            if time.monotonic() > next_report:
                print(f"  {topic}: {seen}/{want}", flush=True)
                next_report += 15
            if exited(procs) is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{seen}/{want} copied when the copier exited ({exited(procs)}) or time ran out")
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            seen += sum(len(v) for v in batch.values())
            now = time.monotonic()
            if not t10 and seen >= want * 0.1:
                t10 = now
            if not t90 and seen >= want * 0.9:
                t90 = now
        return time.monotonic() - started, (want * 0.8) / (t90 - t10) if t90 > t10 else 0.0
    finally:
        await consumer.stop()


async def throughput(copier: Copier, local: KafkaConnection, topic: str, events: int, tag: str) -> Run:
    """``copier`` copies the ``events`` already on ``topic``, from its process start to the last one seen."""
    run = Run(copier.name, events)
    started = time.monotonic()
    procs, target = copier.start(topic, tag)
    try:
        run.total_s, run.steady_eps = await count_until(local, target, events, started=started, timeout_s=1800, procs=procs)
        run.peak_rss_mb = peak_rss(procs)
    finally:
        stop_all(procs)
    return run


async def latency(
    copier: Copier, remote: KafkaConnection, local: KafkaConnection, topic: str, tag: str, rate: float, count: int, partitions: int
) -> Run:
    """``copier`` on a fresh remote ``topic`` (``LogAppendTime``) while ``count`` generated events
    are produced to it at ``rate`` per second: per record, the time a ``read_committed`` consumer
    of the target receives it minus the remote broker's append time.

    Before the measured records, a few warm-up ones go through the copier and are awaited on the
    target: the copier is running (MirrorMaker 2 starts its tasks well after it creates the
    target topic), so the measured latency is a running copier's, not its start-up."""
    import eventgen

    run = Run(copier.name, count)
    # The remote broker stamps each record when it appends it (LogAppendTime), so latency runs
    # from the remote append, not from whenever the generator's producer built its batch.
    await create_topics(remote, [topic], partitions=partitions, replication_factor=1, configs={"message.timestamp.type": "LogAppendTime"})
    procs, target = copier.start(topic, tag)
    consumer = AIOKafkaConsumer(
        **local.client_kwargs(), enable_auto_commit=False, isolation_level="read_committed", auto_offset_reset="earliest"
    )
    try:
        tps = await wait_topic(local, target, procs, time.monotonic() + 180)
        await consumer.start()
        consumer.assign(tps)
        warmup = 4 * partitions
        await eventgen.produce(eventgen.generate(warmup, seed=7), remote, topic, progress=False, partitions=partitions)
        seen, deadline = 0, time.monotonic() + 180
        while seen < warmup:
            if exited(procs) is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{copier.name}: {seen}/{warmup} warm-up records copied (exit code {exited(procs)})")
            seen += sum(len(v) for v in (await consumer.getmany(timeout_ms=200)).values())
        received: dict[Hashable, float] = {}
        records = eventgen.generate(count, seed=11)
        producing = asyncio.ensure_future(eventgen.produce(records, remote, topic, rate=rate, progress=False, partitions=partitions))
        deadline = time.monotonic() + count / rate + 120
        while len(received) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            now_ms = time.time() * 1000
            for got in batch.values():
                for record in got:
                    received[copier.target_key(record)] = now_ms
        await producing
        run.peak_rss_mb = peak_rss(procs)
        if copier.port:
            run.profile = await bridge_profile(copier.port)
    finally:
        await consumer.stop()
        stop_all(procs)
    stamps = await source_stamps(remote, topic, partitions, copier.source_key)
    run.latencies_ms = sorted(received[k] - stamps[k] for k in received if k in stamps)
    run.note = f"{len(run.latencies_ms)}/{count} received"
    return run


async def source_stamps(
    remote: KafkaConnection, topic: str, partitions: int, key: Callable[[ConsumerRecord[bytes, bytes]], Hashable]
) -> dict[Hashable, int]:
    """The remote append time of every record of ``topic``, by ``key``."""
    source = AIOKafkaConsumer(**remote.client_kwargs(), enable_auto_commit=False)
    await source.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        source.assign(tps)
        await source.seek_to_beginning(*tps)
        ends = await source.end_offsets(tps)
        stamps: dict[Hashable, int] = {}
        while [tp for tp in tps if await source.position(tp) < ends[tp]]:
            for records in (await source.getmany(timeout_ms=500, max_records=10_000)).values():
                for record in records:
                    stamps[key(record)] = record.timestamp
        return stamps
    finally:
        await source.stop()


async def bridge_profile(port: int) -> dict[str, dict[str, float]]:
    """The bridge's own timings from ``/metrics``: per transaction phase and per record stage,
    the count, mean and (bucket upper bound) p50/p99, in milliseconds."""
    import httpx

    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    series: dict[str, dict[str, Any]] = {}
    for line in text.splitlines():
        for metric, label in (("bridge_transaction_phase_seconds", "phase"), ("bridge_record_age_seconds", "stage")):
            if not line.startswith(metric):
                continue
            name = line.split(f'{label}="', 1)[1].split('"', 1)[0]
            entry = series.setdefault(f"{label} {name}", {"buckets": []})
            value = float(line.rsplit(" ", 1)[1])
            if line.startswith(f"{metric}_bucket"):
                le = line.split('le="', 1)[1].split('"', 1)[0]
                entry["buckets"].append((float(le), value))
            elif line.startswith(f"{metric}_sum"):
                entry["sum"] = value
            elif line.startswith(f"{metric}_count"):
                entry["count"] = value
    out: dict[str, dict[str, float]] = {}
    for name, entry in series.items():
        count = entry.get("count", 0.0)
        if not count:
            continue

        def quantile(q: float, buckets: list[tuple[float, float]] = entry["buckets"], n: float = count) -> float:
            return next((le for le, c in sorted(buckets) if c >= q * n), float("inf")) * 1000

        out[name] = {"count": count, "mean_ms": entry["sum"] / count * 1000, "p50_ms": quantile(0.5), "p99_ms": quantile(0.99)}
    return out
