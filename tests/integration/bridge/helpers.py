"""What the bridge's integration tests share: source records, topic readers, a bridge subprocess."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import eventgen
import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from shared.errors import BackendUnavailableError
from shared.event import BAD_KINDS
from shared.kafka import KafkaConnection

REPO = Path(__file__).resolve().parents[3]
ARTIFACTS = REPO / "artifacts" / "bridge"


# ---------------------------------------------------------------------------------- source records


@dataclass
class SourceRecord:
    kind: str  # "glamira", "seed" or one of BAD_KINDS
    key: bytes | None
    value: bytes | None
    event_id: str | None  # what the bridge must assign; None for bad records


@dataclass
class Produced:
    """Where each source record landed on the remote topic."""

    records: list[tuple[int, int, SourceRecord]] = field(default_factory=list)  # (partition, offset, record)

    def good(self) -> list[tuple[int, int, SourceRecord]]:
        return [r for r in self.records if r[2].kind not in BAD_KINDS]

    def bad(self) -> list[tuple[int, int, SourceRecord]]:
        return [r for r in self.records if r[2].kind in BAD_KINDS]


async def produce_events(
    conn: KafkaConnection, topic: str, count: int, *, partitions: int, bad_fraction: float = 0.02, seed: int = 7, rate: float = 0
) -> Produced:
    """``count`` generator events (every bad kind among them) on a new remote topic."""
    records = list(eventgen.generate(count, seed=seed, bad_fraction=bad_fraction))
    manifest = await eventgen.produce(records, conn, topic, rate=rate, progress=False, partitions=partitions)
    produced = Produced()
    for record, entry in zip(records, manifest.records, strict=True):
        assert record.kind == entry.kind
        produced.records.append((entry.partition, entry.offset, SourceRecord(entry.kind, record.key, record.value, entry.event_id)))
    return produced


# ---------------------------------------------------------------------------------- reading


async def read_topic(conn: KafkaConnection, topic: str, *, timeout_s: float = 30.0) -> list[ConsumerRecord[bytes, bytes]]:
    """Every committed record of ``topic`` (``read_committed``), up to its current high watermark."""
    consumer = AIOKafkaConsumer(
        **conn.client_kwargs(), enable_auto_commit=False, isolation_level="read_committed", max_partition_fetch_bytes=4_194_304
    )
    await consumer.start()
    try:
        await consumer.topics()
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        assert tps, f"topic {topic} does not exist"
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[ConsumerRecord[bytes, bytes]] = []
        deadline = time.monotonic() + timeout_s
        pending = [tp for tp in tps if await consumer.position(tp) < ends[tp]]
        while pending:
            assert time.monotonic() < deadline, f"reading {topic}: still at {pending} after {timeout_s}s"
            batch = await consumer.getmany(*pending, timeout_ms=500)
            for records in batch.values():
                out.extend(records)
            pending = [tp for tp in pending if await consumer.position(tp) < ends[tp]]
        return out
    finally:
        await consumer.stop()


async def stored_positions(conn: KafkaConnection, offsets_topic: str) -> dict[tuple[str, int], int]:
    from bridge.offsets import read_stored_offsets

    return await read_stored_offsets(conn, offsets_topic)


async def wait_caught_up(conn: KafkaConnection, offsets_topic: str, produced: Produced, remote_topic: str, *, timeout_s: float) -> None:
    """Waits until the stored offset of every remote partition is past its last produced record."""
    want: dict[tuple[str, int], int] = {}
    for partition, offset, _ in produced.records:
        want[(remote_topic, partition)] = max(want.get((remote_topic, partition), 0), offset + 1)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            stored = await stored_positions(conn, offsets_topic)
        except BackendUnavailableError:  # the bridge has not created the offsets topic yet
            stored = {}
        if all(stored.get(k, -1) >= v for k, v in want.items()):
            return
        assert time.monotonic() < deadline, f"bridge not caught up after {timeout_s}s: stored {stored}, want {want}"
        await asyncio.sleep(0.5)


# ---------------------------------------------------------------------------------- the service


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class BridgeNames:
    """Unique topics, group and ids of one test's bridge deployment."""

    base: str
    remote_topic: str = ""
    local_topic: str = ""
    dlq_topic: str = ""
    offsets_topic: str = ""
    group_id: str = ""

    def __post_init__(self) -> None:
        self.remote_topic = self.remote_topic or f"{self.base}.remote"
        self.local_topic = self.local_topic or f"{self.base}.local"
        self.dlq_topic = self.dlq_topic or f"{self.base}.dlq"
        self.offsets_topic = self.offsets_topic or f"{self.base}.offsets"
        self.group_id = self.group_id or f"{self.base}.group"

    def env(self) -> dict[str, str]:
        return {
            "BRIDGE_REMOTE_TOPIC": self.remote_topic,
            "BRIDGE_LOCAL_TOPIC": self.local_topic,
            "BRIDGE_DLQ_TOPIC": self.dlq_topic,
            "BRIDGE_OFFSETS_TOPIC": self.offsets_topic,
            "BRIDGE_GROUP_ID": self.group_id,
        }


# Fast group membership for tests: a killed member is noticed within ~6 s (the broker minimum).
TEST_ENV = {
    "BRIDGE_SESSION_TIMEOUT_MS": "6000",
    "BRIDGE_HEARTBEAT_INTERVAL_MS": "1000",
    "BRIDGE_HTTP_HOST": "127.0.0.1",
    "BRIDGE_LOCAL_PARTITIONS": "3",
    "BRIDGE_DLQ_PARTITIONS": "1",
    "BRIDGE_BACKOFF_MAX_S": "3",
}


class BridgeProcess:
    """``python -m bridge`` as a subprocess with its own port and log file."""

    def __init__(self, names: BridgeNames, *, label: str, extra_env: dict[str, str] | None = None) -> None:
        self.names = names
        self.port = free_port()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.log_path = ARTIFACTS / f"{names.base}.{label}.{uuid.uuid4().hex[:4]}.log"
        self.env = {**os.environ, **TEST_ENV, **names.env(), "BRIDGE_HTTP_PORT": str(self.port), **(extra_env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> BridgeProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge"], env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO
        )
        log.close()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def get(self, path: str) -> httpx.Response:
        async with httpx.AsyncClient(timeout=20) as client:  # a loaded 2-core machine answers slowly
            return await client.get(self.url + path)

    async def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, f"bridge exited early; log {self.log_path}:\n{self.tail()}"
            try:
                if (await self.get("/ready")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
        raise AssertionError(f"bridge not ready after {timeout_s}s; log:\n{self.tail()}")

    async def committed_transactions(self) -> float:
        """The process's committed transactions so far (0 while it cannot answer)."""
        try:
            text = (await self.get("/metrics")).text
        except httpx.HTTPError:
            return 0.0
        for line in text.splitlines():
            if line.startswith('bridge_transactions_total{result="committed"}'):
                return float(line.split()[-1])
        return 0.0

    async def wait_copying(self, timeout_s: float = 60.0) -> None:
        """Waits until this process has committed at least one transaction."""
        deadline = time.monotonic() + timeout_s
        while await self.committed_transactions() < 1:
            assert self.proc is not None and self.proc.poll() is None, f"bridge exited early:\n{self.tail()}"
            assert time.monotonic() < deadline, f"bridge committed nothing in {timeout_s}s:\n{self.tail()}"
            await asyncio.sleep(0.1)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout_s: float = 15.0) -> tuple[int, float]:
        """SIGTERM; returns (exit code, seconds to exit)."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError(f"bridge did not exit within {timeout_s}s of SIGTERM; log:\n{self.tail()}") from None
        return code, time.monotonic() - started

    def stop_quietly(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:]) if self.log_path.exists() else ""
