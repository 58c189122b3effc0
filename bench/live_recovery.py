"""How long the live service takes to be ready, with exact counters, after a kill -9, by recovery
option (``LIVE_RECOVERY``), on the same state in the same run.

Against the local stack (3 brokers, SASL, RF 3), on a fresh 6-partition topic:

1. fill: ``--minutes`` × 60 × ``--rate`` events produced as fast as the producer goes, their
   event times spread at random over the last ``--minutes`` minutes (so the live service writes
   about one changelog record per view and table, as it does at that rate in real time, instead
   of the few a time-ordered backlog gives), counted by ``python -m live`` (``LIVE_RECOVERY=snapshot``);
   the counts per window and product / store are checked against the bench's own count;
2. tail: once the view wrote a snapshot, ``--rate`` × ``LIVE_SNAPSHOT_INTERVAL_S`` more events
   (one snapshot interval of traffic, the most a snapshot can be behind), counted; then kill -9;
3. each option in ``--options``: a new process on the same app id and data dir, timed from its
   start to ``/ready`` == 200 and to counts equal to the bench's count (exact, every window, both
   tables); its ``/metrics`` say what it replayed (``live_view_start_replayed_records``,
   ``live_table_recovery_replayed_records``); then kill -9 again. ``replay`` is today's path
   (before this change); past ``--replay-timeout`` it is stopped and its time extrapolated from
   its replay rate.

    ./pipeline stack up && .venv/bin/python -m bench.live_recovery --minutes 60 --rate 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.live_throughput import VIEW, event, kafka_kwargs
from bench.probes import free_port, load_stack_env, peak_rss_mib

REPO = Path(__file__).resolve().parent.parent
PARTITIONS = 6
RESULT = REPO / "bench" / "results" / "live_recovery.json"

Counts = dict[str, Counter[tuple[str, str]]]  # table -> (window start ISO, id) -> count


def iso_minute(ts: float) -> str:
    return datetime.fromtimestamp(ts - ts % 60, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def produce(topic: str, n: int, seed: int, lo: float, hi: float, counts: Counts, first_id: int) -> None:
    """``n`` events with event times uniform in ``[lo, hi)``; adds their views to ``counts``."""
    rng = random.Random(seed)
    producer = AIOKafkaProducer(**kafka_kwargs(), acks="all", enable_idempotence=True, linger_ms=20, max_batch_size=262_144)
    await producer.start()
    try:
        for i in range(n):
            ev = event(first_id + i, rng, lo + rng.random() * (hi - lo))
            if ev["collection"] == VIEW:
                minute = iso_minute(datetime.fromisoformat(ev["event_time"]).timestamp())
                counts["products"][minute, ev["product_id"]] += 1
                counts["stores"][minute, ev["store_id"]] += 1
            await producer.send(topic, orjson.dumps(ev), key=ev["device_id"].encode())
        await producer.flush()
    finally:
        await producer.stop()


async def changelog_records(app_id: str) -> int:
    """Offsets in both changelog topics (end − start, every partition): what a full replay reads."""
    consumer = AIOKafkaConsumer(**kafka_kwargs())
    await consumer.start()
    try:
        tps = [TopicPartition(f"{app_id}-{t}-changelog", p) for t in ("views_per_product", "views_per_store") for p in range(PARTITIONS)]
        ends, starts = await consumer.end_offsets(tps), await consumer.beginning_offsets(tps)
        return sum(ends[tp] - starts[tp] for tp in tps)
    finally:
        await consumer.stop()


class Live:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.url = f"http://127.0.0.1:{env['LIVE_HTTP_PORT']}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def start(self, **extra: str) -> Live:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "live"], cwd=REPO, env=self.env | extra, stdout=out, stderr=subprocess.STDOUT
            )
        self.started = time.monotonic()
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    async def get(self, client: httpx.AsyncClient, path: str, **params: Any) -> Any:
        response = await client.get(self.url + path, params=params, timeout=60)
        response.raise_for_status()
        return response.json() if "json" in response.headers.get("content-type", "") else response.text

    async def metrics(self, client: httpx.AsyncClient) -> dict[str, float]:
        text = await self.get(client, "/metrics")
        return {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line.startswith("live_") and " " in line}

    async def wait_ready(self, client: httpx.AsyncClient, timeout: float) -> float | None:
        """Seconds from start to /ready 200; None after ``timeout``."""
        while time.monotonic() - self.started < timeout:
            assert self.proc is not None and self.proc.poll() is None, "live exited: " + self.log.read_text()[-2000:]
            try:
                if (await client.get(self.url + "/ready", timeout=5)).status_code == 200:
                    return time.monotonic() - self.started
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
        return None

    async def wait_lag_zero(self, client: httpx.AsyncClient, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if (await self.get(client, "/lag"))["lag"] == 0:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(1)
        raise SystemExit(f"live not caught up after {timeout:.0f}s")

    async def counts(self, client: httpx.AsyncClient) -> Counts:
        out: Counts = {}
        for table in ("products", "stores"):
            body = await self.get(client, f"/api/views/{table}", start="2000-01-01T00:00:00Z", end="2100-01-01T00:00:00Z")
            out[table] = Counter({(w["window_start"], ident): n for w in body["windows"] for ident, n in w["counts"].items()})
        return out


def mismatch(got: Counts, want: Counts) -> int:
    """Entries (window, id) whose count differs, both tables."""
    return sum(len(set(got[t]) ^ set(want[t])) + sum(got[t][k] != want[t][k] for k in set(got[t]) & set(want[t])) for t in want)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    logging.getLogger("aiokafka.conn").setLevel(logging.ERROR)  # "username and password in the clear": the local stack
    load_stack_env()
    from shared.kafka import create_topics
    from shared.settings import local_kafka_from_env

    load_start = os.getloadavg()
    topic = f"bench_recovery_{uuid.uuid4().hex[:8]}"
    await create_topics(local_kafka_from_env(), [topic], partitions=PARTITIONS, replication_factor=3)
    await asyncio.sleep(2)
    data_dir = Path(tempfile.mkdtemp(prefix="bench-live-recovery-"))
    env = dict(os.environ) | {
        "LIVE_LOCAL_TOPIC": topic,
        "LIVE_APP_ID": topic,
        "LIVE_HTTP_PORT": str(free_port()),
        "LIVE_HTTP_HOST": "127.0.0.1",
        "LIVE_DATA_DIR": str(data_dir),
        "LIVE_LOG_LEVEL": "INFO",
        "LIVE_SNAPSHOT_INTERVAL_S": str(args.snapshot_interval),
        "LIVE_ETL_API_URL": "",
    }
    want: Counts = {"products": Counter(), "stores": Counter()}
    n = int(args.minutes * 60 * args.rate)
    now = time.time()
    t = time.monotonic()
    await produce(topic, n, 1, now - args.minutes * 60, now - 60, want, 0)
    produce_s = time.monotonic() - t
    print(f"fill: {n:,} events produced in {produce_s:.0f}s", flush=True)
    result: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "minutes": args.minutes,
        "rate": args.rate,
        "events": n,
        "snapshot_interval_s": args.snapshot_interval,
        "options": {},
    }
    live = Live(env, data_dir / "live.log")
    async with httpx.AsyncClient() as client:
        try:
            live.start(LIVE_RECOVERY="snapshot")
            t = time.monotonic()
            await live.wait_ready(client, 300)
            await live.wait_lag_zero(client, args.fill_timeout)
            result["fill_count_s"] = round(time.monotonic() - t, 1)
            got = await live.counts(client)
            bad = mismatch(got, want)
            print(f"fill counted in {result['fill_count_s']}s; mismatching entries {bad}", flush=True)
            result["fill_exact"] = bad == 0
            result["live_rss_mb_fill"] = round(peak_rss_mib(live.proc.pid if live.proc else 0))
            # tail: one snapshot interval of traffic after a snapshot
            snap = data_dir / f"{topic}.view-snapshot.json"
            before = snap.stat().st_mtime if snap.exists() else 0.0
            for _ in range(int(4 * args.snapshot_interval) + 20):  # the next snapshot after the fill
                if snap.exists() and snap.stat().st_mtime != before:
                    break
                await asyncio.sleep(0.5)
            tail = int(args.rate * args.snapshot_interval)
            await produce(topic, tail, 2, time.time() - 120, time.time() - 60, want, n)
            await live.wait_lag_zero(client, 300)
            m = await live.metrics(client)
            result["snapshot_bytes"] = int(m.get("live_view_snapshot_bytes", 0))
            result["snapshot_write_s"] = round(m.get("live_view_snapshot_write_seconds", 0), 2)
            result["tail_events"] = tail
            live.kill()
            result["changelog_records"] = await changelog_records(topic)
            result["state_entries"] = sum(len(c) for c in want.values())
            result["views"] = sum(want["stores"].values())
            print(
                f"changelog: {result['changelog_records']:,} records for {result['views']:,} views; "
                f"state {result['state_entries']:,} entries; snapshot {result['snapshot_bytes'] / 1e6:.1f} MB "
                f"written in {result['snapshot_write_s']}s",
                flush=True,
            )
            for option in args.options:
                live.start(LIVE_RECOVERY=option)
                timeout = args.replay_timeout if option == "replay" else 600
                ready = await live.wait_ready(client, timeout)
                row: dict[str, Any] = {"ready_s": round(ready, 1) if ready is not None else None}
                m = await live.metrics(client)
                row["view_replayed"] = int(m.get("live_view_start_replayed_records", 0))
                row["view_start_s"] = round(m.get("live_view_start_seconds", 0), 1)
                row["faust_replayed"] = int(m.get("live_table_recovery_replayed_records", 0))
                row["snapshot_loaded"] = bool(m.get("live_view_snapshot_restarts", 0))
                if ready is not None:
                    t = time.monotonic()
                    bad = mismatch(await live.counts(client), want)
                    row["exact_s"] = round(ready + time.monotonic() - t, 1)
                    row["exact"] = bad == 0
                else:
                    elapsed = time.monotonic() - live.started
                    done = row["faust_replayed"] + row["view_replayed"]
                    row["exact"] = None
                    row["note"] = f"not ready after {elapsed:.0f}s"
                    if row["faust_replayed"]:
                        # faust replays the changelog partitions of this process (all of them: one process)
                        rate = row["faust_replayed"] / max(1.0, elapsed - (row["view_start_s"] or 0))
                        row["faust_rate_records_s"] = round(rate)
                        row["ready_s_extrapolated"] = round(elapsed + (result["changelog_records"] - row["faust_replayed"]) / rate)
                    row["replayed_so_far"] = done
                row["rss_mb"] = round(peak_rss_mib(live.proc.pid if live.proc else 0))
                result["options"][option] = row
                print(f"{option}: {row}", flush=True)
                live.kill()
        finally:
            live.kill()
    base = result["options"].get("replay", {})
    base_s = base.get("ready_s") or base.get("ready_s_extrapolated")
    for row in result["options"].values():
        if base_s and row.get("ready_s"):
            row["ready_vs_replay"] = round(row["ready_s"] / base_s, 4)
    result["load_start_end"] = [round(x, 1) for x in load_start + os.getloadavg()]
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--snapshot-interval", type=float, default=30.0)
    parser.add_argument("--options", type=lambda s: s.split(","), default=["snapshot", "seed", "replay"])
    parser.add_argument("--replay-timeout", type=float, default=600)
    parser.add_argument("--fill-timeout", type=float, default=1800)
    parser.add_argument("--out", type=Path, default=RESULT)
    out = asyncio.run(main(parser.parse_args()))
    print(json.dumps(out, indent=2))
    parser.parse_args().out.write_text(json.dumps(out, indent=2) + "\n")
