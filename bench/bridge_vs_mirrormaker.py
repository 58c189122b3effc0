"""Benchmark: the bridge against Kafka MirrorMaker 2, copying the same events remote → local.

    .venv/bin/python -m bench.bridge_vs_mirrormaker [--events 1000000] [--partitions 6]
        [--latency-rate 5000 --latency-seconds 20] [--mm2-mode eos|default|skip]

Both copy one topic of generator events (Glamira shape, ~1 KB, no bad records) from the remote
cluster to the local one, in the same run, on the same clusters:

- the bridge: ``python -m bridge`` (exactly once: one transaction per partition batch);
- MirrorMaker 2 (``org.apache.kafka.connect.mirror.MirrorMaker``, dedicated mode, Kafka 3.9.1 jars
  from Maven Central via ``bench/bridge_mm2_pom.xml``), with ``exactly.once.source.support =
  enabled`` (``--mm2-mode eos``) or its default at-least-once mode.

Throughput is events/s seen by a ``read_committed`` consumer of the target topic: "total" from
process start to the last event, "steady" between 10 % and 90 % of the events. Latency (bridge
only) is the time a ``read_committed`` consumer of the target topic receives a record minus the
remote broker's append time (the latency source topic uses ``LogAppendTime``), at a fixed
produce rate; the bridge's own per-phase timings (``/metrics``) are printed with it.
Not a test: it prints a table and writes ``bench/results/bridge_vs_mirrormaker.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "services" / "bridge"))
sys.path.insert(0, str(REPO / "tools" / "eventgen"))

import eventgen  # noqa: E402
from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: E402
from bridge.producers import wait_for_leaders  # noqa: E402

from bench.peers.mirrormaker import mm2_argv, mm2_properties  # noqa: E402
from bench.probes import free_port, load_stack_env, peak_rss_mib, stop  # noqa: E402
from shared.kafka import KafkaConnection, create_topics  # noqa: E402

OUT = REPO / "bench" / "results"
BRIDGE_ENV: dict[str, str] = {}  # --bridge-env KEY=VALUE: settings to try (e.g. BRIDGE_LINGER_MS=1)


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


async def count_until(
    conn: KafkaConnection, topic: str, want: int, *, started: float, timeout_s: float, proc: subprocess.Popen[bytes]
) -> tuple[float, float]:
    """Counts committed records of ``topic`` until ``want``; returns (total seconds, steady events/s)."""
    deadline = time.monotonic() + timeout_s
    while True:  # the copier creates the target topic (a new client each time: fresh metadata)
        probe = AIOKafkaConsumer(**conn.client_kwargs())
        await probe.start()
        try:
            partitions = probe.partitions_for_topic(topic) if topic in await probe.topics() else None
        finally:
            await probe.stop()
        if partitions:
            break
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{topic} never appeared (copier exit code {proc.poll()})")
        await asyncio.sleep(1)
    consumer = AIOKafkaConsumer(
        **conn.client_kwargs(), enable_auto_commit=False, isolation_level="read_committed", auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        await wait_for_leaders(conn, [topic], timeout_s=60)
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        seen, t10, t90 = 0, 0.0, 0.0
        next_report = time.monotonic() + 15
        while seen < want:
            if time.monotonic() > next_report:
                print(f"  {topic}: {seen}/{want}", flush=True)
                next_report += 15
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{seen}/{want} copied when the copier exited ({proc.poll()}) or time ran out")
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


def spawn(argv: list[str], log: Path, env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)


def start_bridge(base: str, remote_topic: str, partitions: int, port: int, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    local_topic = f"{base}.bridge"
    env = {
        **os.environ,
        "BRIDGE_REMOTE_TOPIC": remote_topic,
        "BRIDGE_LOCAL_TOPIC": local_topic,
        "BRIDGE_DLQ_TOPIC": f"{base}.bridge.dlq",
        "BRIDGE_OFFSETS_TOPIC": f"{base}.bridge.offsets",
        "BRIDGE_GROUP_ID": f"{base}.bridge",
        "BRIDGE_LOCAL_PARTITIONS": str(partitions),
        "BRIDGE_HTTP_HOST": "127.0.0.1",
        "BRIDGE_HTTP_PORT": str(port),
        "PYTHONPATH": f"{REPO}:{REPO / 'services' / 'bridge'}",
        **BRIDGE_ENV,
    }
    return spawn([sys.executable, "-m", "bridge"], log, env, REPO), local_topic


async def bench_bridge(remote: KafkaConnection, local: KafkaConnection, base: str, topic: str, events: int, partitions: int) -> Run:
    run = Run("bridge (exactly once)", events)
    started = time.monotonic()
    proc, local_topic = start_bridge(base, topic, partitions, free_port(), OUT / f"{base}.bridge.log")
    try:
        run.total_s, run.steady_eps = await count_until(local, local_topic, events, started=started, timeout_s=1800, proc=proc)
        run.peak_rss_mb = peak_rss_mib(proc.pid)
    finally:
        stop(proc)
    return run


async def bench_mm2(remote: KafkaConnection, local: KafkaConnection, base: str, topic: str, events: int, partitions: int, eos: bool) -> Run:
    run = Run(f"MirrorMaker 2 ({'exactly.once.source.support=enabled' if eos else 'default, at least once'})", events)
    src, dst = f"src{base[-6:]}", f"dst{base[-6:]}"
    props = OUT / f"{base}.mm2.properties"
    props.write_text(mm2_properties(remote, local, src, dst, topic, partitions, eos))
    props.chmod(0o600)
    argv = mm2_argv(props, dst, OUT)
    log = OUT / f"{base}.mm2.log"
    started = time.monotonic()
    proc = spawn(argv, log, os.environ.copy(), OUT)
    try:
        run.total_s, run.steady_eps = await count_until(local, f"{src}.{topic}", events, started=started, timeout_s=1800, proc=proc)
        run.peak_rss_mb = peak_rss_mib(proc.pid)
    finally:
        stop(proc)
        props.unlink(missing_ok=True)  # holds the SASL passwords
    return run


async def bench_latency(remote: KafkaConnection, local: KafkaConnection, base: str, rate: float, seconds: float, partitions: int) -> Run:
    """The bridge at a fixed produce rate: p50/p99 of target receive time − remote timestamp."""
    topic = f"{base}.latency"
    count = int(rate * seconds)
    run = Run(f"bridge latency at {rate:.0f} ev/s", count)
    # The remote broker stamps each record when it appends it (LogAppendTime), so latency runs
    # from the remote append, not from whenever the generator's producer built its batch.
    await create_topics(remote, [topic], partitions=partitions, replication_factor=1, configs={"message.timestamp.type": "LogAppendTime"})
    port = free_port()
    proc, local_topic = start_bridge(base + "l", topic, partitions, port, OUT / f"{base}.latency.log")
    consumer = AIOKafkaConsumer(**local.client_kwargs(), enable_auto_commit=False, isolation_level="read_committed")
    try:
        await asyncio.sleep(8)  # joined and idle
        await consumer.start()
        await consumer.topics()
        tps = [TopicPartition(local_topic, p) for p in sorted(consumer.partitions_for_topic(local_topic) or ())]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        received: dict[tuple[int, int], float] = {}
        records = eventgen.generate(count, seed=11)
        producing = asyncio.create_task(eventgen.produce(records, remote, topic, rate=rate, progress=False, partitions=partitions))
        deadline = time.monotonic() + seconds + 120
        while len(received) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            now_ms = time.time() * 1000
            for records in batch.values():
                for record in records:
                    event = json.loads(record.value)
                    received[(event["source_partition"], event["source_offset"])] = now_ms
        await producing
        run.peak_rss_mb = peak_rss_mib(proc.pid)
        run.profile = await bridge_profile(port)
    finally:
        await consumer.stop()
        stop(proc)
    # remote timestamps of the same records
    source = AIOKafkaConsumer(**remote.client_kwargs(), enable_auto_commit=False)
    await source.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        source.assign(tps)
        await source.seek_to_beginning(*tps)
        ends = await source.end_offsets(tps)
        stamps: dict[tuple[int, int], int] = {}
        while [tp for tp in tps if await source.position(tp) < ends[tp]]:
            for tp, records in (await source.getmany(timeout_ms=500, max_records=10_000)).items():
                for record in records:
                    stamps[(tp.partition, record.offset)] = record.timestamp
    finally:
        await source.stop()
    run.latencies_ms = sorted(received[k] - stamps[k] for k in received if k in stamps)
    run.note = f"{len(received)}/{count} received"
    return run


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


def percentile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--latency-rate", type=float, default=5000)
    parser.add_argument("--latency-seconds", type=float, default=20)
    parser.add_argument("--mm2-mode", choices=("eos", "default", "skip"), default="eos")
    parser.add_argument("--latency-only", action="store_true", help="only the fixed-rate latency run (no throughput runs)")
    parser.add_argument("--bridge-env", action="append", default=[], metavar="KEY=VALUE", help="a bridge setting to try (repeatable)")
    args = parser.parse_args()
    BRIDGE_ENV.update(dict(kv.split("=", 1) for kv in args.bridge_env))
    load_stack_env()
    from shared.settings import local_kafka_from_env, remote_kafka_from_env

    remote, local = remote_kafka_from_env(), local_kafka_from_env()
    OUT.mkdir(parents=True, exist_ok=True)
    base = f"bench_bridge_{uuid.uuid4().hex[:6]}"
    topic = f"{base}.source"
    load_before = os.getloadavg()
    runs: list[Run] = []
    if not args.latency_only:
        t0 = time.monotonic()
        records = eventgen.generate(args.events, seed=42)
        manifest = await eventgen.produce(records, remote, topic, progress=False, partitions=args.partitions)
        print(f"produced {manifest.total} events to {topic} in {time.monotonic() - t0:.0f}s", flush=True)
        runs.append(await bench_bridge(remote, local, base, topic, args.events, args.partitions))
        print(f"bridge: {runs[0].total_eps:.0f} ev/s total, {runs[0].steady_eps:.0f} steady", flush=True)
    if args.mm2_mode != "skip" and not args.latency_only:
        try:
            runs.append(await bench_mm2(remote, local, base, topic, args.events, args.partitions, eos=args.mm2_mode == "eos"))
        except RuntimeError as exc:
            print(f"MirrorMaker 2 ({args.mm2_mode}) failed: {exc}; see {OUT}/{base}.mm2.log", flush=True)
    latency = await bench_latency(remote, local, base, args.latency_rate, args.latency_seconds, args.partitions)

    print()
    print(f"{'copier':58} {'events':>9} {'total ev/s':>11} {'steady ev/s':>12} {'peak RSS MB':>12}")
    for run in runs:
        print(f"{run.name:58} {run.events:>9} {run.total_eps:>11.0f} {run.steady_eps:>12.0f} {run.peak_rss_mb:>12.0f}")
    if len(runs) == 2 and runs[1].steady_eps:
        total, steady = runs[0].total_eps / runs[1].total_eps, runs[0].steady_eps / runs[1].steady_eps
        print(f"ratio bridge / MirrorMaker 2: total {total:.2f}x, steady {steady:.2f}x")
    lat = latency.latencies_ms
    worst = lat[-1] if lat else float("nan")
    print(
        f"{latency.name}: p50 {percentile(lat, 0.5):.0f} ms, p99 {percentile(lat, 0.99):.0f} ms, max {worst:.0f} ms "
        f"({latency.note}); peak RSS {latency.peak_rss_mb:.0f} MB; settings {BRIDGE_ENV or 'default'}"
    )
    print("  bridge's own timings (ms; p50/p99 are histogram bucket bounds):")
    for name, p in latency.profile.items():
        print(f"    {name:22} n={p['count']:>6.0f} mean {p['mean_ms']:>7.1f} p50 <= {p['p50_ms']:>6.0f} p99 <= {p['p99_ms']:>6.0f}")
    print(f"load average before {load_before}, after {os.getloadavg()}")
    result = {
        "events": args.events,
        "partitions": args.partitions,
        "runs": [{**asdict(r), "total_eps": r.total_eps, "latencies_ms": None} for r in runs],
        "latency": {
            "rate": args.latency_rate,
            "p50_ms": percentile(lat, 0.5),
            "p99_ms": percentile(lat, 0.99),
            "note": latency.note,
            "profile": latency.profile,
            "bridge_env": BRIDGE_ENV,
        },
        "load_average": {"before": load_before, "after": os.getloadavg()},
    }
    (OUT / "bridge_vs_mirrormaker.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
