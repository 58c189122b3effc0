"""The live service under test: a real ``python -m live`` process against the local stack, and
deterministic local-topic events with an independent count of what the service must report."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from shared.event import DEFAULT_PRODUCT_VIEW_TYPES
from shared.kafka import KafkaConnection, create_topics
from tests.conftest import REPO

WINDOW_S = 60
PARTITIONS = 6
OTHER_COLLECTIONS = ("add_to_cart_action", "select_product_option", "view_listing_page", "product_detail_recommendation_visible")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def minute_floor(ts: float) -> int:
    return int(ts // WINDOW_S * WINDOW_S)


def make_events(count: int, *, start: float, span_s: float, seed: int, prefix: str = "e") -> list[dict[str, Any]]:
    """Local-topic events (the bridge's output shape), event times spread over ``[start, start+span_s)``.

    ~80 % product views over 40 products (skewed) and 9 stores (one view in 25 has no store_id),
    the rest other collections; time order is shuffled a little, as on a real topic.
    """
    rng = random.Random(seed)
    products = [f"p{i:03d}" for i in range(40)]
    weights = [1 / (i + 1) for i in range(40)]
    events = []
    for i in range(count):
        ts = start + span_s * i / count + rng.uniform(-20, 20)
        ts = min(max(ts, start), start + span_s - 0.001)
        event: dict[str, Any] = {
            "event_id": f"{prefix}{seed}-{i}",
            "collection": "view_product_detail" if rng.random() < 0.8 else rng.choice(OTHER_COLLECTIONS),
            "event_time": datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "product_id": rng.choices(products, weights)[0],
            "device_id": f"d{rng.randrange(300)}",
            "source_shape": "glamira",
        }
        if rng.random() >= 0.04:
            event["store_id"] = str(rng.choice([6, 7, 12, 25, 29, 41, 55, 61, 85]))
        events.append(event)
    return events


@dataclass
class Expected:
    """The independent count: ``{window start: Counter(id)}`` per table."""

    products: dict[int, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    stores: dict[int, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))

    @classmethod
    def of(cls, events: Iterable[dict[str, Any]], view_types: Iterable[str] = DEFAULT_PRODUCT_VIEW_TYPES) -> Expected:
        out, wanted = cls(), set(view_types)
        for event in events:
            if event["collection"] not in wanted:
                continue
            ws = minute_floor(datetime.fromisoformat(event["event_time"].replace("Z", "+00:00")).timestamp())
            out.products[ws][event["product_id"]] += 1
            out.stores[ws][event.get("store_id") or "unknown"] += 1
        return out

    @staticmethod
    def as_api(by_window: dict[int, Counter[str]]) -> list[dict[str, Any]]:
        """The shape of ``GET /api/views/...``'s ``windows``."""
        return [
            {"window_start": datetime.fromtimestamp(ws, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "counts": dict(sorted(by_window[ws].items()))}
            for ws in sorted(by_window)
            if by_window[ws]
        ]

    def top(self, last_window: int, minutes: int, n: int) -> list[dict[str, Any]]:
        total: Counter[str] = Counter()
        for ws, counts in self.products.items():
            if last_window + WINDOW_S - minutes * 60 <= ws <= last_window:
                total.update(counts)
        ranked = sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
        return [{"product_id": pid, "views": views} for pid, views in ranked]


async def produce(conn: KafkaConnection, topic: str, events: Iterable[dict[str, Any]], *, abort: bool = False) -> int:
    """Produces events keyed by device (as the bridge does); ``abort``: inside a transaction that is aborted."""
    kwargs: dict[str, Any] = {"transactional_id": f"{topic}-test-{os.getpid()}-{time.monotonic_ns()}"} if abort else {"acks": "all"}
    producer = AIOKafkaProducer(**conn.client_kwargs(), linger_ms=5, **kwargs)
    await producer.start()
    n = 0
    try:
        if abort:
            await producer.begin_transaction()
        for event in events:
            await producer.send(topic, orjson.dumps(event), key=event["device_id"].encode())
            n += 1
        if abort:
            await producer.abort_transaction()
        else:
            await producer.flush()
    finally:
        await producer.stop()
    return n


class LiveProcess:
    """One ``python -m live`` process with its own port, app id, topic and log file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env, self.log_path = env, log_path
        self.port = int(env["LIVE_HTTP_PORT"])
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LiveProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "live"], cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        return self

    async def get(self, path: str, **params: Any) -> Any:
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as client:
            response = await client.get(path, params=params)
            response.raise_for_status()
            return response.json() if "json" in response.headers.get("content-type", "") else response.text

    async def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=self.url, timeout=5) as client:
            while time.monotonic() < deadline:
                assert self.proc is not None and self.proc.poll() is None, f"live exited: {self.log_tail()}"
                try:
                    if (await client.get("/ready")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.3)
        raise AssertionError(f"live not ready after {timeout}s: {self.log_tail()}")

    async def wait_caught_up(self, timeout: float = 120) -> dict[str, Any]:
        """Until the group's committed offsets reach the topic's last stable offsets."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = await self.get("/lag")
                if last.get("lag") == 0:
                    return last
            except httpx.HTTPError as exc:
                last = exc
            await asyncio.sleep(0.5)
        raise AssertionError(f"live not caught up after {timeout}s: {last}; {self.log_tail()}")

    def stop(self, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


@dataclass
class LiveSetup:
    topic: str
    env: dict[str, str]
    tmp: Path
    processes: list[LiveProcess] = field(default_factory=list)

    def process(self, **overrides: str) -> LiveProcess:
        env = self.env | {k.upper(): v for k, v in overrides.items()}
        proc = LiveProcess(env, self.tmp / f"live-{len(self.processes)}.log")
        self.processes.append(proc)
        return proc


@pytest.fixture
async def live(unique_name: str, local_kafka: KafkaConnection, tmp_path: Path) -> AsyncIterator[LiveSetup]:
    """A fresh topic (6 partitions, RF 3) and the environment of a live process reading it."""
    await create_topics(local_kafka, [unique_name], partitions=PARTITIONS, replication_factor=3)
    env = dict(os.environ) | {
        "LIVE_LOCAL_TOPIC": unique_name,
        "LIVE_APP_ID": unique_name,
        "LIVE_HTTP_PORT": str(free_port()),
        "LIVE_HTTP_HOST": "127.0.0.1",
        "LIVE_DATA_DIR": str(tmp_path / "faust"),
        "LIVE_PG_SCHEMA": unique_name,
        "LIVE_LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    }
    setup = LiveSetup(unique_name, env, tmp_path)
    yield setup
    for proc in setup.processes:
        if proc.proc is not None and proc.proc.poll() is None:
            proc.kill()


@pytest.fixture
def recent_start() -> float:
    """A whole minute 25 minutes ago: windows well inside retention, closed long before the asserts."""
    return float(minute_floor(time.time() - 25 * 60))


def iter_windows(api: dict[str, Any]) -> Iterator[tuple[str, dict[str, int]]]:
    for w in api["windows"]:
        yield w["window_start"], w["counts"]


def diff_windows(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> str:
    """Where two ``windows`` lists differ: per window, the ids whose counts differ (got, want)."""
    g = {w["window_start"]: w["counts"] for w in got}
    w_ = {w["window_start"]: w["counts"] for w in want}
    out = []
    for ws in sorted(set(g) | set(w_)):
        a, b = g.get(ws, {}), w_.get(ws, {})
        bad = {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}
        if bad:
            out.append(f"{ws}: total {sum(a.values())} vs {sum(b.values())}; {dict(list(bad.items())[:6])}")
    return "\n".join(out) or "equal"


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def assert_counts(proc: LiveProcess, start: float, expected: Expected) -> None:
    """The per-window product and store counts of ``proc`` equal ``expected`` exactly."""
    lo, hi = iso(start - 3600), iso(start + 3600)
    products = (await proc.get("/api/views/products", start=lo, end=hi))["windows"]
    stores = (await proc.get("/api/views/stores", start=lo, end=hi))["windows"]
    want_products, want_stores = Expected.as_api(expected.products), Expected.as_api(expected.stores)
    assert products == want_products, diff_windows(products, want_products)
    assert stores == want_stores, diff_windows(stores, want_stores)
