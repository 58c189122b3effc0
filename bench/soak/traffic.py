"""The soak's traffic: the event generator's records (bad ones included) at a steady rate to the
remote topic, each stamped with the wall clock as it leaves, and what they must become, counted
here as they are produced — never read back from the pipeline.

What the checker needs from the traffic is :class:`Expected`: the views per (UTC date, product
id) the star schema must hold, counted by the star schema's documented rules
(``docs/star-schema.md`` "Measures": ``collection`` a product view, a product id, not a crawler's
user agent; date = the UTC date of the event time), and the generator's manifest (every record's
coordinates, the event id the bridge must assign, the bad kinds).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import eventgen
from eventgen.catalog import BOT_AGENTS
from eventgen.generate import GLAMIRA, SEED, GeneratedRecord
from eventgen.now import stamp_now

from shared.event import DEFAULT_PRODUCT_VIEW_TYPES
from shared.kafka import KafkaConnection


@dataclass
class Expected:
    """What the produced records must become, filled as they are produced."""

    views: Counter[tuple[str, str]] = field(default_factory=Counter)  # (YYYY-MM-DD, product id) → views
    produced: int = 0
    valid: int = 0
    bad: Counter[str] = field(default_factory=Counter)  # bad kind → records

    def add(self, record: GeneratedRecord) -> None:
        self.produced += 1
        if record.kind not in (GLAMIRA, SEED):
            self.bad[record.kind] += 1
            return
        self.valid += 1
        view = view_of(record)
        if view is not None:
            self.views[view] += 1

    @property
    def total_views(self) -> int:
        return sum(self.views.values())


def view_of(record: GeneratedRecord) -> tuple[str, str] | None:
    """(UTC date, product id) when the record is a product view the star counts, else None."""
    event = record.event or {}
    product = event.get("product_id")
    if not product:
        return None
    if record.kind == SEED:  # the seed's shape is a product view; it carries no user agent
        instant = datetime.strptime(str(event["timestamp"]), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    else:
        if event.get("collection") not in DEFAULT_PRODUCT_VIEW_TYPES or event.get("user_agent") in BOT_AGENTS:
            return None
        instant = datetime.fromtimestamp(int(event["time_stamp"]), UTC)
    return instant.date().isoformat(), str(product)


def counted(records: Iterator[GeneratedRecord], expected: Expected) -> Iterator[GeneratedRecord]:
    for record in records:
        expected.add(record)
        yield record


@dataclass
class Traffic:
    """``count`` records at ``rate`` per second; ``bad_fraction`` of them malformed (every bad kind)."""

    topic: str
    count: int
    rate: float
    seed: int
    partitions: int
    bad_fraction: float = 0.02
    # Longer than any remote outage the faults make (a stopped broker held 40 s, then its restart
    # under load, a double fault on top): the hour soak of 2026-12-07 died when the remote broker
    # came back 65 s after it stopped and the generator's batches had waited 60 s.
    delivery_timeout_s: float = 300.0
    expected: Expected = field(default_factory=Expected)
    started: float | None = None
    finished: float | None = None

    async def run(self, remote: KafkaConnection) -> eventgen.Manifest:
        records = stamp_now(eventgen.generate(self.count, seed=self.seed, bad_fraction=self.bad_fraction))
        self.started = time.time()
        try:
            return await eventgen.produce(
                counted(records, self.expected),
                remote,
                self.topic,
                rate=self.rate,
                progress=False,
                partitions=self.partitions,
                total=self.count,
                delivery_timeout_s=self.delivery_timeout_s,
            )
        finally:
            self.finished = time.time()
