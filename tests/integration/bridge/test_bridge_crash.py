"""Exactly once under kill -9, with two processes in one group, against a zombie, and on SIGTERM."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from bridge.offsets import offset_key, offset_value, read_stored_states
from bridge.settings import BridgeSettings

from shared.dlq import read_dead_letter_headers
from shared.event import event_id_from_coordinates
from shared.hops import BridgeCounts
from shared.kafka import KafkaConnection, create_topics
from tests.integration.bridge.helpers import (
    BridgeNames,
    BridgeProcess,
    Produced,
    produce_events,
    read_topic,
    wait_caught_up,
)


def expected_ids(produced: Produced, topic: str) -> set[str]:
    ids = set()
    for partition, offset, record in produced.good():
        ids.add(record.event_id or event_id_from_coordinates(topic, partition, offset))
    return ids


async def assert_exactly_once(local: KafkaConnection, names: BridgeNames, produced: Produced) -> tuple[int, int]:
    """Local topic = the valid events once each; DLQ = the bad records once each (read_committed)."""
    events = [orjson.loads(r.value) for r in await read_topic(local, names.local_topic)]
    ids = Counter(e["event_id"] for e in events)
    want = expected_ids(produced, names.remote_topic)
    duplicated = {i: n for i, n in ids.items() if n > 1}
    missing = want - set(ids)
    unexpected = set(ids) - want
    assert not duplicated, f"{len(duplicated)} events duplicated, e.g. {list(duplicated.items())[:3]}"
    assert not missing, f"{len(missing)} events missing, e.g. {sorted(missing)[:3]}"
    assert not unexpected, f"{len(unexpected)} unexpected events"
    dead: Counter[tuple[int, int]] = Counter()
    for record in await read_topic(local, names.dlq_topic):
        headers = read_dead_letter_headers(record.headers)
        dead[(int(headers["dlq.source.partition"]), int(headers["dlq.source.offset"]))] += 1
    want_dead = {(p, o) for p, o, _ in produced.bad()}
    assert set(dead) == want_dead and all(n == 1 for n in dead.values()), "every bad record dead-lettered exactly once"
    return len(events), sum(dead.values())


async def uncommitted_count(local: KafkaConnection, topic: str) -> int:
    """Records on ``topic`` including aborted ones: more than committed means a kill hit a transaction."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(**local.client_kwargs(), enable_auto_commit=False, isolation_level="read_uncommitted")
    await consumer.start()
    try:
        await consumer.topics()
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        ends = await consumer.end_offsets(tps)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        count = 0
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(timeout_ms=500)
            count += sum(len(v) for v in batch.values())
        return count
    finally:
        await consumer.stop()


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_kill_9_at_random_points_loses_and_duplicates_nothing(
    remote_kafka: KafkaConnection, local_kafka: KafkaConnection, unique_name: str
) -> None:
    names = BridgeNames(unique_name)
    # 80 s of stream: each kill cycle (start, join after the dead member's session timeout,
    # fencing two producers per partition, a first commit) takes 15-20 s on a loaded machine.
    partitions, count, rate, kills = 3, 20000, 250.0, 4
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    stream = asyncio.create_task(produce_events(remote_kafka, names.remote_topic, count, partitions=partitions, rate=rate, seed=seed))
    bridges: list[BridgeProcess] = []
    killed = 0
    try:
        while killed < kills and not stream.done():
            bridge = BridgeProcess(names, label=f"crash{killed}").start()
            bridges.append(bridge)
            # Kill only a process that is copying: after its first committed transaction.
            while await bridge.committed_transactions() < 1 and not stream.done():
                assert bridge.proc is not None and bridge.proc.poll() is None, bridge.tail()
                await asyncio.sleep(0.1)
            await asyncio.sleep(rng.uniform(0.0, 1.5))
            bridge.kill()
            killed += 1
        assert killed == kills, f"the stream ended after {killed} kills; make it longer"
        produced = await asyncio.wait_for(stream, 60)
        final = BridgeProcess(names, label="final").start()
        bridges.append(final)
        await final.wait_ready()
        await wait_caught_up(local_kafka, names.offsets_topic, produced, names.remote_topic, timeout_s=60)
        code, _ = final.terminate()
        assert code == 0
    finally:
        stream.cancel()
        for bridge in bridges:
            bridge.stop_quietly()
    events, dead = await assert_exactly_once(local_kafka, names, produced)
    assert events + dead == count
    # The ledger in the offsets topic (shared.hops): written in the same transactions, so exact
    # through the kills: per partition, the good records copied and the bad ones dead-lettered.
    states = await read_stored_states(local_kafka, names.offsets_topic)
    good, bad = Counter(p for p, _, _ in produced.good()), Counter(p for p, _, _ in produced.bad())
    assert {key: state.counts for key, state in states.items()} == {
        (names.remote_topic, p): BridgeCounts(copied=good[p], dead_lettered=bad[p], complete=True) for p in range(partitions)
    }
    aborted = await uncommitted_count(local_kafka, names.local_topic) - events
    print(f"kill -9 x{kills} (seed {seed}): {events} events + {dead} dead letters exactly once; {aborted} records of aborted transactions")


async def owned_partitions(bridge: BridgeProcess) -> set[str]:
    """The remote partitions a bridge process owns, per its ``/lag`` (empty while it cannot say)."""
    try:
        response = await bridge.get("/lag")
    except httpx.HTTPError:
        return set()
    if response.status_code != 200:
        return set()
    return {p for p, v in response.json()["partitions"].items() if v["owned_here"]}


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_two_processes_split_partitions_and_survive_kill_9_of_one(
    remote_kafka: KafkaConnection, local_kafka: KafkaConnection, unique_name: str
) -> None:
    names = BridgeNames(unique_name)
    partitions, count, rate = 4, 8000, 500.0
    stream = asyncio.create_task(produce_events(remote_kafka, names.remote_topic, count, partitions=partitions, rate=rate))
    first, second = BridgeProcess(names, label="a"), BridgeProcess(names, label="b")
    try:
        first.start()
        second.start()
        await first.wait_copying()
        await second.wait_copying()
        # Both own a share of the remote partitions, and together all of them.
        deadline = time.monotonic() + 30
        while True:
            owned = [await owned_partitions(b) for b in (first, second)]
            if owned[0] and owned[1] and owned[0] | owned[1] == {str(p) for p in range(partitions)} and not owned[0] & owned[1]:
                break
            assert time.monotonic() < deadline, f"partitions not split: {owned}"
            await asyncio.sleep(0.3)
        await asyncio.sleep(random.uniform(0.5, 2.0))
        first.kill()
        deadline = time.monotonic() + 40  # the group notices the dead member after its session timeout
        while await owned_partitions(second) != {str(p) for p in range(partitions)}:
            assert time.monotonic() < deadline, f"the survivor did not take over every partition:\n{second.tail()}"
            await asyncio.sleep(0.5)
        produced = await asyncio.wait_for(stream, 60)
        await wait_caught_up(local_kafka, names.offsets_topic, produced, names.remote_topic, timeout_s=60)
        assert (await second.get("/lag")).json()["total_lag"] == 0
        code, _ = second.terminate()
        assert code == 0
    finally:
        stream.cancel()
        first.stop_quietly()
        second.stop_quietly()
    events, dead = await assert_exactly_once(local_kafka, names, produced)
    assert events + dead == count


@pytest.mark.timeout(120)
async def test_new_owner_fences_a_zombie_and_aborts_its_open_transaction(
    remote_kafka: KafkaConnection, local_kafka: KafkaConnection, unique_name: str
) -> None:
    """A zombie (old owner of remote partition 0, same transactional id) has an open transaction
    with a bogus event and a bogus stored offset. The bridge's take-over must fence it: the
    zombie's commit fails, nothing of it is visible, and the bridge copies exactly once."""
    names = BridgeNames(unique_name)
    produced = await produce_events(remote_kafka, names.remote_topic, 500, partitions=1, bad_fraction=0.02)
    settings = BridgeSettings(remote_topic=names.remote_topic, group_id=names.group_id)
    for topic, configs in ((names.local_topic, {}), (names.dlq_topic, {}), (names.offsets_topic, {"cleanup.policy": "compact"})):
        await create_topics(local_kafka, [topic], partitions=1, replication_factor=3, configs=configs)
    zombie = AIOKafkaProducer(**local_kafka.client_kwargs(), transactional_id=settings.transactional_id(0), enable_idempotence=True)
    await zombie.start()
    bridge = BridgeProcess(names, label="fencer")
    try:
        await zombie.begin_transaction()
        await (await zombie.send(names.local_topic, b'{"event_id": "zombie"}', key=b"zombie"))
        # Were it committed, the bridge would resume at 400 and skip offsets 0..399.
        await (await zombie.send(names.offsets_topic, offset_value(400), key=offset_key(names.remote_topic, 0)))
        bridge.start()
        await wait_caught_up(local_kafka, names.offsets_topic, produced, names.remote_topic, timeout_s=60)
        with pytest.raises(KafkaError) as fenced:
            await zombie.commit_transaction()
        assert type(fenced.value).__name__ in {"ProducerFenced", "InvalidProducerEpoch"}
        code, _ = bridge.terminate()
        assert code == 0
    finally:
        bridge.stop_quietly()
        await zombie.stop()
    events, dead = await assert_exactly_once(local_kafka, names, produced)
    assert (events, dead) == (len(produced.good()), len(produced.bad()))
    assert "assigned [0], resuming at {0: None}" in bridge.log_path.read_text()


@pytest.mark.timeout(90)
async def test_sigterm_mid_stream_exits_0_within_10_s_and_restart_continues_exactly_once(
    remote_kafka: KafkaConnection, local_kafka: KafkaConnection, unique_name: str
) -> None:
    names = BridgeNames(unique_name)
    partitions, count = 2, 4000
    stream = asyncio.create_task(produce_events(remote_kafka, names.remote_topic, count, partitions=partitions, rate=800))
    first = BridgeProcess(names, label="term1").start()
    second = BridgeProcess(names, label="term2")
    try:
        await first.wait_copying()
        code, seconds = first.terminate(timeout_s=15)
        assert code == 0 and seconds < 10, f"exit {code} after {seconds:.1f}s"
        assert "exited cleanly" in first.log_path.read_text()
        produced = await asyncio.wait_for(stream, 60)
        second.start()
        await second.wait_ready()
        await wait_caught_up(local_kafka, names.offsets_topic, produced, names.remote_topic, timeout_s=60)
        code, seconds = second.terminate(timeout_s=15)
        assert code == 0 and seconds < 10
    finally:
        stream.cancel()
        first.stop_quietly()
        second.stop_quietly()
    events, dead = await assert_exactly_once(local_kafka, names, produced)
    assert events + dead == count


@pytest.mark.timeout(180)
async def test_remote_topic_created_after_the_bridge_started_is_copied(
    remote_kafka: KafkaConnection, local_kafka: KafkaConnection, unique_name: str
) -> None:
    """The bridge subscribes to a topic that does not exist yet; once it appears (here 3 s later)
    the bridge sees it within BRIDGE_METADATA_MAX_AGE_MS and copies it exactly once."""
    names = BridgeNames(unique_name)
    bridge = BridgeProcess(names, label="late-topic", extra_env={"BRIDGE_METADATA_MAX_AGE_MS": "3000"}).start()
    try:
        await bridge.wait_ready()
        assert (await bridge.get("/lag")).status_code == 503  # no partitions known: not "caught up"
        await asyncio.sleep(3)
        produced = await produce_events(remote_kafka, names.remote_topic, 600, partitions=2)
        await wait_caught_up(local_kafka, names.offsets_topic, produced, names.remote_topic, timeout_s=90)
    finally:
        bridge.stop_quietly()
    events, dead = await assert_exactly_once(local_kafka, names, produced)
    assert events + dead == 600
