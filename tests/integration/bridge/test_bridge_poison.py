"""Poison records through a running bridge (issue 14): it stays alive, copies the valid events
around them exactly, dead-letters the bad ones with their reason, and stores an offset past them.

Before issue 14 a 600-deep object passed decoding and then crashed the encoding outside the
per-record isolation: the session ended, restarted at the same offset and crashed again.
Expected outputs are written out here, not computed by the bridge's code.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from shared.dlq import read_dead_letter_headers
from shared.kafka import KafkaConnection, create_topics
from tests.integration.bridge.helpers import BridgeNames, BridgeProcess, read_topic, stored_positions
from tests.support.metrics import sample_sum

T0 = 1_589_733_273  # 2020-05-17T16:34:33Z


def event_time(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def valid(i: int) -> tuple[bytes, bytes]:
    doc = {"_id": f"{i:024x}", "time_stamp": T0 + i, "collection": "view_product_detail", "product_id": 1000 + i, "device_id": f"dev-{i}"}
    return f"k{i}".encode(), json.dumps(doc).encode()


def expected_valid(i: int, topic: str, offset: int) -> dict[str, Any]:
    return {
        "time_stamp": T0 + i,
        "collection": "view_product_detail",
        "product_id": str(1000 + i),
        "device_id": f"dev-{i}",
        "event_id": f"{i:024x}",
        "source_shape": "glamira",
        "event_time": event_time(T0 + i),
        "source_topic": topic,
        "source_partition": 0,
        "source_offset": offset,
    }


def head(i: int, seconds: int = T0) -> bytes:
    return f'{{"_id":"{i:024x}","time_stamp":{seconds},"collection":"view_home_page"'.encode()


# (key, value, expected DLQ stage, class, fragment of the message) for the bad ones; None for the good
BAD: dict[str, tuple[bytes, bytes, str, str, str]] = {
    "deep": (b"p1", head(101) + b',"nest":' + b"[" * 599 + b"]" * 599 + b"}", "bridge.validate", "TooDeep", "more than 64"),
    "big_int": (b"p2", head(102) + b',"views":1180591620717411303424}', "bridge.validate", "IntegerOutOfRange", "1180591620717411303424"),
    "year_2099": (b"p3", head(103, 4_070_908_800) + b"}", "bridge.validate", "ImplausibleEventTime", "2099-01-01T00:00:00.000Z"),
    # 960 KB of input, 2.16 MB once 1E5 is written as 100000.0: more than a local record may hold.
    "grows": (
        b"p4",
        head(104) + b',"n":[' + b",".join([b"1E5"] * 240_000) + b"]}",
        "bridge.encode",
        "OversizedEvent",
        "more than the 1934464",
    ),
}
# 760 KB of input, 1.71 MB normalized: under the limit, so copied (sent alone, larger than a batch).
LARGE_VALUE = head(106) + b',"n":[' + b",".join([b"1E5"] * 190_000) + b"]}"
RESERVED_VALUE = head(105) + b',"event_id":"spoofed","bridged_at":"yesterday","part":3,"orig_x":1}'
RESERVED_EXPECTED = {
    "time_stamp": T0,
    "collection": "view_home_page",
    "orig_event_id": "spoofed",
    "orig_bridged_at": "yesterday",
    "orig_part": 3,
    "orig_orig_x": 1,
    "event_id": f"{105:024x}",
    "source_shape": "glamira",
    "event_time": event_time(T0),
    "source_topic": None,  # filled in below
    "source_partition": 0,
}


@pytest.mark.timeout(180)
async def test_poison_records_are_dead_lettered_and_the_bridge_keeps_copying(
    remote_kafka: KafkaConnection, local_kafka: KafkaConnection, unique_name: str
) -> None:
    names = BridgeNames(unique_name)
    topic = names.remote_topic
    await create_topics(remote_kafka, [topic], partitions=1, replication_factor=1)
    # valid 0, deep, valid 1, big int, valid 2, reserved names, valid 3, 2099, valid 4, grows, valid 5
    plan: list[tuple[str, bytes, bytes]] = [("valid0", *valid(0))]
    for n, bad in enumerate(BAD, start=1):
        plan.append((bad, BAD[bad][0], BAD[bad][1]))
        plan.append((f"valid{n}", *valid(n)))
        if bad == "big_int":
            plan.append(("reserved", b"p5", RESERVED_VALUE))
        if bad == "grows":
            plan.append(("large", b"p6", LARGE_VALUE))
    producer = AIOKafkaProducer(**remote_kafka.client_kwargs(), max_request_size=2_097_152)
    await producer.start()
    try:
        offsets = {}
        for label, key, value in plan:
            offsets[label] = (await producer.send_and_wait(topic, value, key=key)).offset
    finally:
        await producer.stop()
    assert sorted(offsets.values()) == list(range(len(plan)))

    started_at = datetime.now(UTC)
    bridge = BridgeProcess(names, label="poison").start()
    try:
        await bridge.wait_ready()
        deadline = time.monotonic() + 90
        while (await stored_positions(local_kafka, names.offsets_topic)).get((topic, 0)) != len(plan):
            assert bridge.proc is not None and bridge.proc.poll() is None, f"bridge died:\n{bridge.tail()}"
            assert time.monotonic() < deadline, f"stored offset not past the poison records:\n{bridge.tail()}"
            await asyncio.sleep(0.3)
        await asyncio.sleep(1.0)  # a crash right after the commit would show now
        assert bridge.proc is not None and bridge.proc.poll() is None, "the bridge is alive"
        assert (await bridge.get("/ready")).status_code == 200
        metrics = (await bridge.get("/metrics")).text
        code, _ = bridge.terminate()
        assert code == 0
    except (AssertionError, httpx.HTTPError):
        print(bridge.tail(80))
        raise
    finally:
        bridge.stop_quietly()
    finished_at = datetime.now(UTC)
    log = bridge.log_path.read_text(errors="replace")
    assert "copying partition" not in log, "no session ended"

    # Exactly the valid events (and the one with reserved names), exact contents.
    want: dict[str, dict[str, Any]] = {}
    for n in range(len(BAD) + 1):
        want[f"{n:024x}"] = expected_valid(n, topic, offsets[f"valid{n}"])
    want[f"{105:024x}"] = {**RESERVED_EXPECTED, "source_topic": topic, "source_offset": offsets["reserved"]}
    want[f"{106:024x}"] = {
        "time_stamp": T0,
        "collection": "view_home_page",
        "n": [100000.0] * 190_000,
        "event_id": f"{106:024x}",
        "source_shape": "glamira",
        "event_time": event_time(T0),
        "source_topic": topic,
        "source_partition": 0,
        "source_offset": offsets["large"],
    }
    out = await read_topic(local_kafka, names.local_topic)
    got: dict[str, dict[str, Any]] = {}
    assert max(len(r.value) for r in out) > 1_700_000  # the large one made it whole
    for record in out:
        event = json.loads(record.value)
        bridged_at = event.pop("bridged_at")
        assert started_at <= datetime.fromisoformat(bridged_at) <= finished_at
        assert event["event_id"] not in got, "copied once"
        got[event["event_id"]] = event
        assert record.key == (event["device_id"].encode() if "device_id" in event else event["event_id"].encode())
    assert got == want

    # Exactly the bad ones in the DLQ, byte for byte, with their reasons.
    dead = await read_topic(local_kafka, names.dlq_topic)
    by_offset = {int(read_dead_letter_headers(r.headers)["dlq.source.offset"]): r for r in dead}
    assert len(by_offset) == len(dead) == len(BAD)
    for label, (key, value, stage, error_class, fragment) in BAD.items():
        record = by_offset[offsets[label]]
        headers = read_dead_letter_headers(record.headers)
        assert (record.key, record.value) == (key, value), label
        assert headers["dlq.source.topic"] == topic and headers["dlq.source.partition"] == "0"
        assert (headers["dlq.stage"], headers["dlq.error.class"]) == (stage, error_class), label
        assert fragment in headers["dlq.error.message"], (label, headers["dlq.error.message"])

    # The counters agree: in = out + dead-lettered, by stage, in one session.
    assert f"bridge_consumed_records_total {float(len(plan))}" in metrics
    assert f"bridge_produced_records_total {float(len(want))}" in metrics
    assert sample_sum(metrics, "pipeline_dead_lettered_records_total", hop="bridge") == len(BAD)
    assert 'pipeline_dead_lettered_records_total{hop="bridge",stage="bridge.validate"} 3.0' in metrics
    assert 'pipeline_dead_lettered_records_total{hop="bridge",stage="bridge.encode"} 1.0' in metrics
    assert "bridge_session_restarts_total 0.0" in metrics
