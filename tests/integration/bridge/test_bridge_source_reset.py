"""A reset source is an incident, never a silent skip (issue 15), through real bridge processes.

First case: 1 000 events without ``_id`` are copied; the remote topic is deleted and recreated (a unique
topic on the stack's remote broker) and 500 new events without ``_id`` are produced at the same
offsets. With policy ``fail`` the running bridge stops copying, reports not-ready naming each
partition and both offsets, never reports lag 0, and records the incident in the offsets topic
(a restart with ``fail`` stays not-ready). Restarted with ``resume_from_earliest`` it copies
exactly the 500, whose coordinate-derived ids (source epoch 1) differ from the first 1 000's, and
the offsets topic holds the reset record.

Second case, mid-session: retention (DeleteRecords) passes the position of a running bridge that
is behind. The next fetch is refused (OffsetOutOfRange, no silent reset): under ``fail`` the
partition is held with the reason; under ``resume_from_earliest`` the bridge records the reset
and copies from the new log start, with epoch-1 ids, exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from aiokafka.structs import TopicPartition
from bridge.offsets import StoredOffset, parse_offset_state, read_stored_states
from bridge.transform import normalize, output_key

from shared.event import event_id_from_coordinates
from shared.hops import BridgeCounts
from shared.kafka import KafkaConnection, create_topics
from tests.integration.bridge.helpers import BridgeNames, BridgeProcess, read_topic

PARTITIONS = 3
FIRST, SECOND = 1000, 500


def event(i: int, batch: str) -> tuple[bytes, bytes]:
    """A seed-shape event without ``_id``: its id comes from its coordinates."""
    device = f"dev-{batch}-{i % 37}"
    value = {
        "product_id": f"{batch}-{i}",
        "device_id": device,
        "store_id": 12,
        "referrer_url": "https://www.google.com/",
        "local_time": "2026-12-01 10:00:00",
        "remote_ip": "10.0.0.1",
        "timestamp": f"2026-12-01T10:{i // 60 % 60:02d}:{i % 60:02d}Z",
        "batch": batch,
        "n": i,
    }
    return device.encode(), orjson.dumps(value)


async def produce(
    conn: KafkaConnection, topic: str, count: int, batch: str, *, partitions: int = PARTITIONS
) -> dict[tuple[int, int], tuple[bytes, bytes]]:
    """``count`` events round-robin over the partitions; returns them by (partition, offset)."""
    producer = AIOKafkaProducer(**conn.client_kwargs(), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        futures = []
        for i in range(count):
            key, value = event(i, batch)
            futures.append((key, value, await producer.send(topic, value, key=key, partition=i % partitions)))
        out = {}
        for key, value, future in futures:
            meta = await future
            out[(meta.partition, meta.offset)] = (key, value)
        return out
    finally:
        await producer.stop()


async def delete_topic(conn: KafkaConnection, topic: str, *, timeout_s: float = 60) -> None:
    admin = AIOKafkaAdminClient(**conn.client_kwargs())
    await admin.start()
    try:
        await admin.delete_topics([topic])
        deadline = time.monotonic() + timeout_s
        while topic in set(await admin.list_topics()):
            assert time.monotonic() < deadline, f"topic {topic} still listed {timeout_s}s after its deletion"
            await asyncio.sleep(0.3)
    finally:
        await admin.close()


async def create_remote_topic(conn: KafkaConnection, topic: str, *, timeout_s: float = 60, partitions: int = PARTITIONS) -> None:
    """Creates the topic (retrying while a deletion of the same name completes)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await create_topics(conn, [topic], partitions=partitions, replication_factor=1)
            return
        except Exception:  # TopicDeletionInProgress and friends: the old one is still going away
            assert time.monotonic() < deadline, f"topic {topic} not created within {timeout_s}s"
            await asyncio.sleep(0.5)


def expected(records: dict[tuple[int, int], tuple[bytes, bytes]], topic: str, epoch: int) -> dict[tuple[int, int], dict[str, Any]]:
    at = datetime(2026, 12, 2, tzinfo=UTC)
    out = {}
    for (partition, offset), (key, value) in records.items():
        doc = normalize(value, key, topic=topic, partition=partition, offset=offset, bridged_at=at, source_epoch=epoch)
        del doc["bridged_at"]
        out[(partition, offset)] = doc
    return out


def local_by_coordinates(records: list[Any], batch: str) -> dict[tuple[int, int], tuple[bytes, dict[str, Any]]]:
    out: dict[tuple[int, int], tuple[bytes, dict[str, Any]]] = {}
    for record in records:
        doc = orjson.loads(record.value)
        if doc["batch"] != batch:
            continue
        del doc["bridged_at"]
        coords = (doc["source_partition"], doc["source_offset"])
        assert coords not in out, f"{coords} of batch {batch} copied twice"
        out[coords] = (record.key, doc)
    return out


async def wait_incident(bridge: BridgeProcess, timeout_s: float, partitions: int = PARTITIONS) -> str:
    """The 503 reason once it names a source reset on every partition."""
    deadline = time.monotonic() + timeout_s
    reason = ""
    while time.monotonic() < deadline:
        assert bridge.proc is not None and bridge.proc.poll() is None, f"bridge exited:\n{bridge.tail()}"
        with contextlib.suppress(httpx.HTTPError):
            response = await bridge.get("/ready")
            reason = response.json().get("reason", "")
            if response.status_code == 503 and reason.count("source reset on") == partitions:
                return reason
        await asyncio.sleep(0.3)
    raise AssertionError(f"no incident on every partition after {timeout_s}s (last reason {reason!r}):\n{bridge.tail(60)}")


async def sample_lag(bridge: BridgeProcess, samples: list[dict[str, Any]], stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(httpx.HTTPError, ValueError):
            response = await bridge.get("/lag")
            if response.status_code == 200:
                samples.append(response.json())
        await asyncio.sleep(0.2)


@pytest.mark.timeout(420)
async def test_a_recreated_topic_is_an_incident_then_resumed_from_earliest_exactly(
    remote_kafka: KafkaConnection, local_kafka: KafkaConnection, unique_name: str
) -> None:
    names = BridgeNames(unique_name)
    topic = names.remote_topic
    await create_remote_topic(remote_kafka, topic)
    first = await produce(remote_kafka, topic, FIRST, "first")
    first_ends = {p: 1 + max(o for pp, o in first if pp == p) for p in range(PARTITIONS)}

    # 1. Policy fail (the default): copy the first 1 000.
    bridge = BridgeProcess(names, label="fail").start()
    samples: list[dict[str, Any]] = []
    try:
        await bridge.wait_ready()
        deadline = time.monotonic() + 90
        first_counts = {p: BridgeCounts(copied=sum(1 for pp, _ in first if pp == p)) for p in range(PARTITIONS)}
        while await stored(local_kafka, names, topic) != {p: StoredOffset(e, counts=first_counts[p]) for p, e in first_ends.items()}:
            assert time.monotonic() < deadline, bridge.tail()
            await asyncio.sleep(0.5)
        lag = (await bridge.get("/lag")).json()
        assert lag["total_lag"] == 0 and lag["incidents"] == 0, lag

        # 2. The remote topic is deleted and recreated; 500 new events at the old offsets.
        await delete_topic(remote_kafka, topic)
        stop_sampling = asyncio.Event()
        sampler = asyncio.create_task(sample_lag(bridge, samples, stop_sampling))
        await create_remote_topic(remote_kafka, topic)
        second = await produce(remote_kafka, topic, SECOND, "second")
        second_ends = {p: 1 + max(o for pp, o in second if pp == p) for p in range(PARTITIONS)}
        assert all(second_ends[p] < first_ends[p] for p in range(PARTITIONS))

        reason = await wait_incident(bridge, 120)
        for p in range(PARTITIONS):
            assert f"source reset on {topic}/{p}: stored position {first_ends[p]}" in reason, reason
        # Mid-session detection may see the log before all 500 arrived: check the bounds it named.
        lag = (await bridge.get("/lag")).json()
        stop_sampling.set()
        await sampler
        assert lag["total_lag"] is None and lag["incidents"] == PARTITIONS, lag
        for p, entry in lag["partitions"].items():
            assert entry["lag"] is None and entry["end_offset"] == second_ends[int(p)], lag
            assert entry["incident"]["kind"] == "above_end" and entry["incident"]["stored"] == first_ends[int(p)], lag
        metrics = (await bridge.get("/metrics")).text
        assert "bridge_source_incident_partitions 3.0" in metrics, metrics
        assert sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("bridge_source_resets_total{")) >= 3
        assert 'bridge_lag_records{partition="' not in metrics, "an incident partition has no lag gauge (never a 0)"
        log_text = bridge.log_path.read_text(errors="replace")
        named = f"source reset incident: topic {topic} partition 0 stored {first_ends[0]}"
        assert any("ERROR" in line and named in line for line in log_text.splitlines()), log_text[-3000:]
        assert bridge.terminate()[0] == 0
    finally:
        bridge.stop_quietly()
    # Never "caught up" while nothing was copied: no /lag sample after the deletion said 0.
    assert samples, "no /lag sample answered"
    assert all(sample["total_lag"] != 0 for sample in samples), [s for s in samples if s["total_lag"] == 0][:1]
    # Nothing of the new topic was copied; the incident is recorded in the offsets topic.
    assert len(await read_topic(local_kafka, names.local_topic)) == FIRST
    states = await stored(local_kafka, names, topic)
    for p in range(PARTITIONS):
        assert states[p].next_offset == first_ends[p] and states[p].source_epoch == 0
        assert states[p].counts == first_counts[p]  # the incident record carries the counts on
        assert states[p].incident is not None and states[p].incident["kind"] == "above_end"

    # 3. Restarted with fail: the recorded incident holds (the log offsets alone might not show it).
    again = BridgeProcess(names, label="fail-again").start()
    try:
        await wait_incident(again, 90)
        assert (await again.get("/lag")).json()["total_lag"] is None
        assert again.terminate()[0] == 0
    finally:
        again.stop_quietly()
    assert len(await read_topic(local_kafka, names.local_topic)) == FIRST

    # 4. The operator chooses resume_from_earliest: exactly the 500 are copied.
    resumed = BridgeProcess(names, label="resume", extra_env={"BRIDGE_SOURCE_RESET_POLICY": "resume_from_earliest"}).start()
    try:
        await resumed.wait_ready(90)
        deadline = time.monotonic() + 90
        want = {p: (second_ends[p], 1) for p in range(PARTITIONS)}
        while {p: (s.next_offset, s.source_epoch) for p, s in (await stored(local_kafka, names, topic)).items()} != want:
            assert time.monotonic() < deadline, resumed.tail()
            await asyncio.sleep(0.5)
        lag = (await resumed.get("/lag")).json()
        assert lag["total_lag"] == 0 and lag["incidents"] == 0, lag
        # The counts go on across the reset: both topics' events, each counted once.
        counts = {p: s.counts for p, s in (await stored(local_kafka, names, topic)).items()}
        assert counts == {p: BridgeCounts(copied=first_counts[p].copied + sum(1 for pp, _ in second if pp == p)) for p in range(PARTITIONS)}
        assert all(v["source_epoch"] == 1 for v in lag["partitions"].values())
        metrics = (await resumed.get("/metrics")).text
        assert "bridge_source_incident_partitions 0.0" in metrics
        assert all(f'bridge_source_resumes_total{{partition="{p}",policy="resume_from_earliest"}} 1.0' in metrics for p in range(3))
        assert resumed.terminate()[0] == 0
    finally:
        resumed.stop_quietly()

    local = await read_topic(local_kafka, names.local_topic)
    assert len(local) == FIRST + SECOND
    old, new = local_by_coordinates(local, "first"), local_by_coordinates(local, "second")
    assert {c: d for c, (_, d) in old.items()} == expected(first, topic, 0)
    assert {c: d for c, (_, d) in new.items()} == expected(second, topic, 1)
    assert all(key == output_key(doc) for key, doc in (*old.values(), *new.values()))
    old_ids = {d["event_id"] for _, d in old.values()}
    new_ids = {d["event_id"] for _, d in new.values()}
    assert len(old_ids) == FIRST and len(new_ids) == SECOND and not old_ids & new_ids
    assert new_ids == {event_id_from_coordinates(topic, p, o, 1) for p, o in second}
    assert old_ids == {event_id_from_coordinates(topic, p, o) for p, o in first}

    # The offsets topic holds, per partition, the incident and then the reset record.
    history: dict[int, list[StoredOffset]] = {}
    for record in await read_topic(local_kafka, names.offsets_topic):
        parsed = parse_offset_state(record.key, record.value)
        if parsed is not None and parsed[0] == topic and parsed[2] is not None:
            history.setdefault(parsed[1], []).append(parsed[2])
    for p in range(PARTITIONS):
        resets = [s for s in history[p] if s.reset is not None and s.next_offset == 0]
        assert len(resets) == 1, history[p]
        (reset_value,) = resets
        assert reset_value.source_epoch == 1 and reset_value.incident is None
        reset = dict(reset_value.reset or {})
        assert datetime.fromisoformat(reset.pop("at")) <= datetime.now(UTC)
        assert reset == {
            "policy": "resume_from_earliest",
            "kind": "above_end",
            "old_position": first_ends[p],
            "new_position": 0,
            "log_start": 0,
            "log_end": second_ends[p],
            "old_epoch": 0,
            "new_epoch": 1,
        }
        assert sum(1 for s in history[p] if s.incident is not None) == 1, "the incident is recorded once"


async def stored(local_kafka: KafkaConnection, names: BridgeNames, topic: str) -> dict[int, StoredOffset]:
    with contextlib.suppress(Exception):  # the offsets topic may not exist yet
        return {p: s for (t, p), s in (await read_stored_states(local_kafka, names.offsets_topic)).items() if t == topic}
    return {}


@pytest.mark.timeout(240)
@pytest.mark.parametrize("policy", ["fail", "resume_from_earliest"])
async def test_retention_past_a_running_bridges_position_is_an_incident(
    remote_kafka: KafkaConnection, local_kafka: KafkaConnection, unique_name: str, policy: str
) -> None:
    names = BridgeNames(unique_name)
    topic = names.remote_topic
    count, deleted_to = 2000, 1500
    await create_remote_topic(remote_kafka, topic, partitions=1)
    records = await produce(remote_kafka, topic, count, "only", partitions=1)
    # Slow on purpose: 20 records per transaction, at most 40 fetched ahead: far behind the end.
    env = {
        "BRIDGE_SOURCE_RESET_POLICY": policy,
        "BRIDGE_MAX_BATCH_RECORDS": "20",
        "BRIDGE_MAX_PENDING_RECORDS": "40",
        "BRIDGE_PIPELINE_TRANSACTIONS": "false",
    }
    bridge = BridgeProcess(names, label=f"retention-{policy}", extra_env=env).start()
    try:
        await bridge.wait_copying()
        admin = AIOKafkaAdminClient(**remote_kafka.client_kwargs())
        await admin.start()
        try:
            await admin.delete_records({TopicPartition(topic, 0): RecordsToDelete(deleted_to)}, timeout_ms=10_000)
        finally:
            await admin.close()
        if policy == "fail":
            reason = await wait_incident(bridge, 60, partitions=1)
            assert f"source reset on {topic}/0: stored position " in reason and "below the log start" in reason, reason
            assert f"log start {deleted_to}, log end {count}" in reason, reason
            lag = (await bridge.get("/lag")).json()
            assert lag["total_lag"] is None and lag["partitions"]["0"]["lag"] is None, lag
            assert lag["partitions"]["0"]["incident"]["kind"] == "below_start", lag
            assert (await bridge.get("/metrics")).text.count('bridge_source_resets_total{kind="below_start",partition="0"} 1.0') == 1
        else:
            deadline = time.monotonic() + 120
            while (s := (await stored(local_kafka, names, topic)).get(0)) is None or (s.next_offset, s.source_epoch) != (count, 1):
                assert time.monotonic() < deadline, f"{s}\n{bridge.tail()}"
                await asyncio.sleep(0.5)
            await bridge.wait_ready(30)
            assert (await bridge.get("/lag")).json()["total_lag"] == 0
        assert bridge.terminate()[0] == 0
    finally:
        bridge.stop_quietly()

    history = [
        parsed[2]
        for r in await read_topic(local_kafka, names.offsets_topic)
        if (parsed := parse_offset_state(r.key, r.value)) is not None and parsed[2] is not None
    ]
    copied = local_by_coordinates(await read_topic(local_kafka, names.local_topic), "only")
    if policy == "fail":
        (held,) = [h for h in history if h.incident is not None]
        stored_at = held.next_offset
        assert 0 < stored_at < deleted_to and held.source_epoch == 0
        assert {k: v for k, v in held.incident.items() if k != "at"} == {
            "kind": "below_start",
            "stored": stored_at,
            "log_start": deleted_to,
            "log_end": count,
            "fetch_offset": held.incident["fetch_offset"],
        }
        assert stored_at <= held.incident["fetch_offset"] < deleted_to
        # Exactly what was committed before the incident, nothing after.
        assert {c: d for c, (_, d) in copied.items()} == expected({c: r for c, r in records.items() if c[1] < stored_at}, topic, 0)
    else:
        (resumed,) = [h for h in history if h.reset is not None and h.next_offset == deleted_to]
        reset = dict(resumed.reset or {})
        old = reset["old_position"]
        assert 0 < old < deleted_to and resumed.source_epoch == 1
        del reset["at"]
        assert reset == {
            "policy": "resume_from_earliest",
            "kind": "below_start",
            "old_position": old,
            "new_position": deleted_to,
            "log_start": deleted_to,
            "log_end": count,
            "old_epoch": 0,
            "new_epoch": 1,
        }
        want = expected({c: r for c, r in records.items() if c[1] < old}, topic, 0)
        want.update(expected({c: r for c, r in records.items() if c[1] >= deleted_to}, topic, 1))
        assert {c: d for c, (_, d) in copied.items()} == want
