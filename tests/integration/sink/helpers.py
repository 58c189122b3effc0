"""Helpers for the sink's integration tests: producing, reading back, running the sink.

The contract-shaped events come from ``eventgen.samples.bridged_events`` (shared with
``bench/sink_vs_connector.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from pymongo import AsyncMongoClient
from sink.documents import escape_fields

from infra.stack import ferretdb_backend, ferretdb_postgresql_url
from shared.event import part_of
from shared.kafka import KafkaConnection, create_topics

REPO = Path(__file__).resolve().parents[3]
TEST_DATABASE = "sink_tests"
PARTITIONS = 6
ISO_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def expected_document(event: Mapping[str, Any]) -> dict[str, Any]:
    """The stored document without its ingest stamp (``ingested_at``, ``ingest_hour``, ``ingest_second`` vary)."""
    return {
        "_id": event["event_id"],
        **escape_fields(dict(event)),
        "event_date": event["event_time"][:10],
        "part": part_of(event["event_id"]),
    }


def check_documents(stored: Mapping[str, dict[str, Any]], events: Iterable[Mapping[str, Any]]) -> None:
    """Each event stored exactly as built (full document, field order too), nothing else stored."""
    expected = {e["event_id"]: expected_document(e) for e in events}
    assert len(stored) == len(expected), f"{len(stored)} documents stored, {len(expected)} expected"
    missing = sorted(set(expected) - set(stored))[:5]
    extra = sorted(set(stored) - set(expected))[:5]
    assert not missing and not extra, f"missing {missing}, unexpected {extra}"
    for event_id, stored_doc in stored.items():
        doc = dict(stored_doc)
        ingested_at, ingest_hour, ingest_second = doc.pop("ingested_at"), doc.pop("ingest_hour"), doc.pop("ingest_second")
        assert ISO_MS.match(ingested_at) and (ingest_hour, ingest_second) == (ingested_at[:13], ingested_at[:19]), (
            ingested_at,
            ingest_hour,
            ingest_second,
        )
        want = expected[event_id]
        assert doc == want, f"{event_id}: stored {doc} != expected {want}"
        assert list(doc) == list(want), f"{event_id}: field order {list(doc)} != {list(want)}"


def encode(events: Iterable[Mapping[str, Any]]) -> list[bytes]:
    return [orjson.dumps(e) for e in events]


async def create_topic(conn: KafkaConnection, topic: str, partitions: int = PARTITIONS) -> None:
    await create_topics(conn, [topic], partitions=partitions, replication_factor=3)


async def produce(
    conn: KafkaConnection,
    topic: str,
    values: list[bytes],
    *,
    per_transaction: int = 500,
    rate: float | None = None,
    transactional_id: str | None = None,
    aborted_every: int = 0,
) -> None:
    """Produces ``values`` in transactions like the bridge (keys spread them over partitions).

    ``rate`` (records/s) spreads them in time, to have a stream the sink can be killed in.
    ``aborted_every`` > 0: every n-th transaction is produced twice, first aborted (those records
    must never reach MongoDB), then committed.
    """
    producer = AIOKafkaProducer(
        **conn.client_kwargs(),
        transactional_id=transactional_id or f"sink-test-{os.getpid()}-{time.monotonic_ns()}",
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
        max_batch_size=262_144,
    )
    await producer.start()
    try:
        started = time.monotonic()
        for n, start in enumerate(range(0, len(values), per_transaction)):
            chunk = values[start : start + per_transaction]
            if aborted_every and n % aborted_every == 0:
                await producer.begin_transaction()
                for v in chunk:
                    await producer.send(topic, value=b'{"aborted": true, ' + v[1:])
                await producer.abort_transaction()
            async with producer.transaction():
                for v in chunk:
                    await producer.send(topic, value=v)
            if rate:
                ahead = (start + len(chunk)) / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
    finally:
        await producer.stop()


async def produce_plain(
    conn: KafkaConnection, topic: str, values: list[bytes | None], headers: list[tuple[str, bytes]] | None = None
) -> None:
    """Idempotent, non-transactional: for records the bridge would never write (bad ones)."""
    producer = AIOKafkaProducer(**conn.client_kwargs(), enable_idempotence=True, acks="all", max_request_size=2_000_000)
    await producer.start()
    try:
        for v in values:
            await producer.send_and_wait(topic, value=v, key=b"bad", headers=headers or [])
    finally:
        await producer.stop()


async def read_topic(conn: KafkaConnection, topic: str, expected: int, timeout: float = 30) -> list[Any]:
    """All records of a topic (read_committed), waiting until at least ``expected`` arrived."""
    consumer = AIOKafkaConsumer(**conn.client_kwargs(), isolation_level="read_committed", enable_auto_commit=False)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        if not parts:
            await consumer.topics()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data = await consumer.getmany(timeout_ms=500)
            for recs in data.values():
                out.extend(recs)
            if len(out) >= expected and not data:
                break
        return out
    finally:
        await consumer.stop()


async def missing_report(conn: KafkaConnection, names: Any, stored: Mapping[str, Any], sinks: Iterable[Any]) -> str:
    """Where the events missing from ``stored`` were in the topic (partition: offsets), the group's
    committed offsets, the DLQ's size and each live sink's counters: what a failed exactly-once
    check needs to say (which records, whose partitions, dead-lettered or never written)."""
    records = await read_topic(conn, names.topic, 0, timeout=5)
    where: dict[int, list[int]] = {}
    for r in records:
        if orjson.loads(r.value)["event_id"] not in stored:
            where.setdefault(r.partition, []).append(r.offset)
    lines = [f"missing by partition: { {p: (len(o), min(o), max(o)) for p, o in sorted(where.items())} } (count, first, last offset)"]
    lines.append(f"committed: {await committed_offsets(conn, names.topic, names.group)}")
    lines.append(f"dead letters: {len(await read_topic(conn, names.dlq, 0, timeout=3))}")
    keep = ("sink_written", "sink_duplicate", "sink_conflicting", "pipeline_dead_lettered", "sink_abandoned", "sink_write_retries")
    for sink in sinks:
        if sink.alive():
            counters = {k: v for k, v in sink.metrics().items() if k.startswith(keep)}
            lines.append(f"{sink.name}: {counters}")
    return "\n".join(lines)


async def delete_topics(conn: KafkaConnection, topics: list[str]) -> None:
    admin = AIOKafkaAdminClient(**conn.client_kwargs())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        if wanted := [t for t in topics if t in existing]:
            await admin.delete_topics(wanted)
    finally:
        await admin.close()


async def reset_group_to_beginning(conn: KafkaConnection, topic: str, group: str) -> None:
    """What ``kafka-consumer-groups --reset-offsets --to-earliest`` does (the group must be empty)."""
    consumer = AIOKafkaConsumer(**conn.client_kwargs(), group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        begin = await consumer.beginning_offsets(tps)
        await consumer.commit(dict(begin.items()))
    finally:
        await consumer.stop()


async def committed_offsets(conn: KafkaConnection, topic: str, group: str) -> dict[int, int]:
    admin = AIOKafkaAdminClient(**conn.client_kwargs())
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
        return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}
    finally:
        await admin.close()


async def stored_documents(uri: str, collection: str, database: str = TEST_DATABASE) -> dict[str, dict[str, Any]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, serverSelectionTimeoutMS=5000)
    try:
        return {d["_id"]: d async for d in client[database][collection].find({})}
    finally:
        await client.close()


async def count_documents(uri: str, collection: str, database: str = TEST_DATABASE) -> int:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, serverSelectionTimeoutMS=2000)
    try:
        return await client[database][collection].count_documents({})
    finally:
        await client.close()


async def drop_collection(uri: str, collection: str, database: str = TEST_DATABASE) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, serverSelectionTimeoutMS=5000)
    try:
        await client[database].drop_collection(collection)
    finally:
        await client.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SinkProcess:
    """``python -m sink`` as a subprocess with its own topic/group/collection and HTTP port."""

    def __init__(self, name: str, env: Mapping[str, str], log_dir: Path) -> None:
        self.name = name
        self.port = free_port()
        self.env = {**os.environ, **env, "SINK_HTTP_HOST": "127.0.0.1", "SINK_HTTP_PORT": str(self.port)}
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SinkProcess:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sink"], env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self

    def kill(self) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 15) -> tuple[int, float]:
        """SIGTERM; returns (exit code, seconds until exit)."""
        assert self.proc is not None
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout)
        return rc, time.monotonic() - t0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def json(self, path: str) -> tuple[int, Any]:
        status, body = self.get(path)
        return status, orjson.loads(body)

    def metrics(self) -> dict[str, float]:
        """Prometheus samples as ``{"name{labels}": value}`` (labels as printed)."""
        _, body = self.get("/metrics")
        out = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                key, value = line.rsplit(" ", 1)
                out[key] = float(value)
        return out

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop_quietly(self) -> None:
        if self.alive():
            self.kill()


async def wait_until(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.25) -> Any:
    """Polls ``check`` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if asyncio.iscoroutine(last):
                last = await last
            if last:
                return last
        except (OSError, ValueError) as exc:  # the HTTP port is not up yet
            last = exc
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def sink_env(topic: str, group: str, collection: str, dlq: str, **knobs: str) -> dict[str, str]:
    """A test sink's settings; on the stack's FerretDB-on-PostgreSQL, with its ``_id`` index as the stack's sink has."""
    pg = {}
    if ferretdb_backend() == "postgresql":
        pg["SINK_FERRETDB_POSTGRESQL_URL"] = ferretdb_postgresql_url(dict(os.environ))
    return {
        **pg,
        "SINK_TOPIC": topic,
        "SINK_GROUP_ID": group,
        "SINK_DLQ_TOPIC": dlq,
        "MONGODB_DATABASE": TEST_DATABASE,
        "MONGODB_COLLECTION": collection,
        "SINK_LOG_LEVEL": "INFO",
        **knobs,
    }
