"""How fast the live service counts, and how far behind it runs at a steady 5 k events/s.

Against the local stack (3 brokers, SASL, RF 3), on a fresh 6-partition topic:

1. backlog: ``--backlog`` events already on the topic; a fresh ``python -m live`` counts them
   all (both windowed tables, changelog writes, offset commits). events/s = backlog / time from
   the first event seen to the last.
   Peer, same run, same events: a bare aiokafka consumer (read_committed, no group) counting the
   same windows in a dict, no changelog, no commits: the ceiling of Python + aiokafka here.
2. steady: ``--rate`` events/s produced for ``--seconds`` while the app runs; sampled every
   second: processing lag (events produced − events the app has consumed) and committed-offset
   lag (``GET /lag``: the topic's last stable offsets − the group's committed offsets; includes
   up to ``LIVE_COMMIT_INTERVAL_S`` of events by construction).
3. peak RSS (VmHWM) of the live process and of the peer process; counted views == produced views.

    ./pipeline stack up && .venv/bin/python -m bench.live_throughput --backlog 200000 --rate 5000 --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.probes import free_port, load_stack_env, peak_rss_mib

REPO = Path(__file__).resolve().parent.parent
PARTITIONS = 6
VIEW = "view_product_detail"
OTHER = ("add_to_cart_action", "select_product_option", "view_listing_page")


def event(i: int, rng: random.Random, ts: float) -> dict[str, Any]:
    return {
        "event_id": f"bench-{i}",
        "collection": VIEW if rng.random() < 0.8 else rng.choice(OTHER),
        "event_time": datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "product_id": str(int(rng.paretovariate(1.1)) % 2000 + 100000),
        "store_id": str(rng.randint(1, 85)),
        "device_id": f"d{rng.randrange(20000)}",
        "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/81.0 Safari/537.36",
        "current_url": f"https://www.glamira.de/glamira-ring-{rng.randint(1, 5000)}.html?alloy=white-585",
        "referrer_url": rng.choice(["https://www.google.com/", "", "https://www.facebook.com/"]),
        "source_topic": "product_views",
        "source_partition": 0,
        "source_offset": i,
        "bridged_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
    }


def kafka_kwargs() -> dict[str, Any]:
    from shared.settings import local_kafka_from_env

    return local_kafka_from_env().client_kwargs()


async def produce_backlog(topic: str, n: int, seed: int) -> int:
    rng = random.Random(seed)
    start = time.time() - 50 * 60
    producer = AIOKafkaProducer(**kafka_kwargs(), acks="all", enable_idempotence=True, linger_ms=20, max_batch_size=262_144)
    await producer.start()
    views = 0
    try:
        for i in range(n):
            ev = event(i, rng, start + 45 * 60 * i / n)
            views += ev["collection"] == VIEW
            await producer.send(topic, orjson.dumps(ev), key=ev["device_id"].encode())
        await producer.flush()
    finally:
        await producer.stop()
    return views


def rate_payloads(rate: int, seconds: float, seed: int, start: float) -> tuple[list[tuple[bytes, bytes]], int]:
    """Serialized (key, value) pairs for the steady phase, made before it starts so the producer
    spends its CPU on sending; event times are when each will be sent."""
    rng = random.Random(seed)
    out, views = [], 0
    for i in range(int(rate * seconds)):
        ev = event(10_000_000 + i, rng, start + i / rate)
        views += ev["collection"] == VIEW
        out.append((ev["device_id"].encode(), orjson.dumps(ev)))
    return out, views


async def produce_at_rate(topic: str, rate: int, payloads: list[tuple[bytes, bytes]], produced: list[int]) -> None:
    """Sends ``payloads`` at ``rate`` per second in 20 ms ticks; ``produced[0]``: acked so far."""
    producer = AIOKafkaProducer(**kafka_kwargs(), acks="all", enable_idempotence=True, linger_ms=5, max_batch_size=262_144)
    await producer.start()
    i, tick = 0, 0.02
    t0 = time.monotonic()
    try:
        while i < len(payloads):
            elapsed = time.monotonic() - t0
            due = min(len(payloads), int(rate * elapsed) + 1)
            batch = [await producer.send(topic, value, key=key) for key, value in payloads[i:due]]
            i = max(i, due)
            if batch:
                await asyncio.gather(*batch)
                produced[0] = i
            await asyncio.sleep(max(0.0, tick - (time.monotonic() - t0 - elapsed)))
        await producer.flush()
        produced[0] = i
    finally:
        await producer.stop()


async def peer_count(topic: str, n: int) -> dict[str, Any]:
    """The bare-aiokafka peer: read everything, count per (product|store, minute) in dicts."""
    consumer = AIOKafkaConsumer(**kafka_kwargs(), isolation_level="read_committed", enable_auto_commit=False, max_poll_records=5000)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        by_product: dict[tuple[str, int], int] = {}
        by_store: dict[tuple[str, int], int] = {}
        seen = 0
        t0 = None
        while seen < n:
            batch = await consumer.getmany(timeout_ms=1000)
            if t0 is None and batch:
                t0 = time.monotonic()
            for msgs in batch.values():
                for m in msgs:
                    seen += 1
                    ev = orjson.loads(m.value)
                    if ev.get("collection") != VIEW:
                        continue
                    minute = int(datetime.fromisoformat(ev["event_time"]).timestamp()) // 60
                    by_product[ev["product_id"], minute] = by_product.get((ev["product_id"], minute), 0) + 1
                    by_store[ev["store_id"], minute] = by_store.get((ev["store_id"], minute), 0) + 1
        elapsed = time.monotonic() - (t0 or time.monotonic())
        return {
            "events_s": n / elapsed,
            "views": sum(by_product.values()),
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    finally:
        await consumer.stop()


def lag_slope(samples: list[int]) -> float:
    """Least-squares slope of one-per-second lag samples, events/s: ~0 when the app keeps up."""
    n = len(samples)
    if n < 2:
        return 0.0
    mean_x, mean_y = (n - 1) / 2, sum(samples) / n
    num = sum((x - mean_x) * (y - mean_y) for x, y in enumerate(samples))
    return num / sum((x - mean_x) ** 2 for x in range(n))


async def get(client: httpx.AsyncClient, path: str, **params: Any) -> Any:
    response = await client.get(path, params=params)
    response.raise_for_status()
    return response.json()


async def events_seen(client: httpx.AsyncClient) -> int:
    """The process's ``live_events_total`` from ``/metrics``: polling ``/api/live`` instead would
    make the app sum its whole tables (top-N over every window) several times a second."""
    response = await client.get("/metrics")
    response.raise_for_status()
    for line in response.text.splitlines():
        if line.startswith("live_events_total "):
            return int(float(line.split()[1]))
    return 0


async def main(args: argparse.Namespace) -> None:
    logging.getLogger("aiokafka.conn").setLevel(logging.ERROR)  # "username and password in the clear": the local stack
    load_stack_env()
    from shared.kafka import create_topics
    from shared.settings import local_kafka_from_env

    load_start = os.getloadavg()
    topic = f"bench_live_{uuid.uuid4().hex[:8]}"
    await create_topics(local_kafka_from_env(), [topic], partitions=PARTITIONS, replication_factor=3)
    await asyncio.sleep(2)  # topic metadata on every broker
    t = time.monotonic()
    backlog_views = await produce_backlog(topic, args.backlog, seed=1)
    print(f"backlog: {args.backlog} events ({backlog_views} views) produced in {time.monotonic() - t:.1f}s", flush=True)

    peer = subprocess.run(
        [sys.executable, "-m", "bench.live_throughput", "--peer", topic, "--backlog", str(args.backlog)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    peer_result = json.loads(peer.stdout.strip().splitlines()[-1])

    port = free_port()
    env = dict(os.environ) | {
        "LIVE_LOCAL_TOPIC": topic,
        "LIVE_APP_ID": topic,
        "LIVE_HTTP_PORT": str(port),
        "LIVE_HTTP_HOST": "127.0.0.1",
        "LIVE_DATA_DIR": tempfile.mkdtemp(prefix="bench-live-"),
        "LIVE_LOG_LEVEL": "WARNING",
    }
    log = open(Path(env["LIVE_DATA_DIR"]) / "live.log", "wb")  # noqa: SIM115 - the child writes to it until the end
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "live", cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    rows: list[tuple[str, str]] = []
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            t_start = time.monotonic()
            first_seen = None
            while True:
                try:
                    seen = await events_seen(client)
                except httpx.HTTPError:
                    seen = 0
                now = time.monotonic()
                if seen and first_seen is None:
                    first_seen = (now, seen)
                if seen >= args.backlog:
                    break
                assert proc.returncode is None, "live exited"
                assert now - t_start < 900, f"backlog not counted in 15 min: {seen}"
                await asyncio.sleep(0.2)
            assert first_seen is not None
            live_rate = (args.backlog - first_seen[1]) / (now - first_seen[0])
            rows.append(("backlog: live (faust) events/s", f"{live_rate:,.0f}"))
            rows.append(("backlog: peer (bare aiokafka dict count) events/s", f"{peer_result['events_s']:,.0f}"))
            rows.append(("live / peer", f"{live_rate / peer_result['events_s']:.2f}"))
            print(f"backlog counted: live {live_rate:,.0f} events/s, peer {peer_result['events_s']:,.0f} events/s", flush=True)

            # Steady rate.
            payloads, rate_views = rate_payloads(args.rate, args.seconds, seed=2, start=time.time() + 1)
            produced = [0]
            producing = asyncio.create_task(produce_at_rate(topic, args.rate, payloads, produced))
            processing_lag: list[int] = []
            committed_lag: list[int] = []
            t0 = time.monotonic()
            while not producing.done():
                await asyncio.sleep(1.0)
                seen = await events_seen(client) - args.backlog
                processing_lag.append(max(0, produced[0] - seen))
                committed_lag.append((await get(client, "/lag"))["lag"])
            await producing
            achieved = produced[0] / (time.monotonic() - t0)
            # Drain (bounded), then check the counts.
            deadline = time.monotonic() + args.drain_timeout
            drained = False
            while time.monotonic() < deadline:
                if (await get(client, "/lag"))["lag"] == 0:
                    drained = True
                    break
                await asyncio.sleep(0.5)
            windows = (await get(client, "/api/views/stores", start="2000-01-01T00:00:00Z", end="2100-01-01T00:00:00Z"))["windows"]
            counted = sum(sum(w["counts"].values()) for w in windows)
            live_rss = peak_rss_mib(proc.pid)

            def pct(xs: list[int], q: float) -> int:
                return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))]

            rows.append((f"steady: target / achieved produce rate (events/s, {args.seconds:.0f}s)", f"{args.rate:,} / {achieved:,.0f}"))
            rows.append(
                (
                    "steady: processing lag p50 / p95 / max (events)",
                    f"{pct(processing_lag, 0.5)} / {pct(processing_lag, 0.95)} / {max(processing_lag)}",
                )
            )
            rows.append(("steady: processing lag max (seconds at the achieved rate)", f"{max(processing_lag) / achieved:.2f}"))
            tenth = max(1, len(processing_lag) // 6)
            first, last = processing_lag[:tenth], processing_lag[-tenth:]
            rows.append(
                (
                    f"steady: processing lag mean, first / last {tenth} s (events); trend (events/s)",
                    f"{sum(first) / len(first):,.0f} / {sum(last) / len(last):,.0f}; {lag_slope(processing_lag):+,.0f}",
                )
            )
            rows.append(("steady: committed-offset lag p50 / max (events)", f"{pct(committed_lag, 0.5)} / {max(committed_lag)}"))
            rows.append(("peak RSS live process (MB)", f"{live_rss:.0f}"))
            rows.append(("peak RSS peer process (MB)", f"{peer_result['rss_mb']:.0f}"))
            expected = backlog_views + rate_views
            if drained:
                rows.append(("views counted / produced", f"{counted} / {expected} {'OK' if counted == expected else 'MISMATCH'}"))
            else:
                rows.append(("views counted / produced", f"{counted} / {expected}: not drained within {args.drain_timeout:.0f}s"))
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout=30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log.close()
    load_end = os.getloadavg()
    loads = "; ".join(" ".join(f"{x:.1f}" for x in load) for load in (load_start, load_end))
    rows.append(("load average 1/5/15 min at start; at end", loads))
    width = max(len(k) for k, _ in rows)
    print(f"\nlive throughput, topic {topic} ({PARTITIONS} partitions, RF 3, SASL), {os.cpu_count()} CPUs")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backlog", type=int, default=200_000)
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--drain-timeout", type=float, default=120)
    parser.add_argument("--peer", metavar="TOPIC", help=argparse.SUPPRESS)
    cli = parser.parse_args()
    if cli.peer:
        logging.getLogger("aiokafka.conn").setLevel(logging.ERROR)
        load_stack_env()
        print(json.dumps(asyncio.run(peer_count(cli.peer, cli.backlog))))
    else:
        asyncio.run(main(cli))
