"""The freshness benchmark's probes (:mod:`bench.freshness`): CPU and RSS of process trees from
``/proc``, the generator's expected views, the marker events and their append times, the star
schema's marker counts, and each marker's ingest lag (remote append → the sink's ``ingested_at``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer
from eventgen import GLAMIRA, SEED, GeneratedRecord, generate
from eventgen.catalog import BOT_AGENTS
from eventgen.now import restamp
from pymongo import AsyncMongoClient

from shared.event import DEFAULT_PRODUCT_VIEW_TYPES, SEED_COLLECTION
from shared.kafka import KafkaConnection

PARTITIONS = 6  # remote and local partitions; one marker per remote partition per second
TCK = os.sysconf("SC_CLK_TCK")
POLL_S = 0.5


# ---------------------------------------------------------------- processes: CPU and RSS


def proc_table() -> dict[int, tuple[int, int, float, str]]:
    """Every process: pid → (ppid, start time in ticks, user + system CPU seconds, comm)."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as fh:
                text = fh.read()
        except OSError:
            continue
        comm = text[text.find("(") + 1 : text.rfind(")")]
        f = text[text.rfind(")") + 2 :].split()
        table[int(entry.name)] = (int(f[1]), int(f[19]), (int(f[11]) + int(f[12])) / TCK, comm)
    return table


def descendants(table: dict[int, tuple[int, int, float, str]], root: int) -> list[int]:
    children: dict[int, list[int]] = defaultdict(list)
    for pid, row in table.items():
        children[row[0]].append(pid)
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


class TreeCpu(threading.Thread):
    """CPU seconds of every descendant of ``root`` (not ``root`` itself), sampled every
    ``interval`` s, per process (pid and start time); an exited process keeps its last sample."""

    def __init__(self, root: int, interval: float = 0.25) -> None:
        super().__init__(daemon=True, name="tree-cpu")
        self.root, self.interval = root, interval
        self.last: dict[tuple[int, int], tuple[float, str]] = {}
        self.lock = threading.Lock()
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            self.sample()
            self.halt.wait(self.interval)

    def sample(self) -> None:
        table = proc_table()
        with self.lock:
            for pid in descendants(table, self.root):
                _ppid, start, cpu, comm = table[pid]
                self.last[(pid, start)] = (cpu, comm)

    def total(self) -> tuple[float, dict[str, float]]:
        """Seconds so far, and by process name (``python``, ``java``, …)."""
        self.sample()
        by: dict[str, float] = defaultdict(float)
        with self.lock:
            for cpu, comm in self.last.values():
                by[comm] += cpu
        return sum(by.values()), dict(by)


def rss_mib(pid: int | None) -> float:
    """A process's resident set (``VmRSS``) in MiB; NaN when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return float("nan")


def driver_rss(worker_pid: int) -> tuple[float, float]:
    """The continuous worker's Python RSS and its Spark JVM child's, MiB."""
    table = proc_table()
    jvm = next((p for p, row in table.items() if row[0] == worker_pid and row[3] == "java"), None)
    return rss_mib(worker_pid), rss_mib(jvm) if jvm else float("nan")


# ---------------------------------------------------------------- the generator's events


def expected_views(count: int, seed: int) -> int:
    """Valid product views among the generator's ``count`` records (the same records ``python -m
    eventgen --count count --seed seed`` produces, kinds and visitors alike; only times differ)."""
    views = 0
    for record in generate(count, seed=seed):
        event = record.event or {}
        if record.kind == SEED:
            views += bool(event.get("product_id"))  # a seed-shape event is a view (SEED_COLLECTION); no user agent
        elif record.kind == GLAMIRA:
            views += (
                event.get("collection") in DEFAULT_PRODUCT_VIEW_TYPES
                and bool(event.get("product_id"))
                and event.get("user_agent") not in BOT_AGENTS
            )
    assert SEED_COLLECTION in DEFAULT_PRODUCT_VIEW_TYPES
    return views


def marker_template() -> GeneratedRecord:
    """A generated Glamira product view from a browser (not a crawler): the markers' shape."""
    for record in generate(1000, seed=7):
        event = record.event or {}
        if record.kind == GLAMIRA and event.get("collection") == "view_product_detail" and event.get("user_agent") not in BOT_AGENTS:
            return record
    raise RuntimeError("no product view among the generator's first 1000 records")


@dataclass
class Marker:
    product_id: str
    append_ms: int = 0
    timestamp_type: int = -1
    seen_at: float | None = None  # wall clock of the first poll that saw it counted

    @property
    def freshness_s(self) -> float | None:
        return None if self.seen_at is None else self.seen_at - self.append_ms / 1000


class Markers:
    """Sends marker events (one per remote partition) and remembers their append times."""

    def __init__(self, remote: KafkaConnection, topic: str, prefix: str) -> None:
        self.remote, self.topic, self.prefix = remote, topic, prefix
        self.template = marker_template()
        self.producer = AIOKafkaProducer(**remote.client_kwargs(), acks="all", enable_idempotence=True, linger_ms=0)
        self.all: dict[str, Marker] = {}

    async def start(self) -> None:
        await self.producer.start()

    async def close(self) -> None:
        await self.producer.stop()

    async def send_round(self, label: str) -> list[Marker]:
        now = time.time()
        sent = []
        for k in range(PARTITIONS):
            marker = Marker(f"{self.prefix}{label}-{k}")
            event = dict(restamp(self.template, now).event or {})
            event["_id"] = f"{str(event['_id'])[:8]}{uuid.uuid4().hex[:16]}"
            event["product_id"] = marker.product_id
            event["device_id"] = f"freshness-device-{k}"
            self.all[marker.product_id] = marker
            sent.append((marker, await self.producer.send(self.topic, orjson.dumps(event), key=event["device_id"].encode(), partition=k)))
        for marker, future in sent:
            metadata = await future
            marker.append_ms, marker.timestamp_type = metadata.timestamp, metadata.timestamp_type
        return [m for m, _ in sent]

    async def every_second(self, t0: float, seconds: int) -> list[Marker]:
        rounds = []
        for i in range(seconds):
            await asyncio.sleep(max(0.0, t0 + i - time.monotonic()))
            rounds.append(asyncio.ensure_future(self.send_round(f"{i:05d}")))
        return [m for r in await asyncio.gather(*rounds) for m in r]


class Star:
    """The run's star schema, read by the bench: marker counts and the total of view_count."""

    def __init__(self, dsn: str, schema: str, prefix: str) -> None:
        self.dsn, self.schema, self.prefix = dsn, schema, prefix
        self.conn: asyncpg.Connection | None = None
        self.lock = asyncio.Lock()  # one connection: the poller and the drain's total take turns
        self.twice: set[str] = set()

    async def start(self) -> None:
        self.conn = await asyncpg.connect(self.dsn)

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()

    async def total(self) -> int:
        assert self.conn is not None
        async with self.lock:
            return int(await self.conn.fetchval(f'SELECT coalesce(sum(view_count), 0) FROM "{self.schema}".fact_product_views'))

    async def poll(self, markers: dict[str, Marker]) -> None:
        assert self.conn is not None
        async with self.lock:
            t = time.time()
            rows = await self.conn.fetch(
                f'SELECT p.product_id, sum(f.view_count) AS n FROM "{self.schema}".fact_product_views f '
                f'JOIN "{self.schema}".dim_product p USING (product_key) WHERE starts_with(p.product_id, $1) GROUP BY 1',
                self.prefix,
            )
        for row in rows:
            marker = markers.get(row["product_id"])
            if marker is not None and marker.seen_at is None and row["n"] >= 1:
                marker.seen_at = t
            if row["n"] > 1:
                self.twice.add(row["product_id"])

    async def watch(self, markers: dict[str, Marker], halt: asyncio.Event) -> None:
        while not halt.is_set():
            t = time.monotonic()
            with contextlib.suppress(asyncpg.UndefinedTableError):
                await self.poll(markers)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(halt.wait(), max(0.0, POLL_S - (time.monotonic() - t)))


async def ingest_lags(uri: str, database: str, collection: str, markers: dict[str, Marker]) -> dict[str, float]:
    """Each stored marker's ingest lag, seconds: the sink's ``ingested_at`` of its document − its
    remote append time (bridge, local Kafka and sink together). The rest of its freshness is the
    ETL's: waiting for a micro-batch (or run) to start, and that batch's duration."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, serverSelectionTimeoutMS=10_000)
    try:
        found = client[database][collection].find({"product_id": {"$in": list(markers)}}, {"product_id": 1, "ingested_at": 1})
        out = {}
        async for doc in found:
            marker = markers.get(str(doc.get("product_id")))
            if marker is not None and isinstance(doc.get("ingested_at"), str):
                out[marker.product_id] = datetime.fromisoformat(doc["ingested_at"]).timestamp() - marker.append_ms / 1000
        return out
    finally:
        await client.close()
