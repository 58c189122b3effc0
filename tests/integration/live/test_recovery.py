"""Bounded recovery (issue 28): a restart after kill -9 reads the changelog view's snapshot and only
the changelog written after it, faust's tables are seeded from the view instead of replaying
their changelog partitions, and the counts are exact; without a usable snapshot the view replays
the whole changelog and the counts are exact too.

No wall-clock assertion (the project proves speed with bench/live_recovery.py): the test asserts
how many changelog records each restart replayed, from the service's own gauges, against the
changelog's size, and prints the time to ready.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.kafka import KafkaConnection
from tests.integration.live.conftest import PARTITIONS, Expected, LiveProcess, LiveSetup, assert_counts, make_events, produce

pytestmark = pytest.mark.timeout(600)

TABLES = ("views_per_product", "views_per_store")


async def changelog_ends(conn: KafkaConnection, app_id: str) -> dict[tuple[str, int], int]:
    consumer = AIOKafkaConsumer(**conn.client_kwargs())
    await consumer.start()
    try:
        tps = [TopicPartition(f"{app_id}-{t}-changelog", p) for t in TABLES for p in range(PARTITIONS)]
        ends = await consumer.end_offsets(tps)
        return {(tp.topic, tp.partition): end for tp, end in ends.items()}
    finally:
        await consumer.stop()


async def gauges(proc: LiveProcess) -> dict[str, float]:
    text = await proc.get("/metrics")
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line.startswith("live_")}


async def timed_ready(proc: LiveProcess) -> float:
    t0 = time.monotonic()
    proc.start()
    await proc.wait_ready(timeout=300)
    return time.monotonic() - t0


async def wait_for_new_snapshot(path: Path, after: float, timeout: float = 60) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_mtime > after:
            return dict(orjson.loads(path.read_bytes()))
        await asyncio.sleep(0.2)
    raise AssertionError(f"no snapshot written to {path} within {timeout}s")


async def test_restart_reads_the_snapshot_and_the_tail_not_the_whole_changelog(
    live: LiveSetup, local_kafka: KafkaConnection, recent_start: float
) -> None:
    # 60 000 events over 50 minutes and 3 000 products, in shuffled time order: every counting
    # batch touches many (product, window) keys, so the changelog holds about one record per view
    # in the product table (as at a steady rate, where batches are small).
    start = recent_start - 25 * 60
    rng = random.Random(31)
    events = make_events(60_000, start=start, span_s=50 * 60, seed=31, prefix="r")
    tail = make_events(1_000, start=start, span_s=50 * 60, seed=32, prefix="t")
    for event in events + tail:
        event["product_id"] = f"p{rng.randrange(3000):04d}"
    rng.shuffle(events)
    env = {"live_snapshot_interval_s": "5"}
    snapshot = Path(live.env["LIVE_DATA_DIR"]) / f"{live.topic}.view-snapshot.json"

    # 1. Count the big state; a snapshot is written after it; then a tail after the snapshot; kill -9.
    await produce(local_kafka, live.topic, events)
    first = live.process(**env).start()
    await first.wait_ready()
    await first.wait_caught_up(timeout=300)
    want = Expected.of(events)
    await assert_counts(first, start + 25 * 60, want)
    written = await wait_for_new_snapshot(snapshot, after=time.time())
    snap_positions = {(t, p): o for t, p, o in written["positions"]}  # type: ignore[attr-defined]
    # Kill right after the tail is counted: the next snapshot (every 5 s) may or may not come first.
    await produce(local_kafka, live.topic, tail)
    await first.wait_caught_up()
    first.kill()
    want = Expected.of(events + tail)
    ends = await changelog_ends(local_kafka, live.topic)
    total = sum(ends.values())  # nothing deleted yet: every offset since 0 is a changelog record
    behind = sum(ends[tp] - snap_positions[tp] for tp in ends)

    # 2. Restart from the snapshot: exact once ready; the view replayed at most the tail after the
    #    snapshot it had when killed, faust at most one record per changelog partition.
    second = live.process(**env)
    ready_s = await timed_ready(second)
    await assert_counts(second, start + 25 * 60, want)
    g = await gauges(second)
    print(
        f"snapshot restart: ready in {ready_s:.1f}s; changelog {total} records, view replayed "
        f"{g['live_view_start_replayed_records']:.0f} (≤ {behind} behind the snapshot), faust replayed "
        f"{g['live_table_recovery_replayed_records']:.0f}"
    )
    assert g["live_view_snapshot_restarts"] == 1
    assert g["live_view_start_replayed_records"] <= behind
    assert g["live_table_recovery_replayed_records"] <= 2 * PARTITIONS
    assert total > 10 * behind  # the state is big: the tail is a sliver of a full replay
    assert (await second.get("/api/live"))["views_counted"] == 0  # nothing came from re-reading the source
    second.kill()

    # 3. No usable snapshot (deleted): the view replays the whole changelog, faust is still seeded
    #    from it; exact.
    snapshot.unlink()
    third = live.process(**env)
    ready_s = await timed_ready(third)
    await assert_counts(third, start + 25 * 60, want)
    g = await gauges(third)
    print(
        f"no snapshot: ready in {ready_s:.1f}s; view replayed {g['live_view_start_replayed_records']:.0f} "
        f"of {total}, faust replayed {g['live_table_recovery_replayed_records']:.0f}"
    )
    assert g["live_view_snapshot_restarts"] == 0
    assert g["live_view_start_replayed_records"] >= total
    assert g["live_table_recovery_replayed_records"] <= 2 * PARTITIONS
    # A clean stop writes a snapshot: the next start has nothing behind it.
    assert third.stop() == 0
    fourth = live.process(**env)
    ready_s = await timed_ready(fourth)
    g = await gauges(fourth)
    print(f"after a clean stop: ready in {ready_s:.1f}s; view replayed {g['live_view_start_replayed_records']:.0f}")
    assert g["live_view_snapshot_restarts"] == 1
    assert g["live_view_start_replayed_records"] == 0
    await assert_counts(fourth, start + 25 * 60, want)
    assert fourth.stop() == 0
