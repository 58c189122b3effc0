"""Counters equal an independent count over the produced events, window by window, exactly;
aborted (uncommitted) events are never counted: the app reads with read_committed."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.kafka import KafkaConnection
from tests.integration.live.conftest import Expected, LiveSetup, make_events, minute_floor, produce

pytestmark = pytest.mark.timeout(300)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_counters_equal_an_independent_count(live: LiveSetup, local_kafka: KafkaConnection, recent_start: float) -> None:
    events = make_events(3000, start=recent_start, span_s=18 * 60, seed=7)
    aborted = make_events(300, start=recent_start, span_s=18 * 60, seed=8, prefix="aborted")
    for event in aborted:
        event["product_id"] = "aborted-" + event["product_id"]
    # Committed, aborted, committed: the aborted records sit between committed ones on every partition.
    await produce(local_kafka, live.topic, events[:1500])
    await produce(local_kafka, live.topic, aborted, abort=True)
    await produce(local_kafka, live.topic, events[1500:])
    expected = Expected.of(events)
    views = sum(sum(c.values()) for c in expected.products.values())
    assert 2200 < views < 2600 and len(expected.products) == 18  # the generator did what the test relies on

    proc = live.process().start()
    await proc.wait_ready()
    await proc.wait_caught_up()

    start, end = iso(recent_start - 3600), iso(recent_start + 3600)
    products = await proc.get("/api/views/products", start=start, end=end)
    stores = await proc.get("/api/views/stores", start=start, end=end)
    assert products["window_s"] == 60
    assert products["windows"] == Expected.as_api(expected.products)
    assert stores["windows"] == Expected.as_api(expected.stores)
    assert not any(pid.startswith("aborted-") for w in products["windows"] for pid in w["counts"])

    # Top-N over the last 5 and 60 minutes, relative to the minute of the last event.
    last = minute_floor(recent_start + 18 * 60 - 1)
    for minutes in (5, 60):
        top = await proc.get("/api/top", minutes=minutes, until=iso(last + 30), n=10)
        assert top["window_start"] == iso(last + 60 - minutes * 60) and top["window_end"] == iso(last + 60)
        assert top["products"] == expected.top(last, minutes, 10)
    # The page's live series: one point per minute, the same totals.
    series = await proc.get("/api/live", until=iso(last), minutes=20)
    want = {iso(ws): sum(c.values()) for ws, c in expected.stores.items()}
    assert [(m["window_start"], m["views"]) for m in series["views_per_minute"]] == [
        (iso(ws), want.get(iso(ws), 0)) for ws in range(last - 19 * 60, last + 60, 60)
    ]
    assert series["views_counted"] == views
    assert series["events_seen"] >= len(events)  # more only when faust redelivered (startup rebalance): skipped, not counted
    assert proc.stop() == 0
