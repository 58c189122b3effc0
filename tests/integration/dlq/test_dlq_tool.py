"""``python -m shared.dlqtool`` as a process against the real local Kafka: stats, show, export and
replay (refused, dry run, a crash mid-replay resumed, the same replay again, sink letters, parking)
in one flow on topics of its own."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from shared import dlq
from shared.dlqtool import kafka_io
from shared.dlqtool.hops import validators
from shared.dlqtool.replay import Ledger, Publish, plan_replay
from shared.event import event_id_from_coordinates
from shared.kafka import KafkaConnection, create_topics
from tests.conftest import REPO

pytestmark = pytest.mark.timeout(120)

SOURCE = "product_views"
TWO_DAYS_AHEAD = int(time.time()) + 2 * 86_400


def _letter(value: bytes, *, offset: int, stage: str, error_class: str, key: bytes | None = b"k", extra=()) -> dlq.DeadLetterRecord:
    return dlq.dead_letter_record(
        key,
        value,
        [("trace", f"t{offset}".encode()), *extra],
        source_topic=SOURCE if stage.startswith("bridge") else "local",
        source_partition=offset % 2,
        source_offset=offset,
        stage=stage,
        error_class=error_class,
        error_message=f"{error_class} at {offset}",
    )


def _future_view(offset: int, source_id: str | None = None) -> bytes:
    event: dict[str, Any] = {"time_stamp": TWO_DAYS_AHEAD, "collection": "view_product_detail", "product_id": f"p{offset}", "store_id": "6"}
    if source_id:
        event["_id"] = source_id
    return orjson.dumps(event)


def _stored_event(event_id: str) -> bytes:
    return orjson.dumps(
        {"event_id": event_id, "event_time": "2026-12-06T10:00:00.000Z", "collection": "view_product_detail", "product_id": "9"}
    )


LETTERS = [
    _letter(_future_view(10), offset=10, stage="bridge.validate", error_class="ImplausibleEventTime"),
    _letter(_future_view(11), offset=11, stage="bridge.validate", error_class="ImplausibleEventTime"),
    _letter(_future_view(12, "5f0e5b1e2a9b4c3d2e1f0a9b"), offset=12, stage="bridge.validate", error_class="ImplausibleEventTime"),
    _letter(b"not json", offset=13, stage="bridge.decode", error_class="NotJSON"),
    _letter(b"{nope", offset=14, stage="bridge.decode", error_class="NotJSON"),
    _letter(_stored_event("s1"), offset=20, stage="sink.write", error_class="WriteError", key=b"s1"),
    _letter(_stored_event("s2"), offset=21, stage="sink.write", error_class="WriteError", key=b"s2"),
    _letter(_stored_event("s3"), offset=22, stage="sink.conflict", error_class="ConflictingDuplicate", key=b"s3"),
    _letter(
        _stored_event("s4"), offset=23, stage="sink.write", error_class="WriteError", key=b"s4", extra=[(dlq.HEADER_REPLAY_COUNT, b"3")]
    ),
]
BRIDGE_IDS = [event_id_from_coordinates(SOURCE, 0, 10), event_id_from_coordinates(SOURCE, 1, 11), "5f0e5b1e2a9b4c3d2e1f0a9b"]


def _tool(env: dict[str, str], *args: str) -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-m", "shared.dlqtool", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, done.stdout


async def _local(conn: KafkaConnection, topic: str) -> list[tuple[bytes | None, dict[str, Any], dict[str, bytes]]]:
    records = await kafka_io.read_records(conn, topic)
    return [(r.key, orjson.loads(r.value), dict(r.headers)) for r in records]


async def test_dlq_tool_flow(local_kafka: KafkaConnection, unique_name: str) -> None:
    dlq_topic, local_topic = f"{unique_name}.dlq", f"{unique_name}.local"
    await create_topics(local_kafka, [dlq_topic, local_topic], partitions=2, replication_factor=3)
    producer = AIOKafkaProducer(**local_kafka.client_kwargs(), acks="all")
    await producer.start()
    try:
        for i, letter in enumerate(LETTERS):
            await producer.send_and_wait(dlq_topic, letter.value, key=letter.key, headers=letter.headers, partition=i % 2)
    finally:
        await producer.stop()
    env = {**os.environ, "DLQ_TOPIC": dlq_topic, "DLQ_LOCAL_TOPIC": local_topic, "DLQ_TRANSACTIONAL_ID": f"{unique_name}.replay"}
    env.pop("BRIDGE_EVENT_TIME_MAX_AHEAD_S", None)
    widened = {**env, "BRIDGE_EVENT_TIME_MAX_AHEAD_S": str(3 * 86_400)}

    # stats: counts by hop, stage and class, computed here from what was written.
    expected: dict[tuple[str, str, str], int] = {}
    for letter in LETTERS:
        h = dict(letter.headers)
        stage = h[dlq.HEADER_STAGE].decode()
        key = (stage.split(".")[0], stage, h[dlq.HEADER_ERROR_CLASS].decode())
        expected[key] = expected.get(key, 0) + 1
    _, out = _tool(env, "stats", "--json", "--since", "10m")
    stats = orjson.loads(out)
    assert stats["total"] == len(LETTERS)
    assert {(r["hop"], r["stage"], r["error_class"]): r["count"] for r in stats["classes"]} == expected
    _, out = _tool(env, "stats", "--json", "--until", "10m")
    assert orjson.loads(out)["total"] == 0

    # show: decoded value and the dlq.* headers, filtered by source coordinates.
    _, out = _tool(env, "show", "--json", "--source", f"{SOURCE}:1:11")
    (shown,) = [orjson.loads(line) for line in out.splitlines()]
    assert shown["value"] == {"json": orjson.loads(_future_view(11))}
    assert shown["headers"] == [["trace", {"text": "t11"}]]
    assert shown["dlq_headers"] == {
        "dlq.source.topic": SOURCE,
        "dlq.source.partition": "1",
        "dlq.source.offset": "11",
        "dlq.stage": "bridge.validate",
        "dlq.error.class": "ImplausibleEventTime",
        "dlq.error.message": "ImplausibleEventTime at 11",
    }

    # Replay with the rules as they are: refused again, for the same reason; nothing written.
    select = ["--stage", "bridge.validate", "--class", "ImplausibleEventTime", "--json"]
    rc, out = _tool(env, "replay", *select)
    refused = orjson.loads(out)
    assert (rc, refused["replayed"], refused["refused_again"]) == (1, 0, 3)
    assert [(r["stage"], r["error_class"], r["count"]) for r in refused["refused_reasons"]] == [
        ("bridge.validate", "ImplausibleEventTime", 3)
    ]

    # Widened: a dry run says 3 and writes nothing.
    rc, out = _tool(widened, "replay", *select, "--dry-run")
    assert (rc, orjson.loads(out)["replayed"], orjson.loads(out)["dry_run"]) == (0, 3, True)
    assert await _local(local_kafka, local_topic) == []

    # A replay that crashed: its first transaction committed, its second open when it died.
    letters = await kafka_io.read_letters(local_kafka, dlq_topic)
    os.environ["BRIDGE_EVENT_TIME_MAX_AHEAD_S"] = str(3 * 86_400)
    try:
        steps = [
            s
            for s in plan_replay(letters, ledger=Ledger(), validators=validators(datetime.now(UTC)), max_replays=3)
            if isinstance(s, Publish) and s.letter.stage == "bridge.validate"
        ]
    finally:
        del os.environ["BRIDGE_EVENT_TIME_MAX_AHEAD_S"]
    ledger_topic = f"{dlq_topic}.replays"
    await kafka_io.ensure_ledger(local_kafka, ledger_topic, replication_factor=3)
    await kafka_io.publish(
        local_kafka,
        steps[:1],
        target_topic=local_topic,
        ledger_topic=ledger_topic,
        transactional_id=env["DLQ_TRANSACTIONAL_ID"],
        batch_records=1,
    )
    zombie = AIOKafkaProducer(**local_kafka.client_kwargs(), transactional_id=env["DLQ_TRANSACTIONAL_ID"], enable_idempotence=True)
    await zombie.start()
    try:
        await zombie.begin_transaction()
        await (await zombie.send(local_topic, steps[1].value, key=steps[1].key))

        # Resumed: the committed one is already present, the open one was fenced and aborted.
        rc, out = _tool(widened, "replay", *select)
        resumed = orjson.loads(out)
        assert (rc, resumed["replayed"], resumed["already_present"], resumed["refused_again"]) == (0, 2, 1, 0)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(zombie.stop(), 10)
    stored = await _local(local_kafka, local_topic)
    assert sorted(v["event_id"] for _, v, _ in stored) == sorted(BRIDGE_IDS)
    for key, value, headers in stored:
        assert value["source_topic"] == SOURCE and value["product_id"] == f"p{value['source_offset']}"
        assert key is not None  # the bridge's key for the event
        assert headers["trace"] == f"t{value['source_offset']}".encode()
        assert headers[dlq.HEADER_REPLAY_COUNT] == b"1"

    # The same replay again changes nothing.
    rc, out = _tool(widened, "replay", *select)
    again = orjson.loads(out)
    assert (rc, again["replayed"], again["already_present"]) == (0, 0, 3)
    assert len(await _local(local_kafka, local_topic)) == 3

    # Sink letters go back as they are; a conflict is refused, a letter replayed 3 times parked.
    rc, out = _tool(env, "replay", "--hop", "sink", "--json")
    sink = orjson.loads(out)
    assert (rc, sink["replayed"], sink["refused_again"], sink["parked"], sink["already_present"]) == (1, 2, 1, 1, 0)
    stored = await _local(local_kafka, local_topic)
    assert sorted(v["event_id"] for _, v, _ in stored) == sorted([*BRIDGE_IDS, "s1", "s2"])
    assert {k for k, v, _ in stored if v["event_id"] in ("s1", "s2")} == {b"s1", b"s2"}

    # export: every letter, one JSON line each.
    _, out = _tool(env, "export")
    assert [orjson.loads(line)["dlq_headers"]["dlq.source.offset"] for line in out.splitlines()] == sorted(
        (dict(x.headers)[dlq.HEADER_SOURCE_OFFSET].decode() for x in LETTERS), key=lambda o: (LETTERS_PARTITION[o], int(o))
    )


LETTERS_PARTITION = {dict(x.headers)[dlq.HEADER_SOURCE_OFFSET].decode(): i % 2 for i, x in enumerate(LETTERS)}
