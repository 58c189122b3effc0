"""Two replicas with the same LIVE_APP_ID split the partitions, and either one answers for all of
them: counts from each equal the independent count. Then one is killed with -9 under load; the
survivor takes its partitions over and is exact again."""

from __future__ import annotations

import asyncio

import pytest

from shared.kafka import KafkaConnection
from tests.integration.live.conftest import (
    Expected,
    LiveProcess,
    LiveSetup,
    assert_counts,
    free_port,
    iso,
    make_events,
    minute_floor,
    produce,
)

pytestmark = pytest.mark.timeout(480)


async def assert_exact(proc: LiveProcess, start: float, span_s: int, expected: Expected) -> None:
    await assert_counts(proc, start, expected)
    last = minute_floor(start + span_s - 1)
    for minutes in (5, 60):
        top = await proc.get("/api/top", minutes=minutes, until=iso(last + 30), n=10)
        assert top["products"] == expected.top(last, minutes, 10)


async def test_each_replica_answers_for_all_partitions(live: LiveSetup, local_kafka: KafkaConnection, recent_start: float) -> None:
    span = 12 * 60
    batch_a = make_events(4000, start=recent_start, span_s=span, seed=21, prefix="a")
    batch_b = make_events(20000, start=recent_start, span_s=span, seed=22, prefix="b")

    one = live.process(live_http_port=str(free_port())).start()
    await one.wait_ready()
    two = live.process(live_http_port=str(free_port())).start()
    await two.wait_ready()
    await asyncio.gather(one.wait_ready(), two.wait_ready())  # one rebalanced when two joined

    await produce(local_kafka, live.topic, batch_a)
    await one.wait_caught_up()
    want_a = Expected.of(batch_a)
    a_views = sum(sum(c.values()) for c in want_a.products.values())
    stats = [await p.get("/api/live") for p in (one, two)]
    # Each counted only its own partitions (both counted some), and together every view once...
    assert all(0 < s["views_counted"] < a_views for s in stats), stats
    assert sum(s["views_counted"] for s in stats) == a_views
    # ...yet each answers with every partition's counts.
    await assert_exact(one, recent_start, span, want_a)
    await assert_exact(two, recent_start, span, want_a)

    # kill -9 one replica while B is counted; the survivor takes its partitions over (after the
    # dead member's session times out) and both old and new counts are exact.
    producing = asyncio.create_task(produce(local_kafka, live.topic, batch_b))
    for _ in range(1200):
        if (await two.get("/api/live"))["events_seen"] >= 2000 + stats[1]["events_seen"]:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("replica two did not count 2000 events of B")
    two.kill()
    await producing
    await one.wait_caught_up(timeout=240)
    await assert_exact(one, recent_start, span, Expected.of(batch_a + batch_b))
    assert one.stop() == 0
