"""The bridge copies N events with bad ones: exactly the valid ones, exactly the bad ones in the DLQ."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from bridge.app import create_bridge
from bridge.settings import BridgeSettings
from bridge.transform import normalize, output_key

from shared.dlq import read_dead_letter_headers
from shared.errors import InvalidEventError
from shared.event import BAD_KINDS
from shared.kafka import KafkaConnection
from tests.integration.bridge.helpers import (
    BridgeNames,
    BridgeProcess,
    produce_events,
    read_topic,
    stored_positions,
    wait_caught_up,
)
from tests.support.metrics import sample_sum

COUNT = 3000
PARTITIONS = 3


def expected_outputs(produced: Any, topic: str) -> tuple[dict[str, dict[str, Any]], dict[tuple[int, int], InvalidEventError]]:
    """What the bridge must write: events by event_id (without bridged_at), refusals by coordinates."""
    good: dict[str, dict[str, Any]] = {}
    bad: dict[tuple[int, int], InvalidEventError] = {}
    at = datetime(2000, 1, 1, tzinfo=UTC)
    for partition, offset, record in produced.records:
        try:
            event = normalize(record.value, record.key, topic=topic, partition=partition, offset=offset, bridged_at=at)
        except InvalidEventError as exc:
            bad[(partition, offset)] = exc
            continue
        del event["bridged_at"]
        good[event["event_id"]] = event
    return good, bad


def in_process_settings(names: BridgeNames, **overrides: Any) -> BridgeSettings:
    """A bridge run in the test's process on ``names``' topics, quick to join its group."""
    return BridgeSettings(
        remote_topic=names.remote_topic,
        local_topic=names.local_topic,
        dlq_topic=names.dlq_topic,
        offsets_topic=names.offsets_topic,
        group_id=names.group_id,
        dlq_partitions=1,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        **overrides,
    )


@pytest.mark.timeout(120)
async def test_copies_valid_events_exactly_and_dead_letters_the_bad(
    remote_kafka: KafkaConnection, local_kafka: KafkaConnection, unique_name: str
) -> None:
    names = BridgeNames(unique_name)
    produced = await produce_events(remote_kafka, names.remote_topic, COUNT, partitions=PARTITIONS, bad_fraction=0.03)
    assert {r.kind for _, _, r in produced.records} >= {*BAD_KINDS, "glamira", "seed"}
    want_good, want_bad = expected_outputs(produced, names.remote_topic)
    assert len(want_good) + len(want_bad) == COUNT and len(want_bad) == len(produced.bad())
    assert set(want_good) == {r.event_id for _, _, r in produced.good()}

    started_at = datetime.now(UTC)
    bridge = BridgeProcess(names, label="copy").start()
    try:
        await bridge.wait_ready()
        await wait_caught_up(local_kafka, names.offsets_topic, produced, names.remote_topic, timeout_s=60)
        lag = (await bridge.get("/lag")).json()
        metrics = (await bridge.get("/metrics")).text
        code, _ = bridge.terminate()
        assert code == 0
    finally:
        bridge.stop_quietly()
    finished_at = datetime.now(UTC)

    out = await read_topic(local_kafka, names.local_topic)
    events = [orjson.loads(r.value) for r in out]
    ids = [e["event_id"] for e in events]
    assert len(ids) == len(set(ids)) == len(want_good), "every valid event exactly once"
    for record, event in zip(out, events, strict=True):
        bridged_at = event.pop("bridged_at")
        assert started_at <= datetime.fromisoformat(bridged_at) <= finished_at
        assert bridged_at.endswith("Z") and len(bridged_at) == len("2020-01-01T00:00:00.000Z")
        assert event == want_good[event["event_id"]]
        assert record.key == output_key(event)
    # One visitor's events keep their remote order: same key → same local partition, offsets rise.
    by_device: dict[bytes, list[tuple[int, int, int]]] = {}
    for record, event in zip(out, events, strict=True):
        by_device.setdefault(record.key, []).append((record.partition, event["source_partition"], event["source_offset"]))
    for seen in by_device.values():
        assert len({p for p, _, _ in seen}) == 1
        for src in {sp for _, sp, _ in seen}:
            offsets = [o for _, sp, o in seen if sp == src]
            assert offsets == sorted(offsets)

    dead = await read_topic(local_kafka, names.dlq_topic)
    assert len(dead) == len(want_bad)
    originals = {(p, o): r for p, o, r in produced.records}
    for record in dead:
        headers = read_dead_letter_headers(record.headers)
        coords = (int(headers["dlq.source.partition"]), int(headers["dlq.source.offset"]))
        want = want_bad.pop(coords)
        source = originals[coords]
        assert record.value == source.value and record.key == source.key
        assert headers == {
            "dlq.source.topic": names.remote_topic,
            "dlq.source.partition": str(coords[0]),
            "dlq.source.offset": str(coords[1]),
            "dlq.stage": f"bridge.{want.stage}",
            "dlq.error.class": want.error_class,
            "dlq.error.message": want.reason,
            "dlq.source.epoch": "0",  # no source reset in this test
        }
    assert want_bad == {}, "every bad record dead-lettered exactly once"

    assert lag["total_lag"] == 0 and sorted(lag["partitions"]) == [str(p) for p in range(PARTITIONS)]
    assert f"bridge_consumed_records_total {float(COUNT)}" in metrics
    assert f"bridge_produced_records_total {float(len(want_good))}" in metrics
    assert sample_sum(metrics, "pipeline_dead_lettered_records_total", hop="bridge") == len(dead)


@pytest.mark.timeout(90)
async def test_in_process_bridge_serves_health_ready_metrics_and_stops(
    remote_kafka: KafkaConnection, local_kafka: KafkaConnection, unique_name: str
) -> None:
    """The worker and HTTP surface in this process: ready after joining, lag per partition, clean stop."""
    from shared.service import create_http_app

    names = BridgeNames(unique_name)
    produced = await produce_events(remote_kafka, names.remote_topic, 300, partitions=2, bad_fraction=0.05)
    ends = {p: max(o for pp, o, _ in produced.records if pp == p) + 1 for p in (0, 1)}
    settings = in_process_settings(names, local_partitions=2, lag_interval_s=0.3)
    state, bridge = create_bridge(settings)
    app = create_http_app(state)
    stop = asyncio.Event()
    worker = asyncio.create_task(bridge.run(stop))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bridge") as client:
        try:
            assert (await client.get("/health")).json() == {"status": "ok", "service": "bridge"}
            await wait_caught_up(local_kafka, names.offsets_topic, produced, names.remote_topic, timeout_s=45)
            caught_up = ('bridge_lag_records{partition="0"} 0.0', 'bridge_lag_records{partition="1"} 0.0')
            for _ in range(50):  # the gauges follow within lag_interval_s
                metrics = (await client.get("/metrics")).text
                if (await client.get("/ready")).status_code == 200 and all(g in metrics for g in caught_up):
                    break
                await asyncio.sleep(0.2)
            assert (await client.get("/ready")).json() == {"ready": True}
            assert all(g in metrics for g in caught_up), metrics
            assert 'bridge_transactions_total{result="committed"}' in metrics
            assert "bridge_batch_seconds_count" in metrics
            assert sample_sum(metrics, "pipeline_dead_lettered_records_total", hop="bridge") == len(produced.bad())
            lag = (await client.get("/lag")).json()
            assert lag["total_lag"] == 0
            assert {p: v["stored_offset"] for p, v in lag["partitions"].items()} == {"0": ends[0], "1": ends[1]}
            assert all(v["owned_here"] for v in lag["partitions"].values())
        finally:
            stop.set()
            await asyncio.wait_for(worker, 10)
        assert (await client.get("/ready")).status_code == 503


@pytest.mark.timeout(90)
async def test_record_too_large_for_a_local_record_is_dead_lettered_truncated_not_stuck(
    remote_kafka: KafkaConnection, local_kafka: KafkaConnection, unique_name: str
) -> None:
    """A ~2 MB remote record cannot be re-sent whole with DLQ headers: its head is kept, the
    original length goes into a header, and the events around it are copied."""
    from aiokafka import AIOKafkaProducer

    from shared.dlq import HEADER_VALUE_TRUNCATED_FROM, HEADROOM_BYTES
    from shared.kafka import create_topics

    names = BridgeNames(unique_name)
    await create_topics(remote_kafka, [names.remote_topic], partitions=1, replication_factor=1)
    before, after = (orjson.dumps({"_id": f"{i:024x}", "time_stamp": 1589733273, "collection": "view_home_page"}) for i in (1, 2))
    huge = b"x" * 2_000_000
    producer = AIOKafkaProducer(**remote_kafka.client_kwargs(), max_request_size=2_097_152)
    await producer.start()
    try:
        for value in (before, huge, after):
            await producer.send_and_wait(names.remote_topic, value, key=b"k")
    finally:
        await producer.stop()
    bridge = BridgeProcess(names, label="huge").start()
    try:
        await bridge.wait_ready()
        deadline = time.monotonic() + 60
        while (await stored_positions(local_kafka, names.offsets_topic)).get((names.remote_topic, 0)) != 3:
            assert time.monotonic() < deadline, bridge.tail()
            await asyncio.sleep(0.3)
        assert bridge.terminate()[0] == 0
    finally:
        bridge.stop_quietly()
    copied = sorted(orjson.loads(r.value)["event_id"] for r in await read_topic(local_kafka, names.local_topic))
    assert copied == [f"{1:024x}", f"{2:024x}"]  # keyed by event_id: two partitions, no order between them
    (dead,) = await read_topic(local_kafka, names.dlq_topic)
    headers = read_dead_letter_headers(dead.headers)
    assert dict(dead.headers)[HEADER_VALUE_TRUNCATED_FROM] == b"2000000"
    assert headers["dlq.error.class"] == "OversizedRecord" and headers["dlq.source.offset"] == "1"
    assert dead.value == huge[: 2_000_000 - HEADROOM_BYTES]


@pytest.mark.timeout(90)
async def test_source_partitioning_keeps_each_remote_partition_in_one_local_partition_in_order(
    remote_kafka: KafkaConnection, local_kafka: KafkaConnection, unique_name: str
) -> None:
    """``BRIDGE_LOCAL_PARTITIONING=source``: remote partition p → local partition p mod the local
    count (4 remote onto 3 local: 3 wraps onto 0), each in its remote order, every valid event once."""
    names = BridgeNames(unique_name)
    produced = await produce_events(remote_kafka, names.remote_topic, 400, partitions=4, bad_fraction=0.02)
    want_good, want_bad = expected_outputs(produced, names.remote_topic)
    settings = in_process_settings(names, local_partitions=3, local_partitioning="source")
    _, bridge = create_bridge(settings)
    stop = asyncio.Event()
    worker = asyncio.create_task(bridge.run(stop))
    try:
        await wait_caught_up(local_kafka, names.offsets_topic, produced, names.remote_topic, timeout_s=45)
    finally:
        stop.set()
        await asyncio.wait_for(worker, 10)

    out = await read_topic(local_kafka, names.local_topic)
    events = [orjson.loads(r.value) for r in out]
    assert sorted(e["event_id"] for e in events) == sorted(want_good), "every valid event exactly once"
    by_local: dict[int, list[tuple[int, int]]] = {}
    for record, event in sorted(zip(out, events, strict=True), key=lambda pair: (pair[0].partition, pair[0].offset)):
        assert record.partition == event["source_partition"] % 3, (record.partition, event["source_partition"])
        assert record.key == output_key(event)
        by_local.setdefault(record.partition, []).append((event["source_partition"], event["source_offset"]))
    assert sorted(by_local) == [0, 1, 2]
    for seen in by_local.values():
        for source in {p for p, _ in seen}:
            offsets = [o for p, o in seen if p == source]
            assert offsets == sorted(offsets), f"remote partition {source} out of order"
    assert len(await read_topic(local_kafka, names.dlq_topic)) == len(want_bad)
