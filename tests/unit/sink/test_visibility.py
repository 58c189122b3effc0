"""sink.visibility: the sink's side of the visibility leases (contract: shared/visibility.py).

The lease is driven by an injected clock. The property test replays random interleavings of
attempts, their ends and publications, and checks every published ``visible_through`` against
what it reconstructs from the event log alone: exactly the oldest start of the attempts that
could still land, less 1 ms, and every stamp issued later above it. The publisher runs against
a small in-memory collection that applies the update's filter as MongoDB would."""

from __future__ import annotations

import asyncio
import os
import re
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from pymongo.errors import DuplicateKeyError, NetworkTimeout
from sink.documents import IngestStamp
from sink.metrics import SinkMetrics
from sink.mongo import MongoUnavailableError
from sink.settings import SinkSettings
from sink.visibility import LeaseLapsedError, LeasePublisher, VisibilityLease, truncated_ms

from shared.visibility import COLLECTION, ONE_MS, lease_document, parse_instant, parse_lease, visible_bound

T0 = datetime(2026, 11, 27, 21, 5, 9, 123456, tzinfo=UTC)
TIMEOUT_S = 2.0
LEASE_S = 5.0


class Clock:
    def __init__(self, at: datetime = T0) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at

    def advance(self, seconds: float = 0.0, microseconds: int = 0) -> datetime:
        self.at += timedelta(seconds=seconds, microseconds=microseconds)
        return self.at


def make_lease(clock: Clock, published: bool = True) -> VisibilityLease:
    lease = VisibilityLease(lease_s=LEASE_S, attempt_timeout_s=TIMEOUT_S, clock=clock)
    if published:
        lease.published(clock())
    return lease


def stamped(stamp: IngestStamp) -> datetime:
    return parse_instant(stamp.ingested_at)


# ---------------------------------------------------------------------- the lease alone


def test_instance_is_host_pid_and_8_random_hex_digits() -> None:
    a, b = VisibilityLease(lease_s=10, attempt_timeout_s=60), VisibilityLease(lease_s=10, attempt_timeout_s=60)
    prefix = f"{socket.gethostname()}:{os.getpid()}:"
    assert a.instance.startswith(prefix) and re.fullmatch(r"[0-9a-f]{8}", a.instance[len(prefix) :]), a.instance
    assert a.instance != b.instance


def test_with_no_attempt_everything_up_to_1_ms_ago_is_visible() -> None:
    clock = Clock()
    lease = make_lease(clock)
    assert lease.visible_through(T0) == datetime(2026, 11, 27, 21, 5, 9, 122456, tzinfo=UTC)
    assert lease.quiet(T0)


def test_an_attempt_in_flight_holds_visible_through_1_ms_below_its_stamp() -> None:
    clock = Clock()
    lease = make_lease(clock)
    stamp, token = lease.begin_attempt()
    assert stamp == IngestStamp("2026-11-27T21:05:09.123Z", "2026-11-27T21", "2026-11-27T21:05:09")
    clock.advance(3)
    # the stamp says .123 (truncated): the bound is .122, not 1 ms below the clock's .123456
    assert lease.visible_through(clock()) == datetime(2026, 11, 27, 21, 5, 9, 122000, tzinfo=UTC)
    assert lease.visible_through(clock()) < stamped(stamp)
    clock.advance(microseconds=400)
    later, token2 = lease.begin_attempt()
    assert later.ingested_at == "2026-11-27T21:05:12.123Z"
    lease.end_attempt(token, maybe_pending=False)  # acknowledged: only the later one holds the bound
    assert lease.visible_through(clock()) == datetime(2026, 11, 27, 21, 5, 12, 122000, tzinfo=UTC)
    lease.end_attempt(token2, maybe_pending=False)
    assert lease.visible_through(clock()) == clock() - ONE_MS and lease.quiet(clock())


def test_an_attempt_without_an_answer_is_pinned_until_its_start_plus_the_timeout_plus_1_s() -> None:
    clock = Clock()
    lease = make_lease(clock)
    began = clock()
    stamp, token = lease.begin_attempt()
    clock.advance(TIMEOUT_S)
    lease.end_attempt(token, maybe_pending=True)  # timed out: the server may still apply it
    held = datetime(2026, 11, 27, 21, 5, 9, 122000, tzinfo=UTC)
    assert lease.visible_through(clock()) == held and not lease.quiet(clock())
    until = began + timedelta(seconds=TIMEOUT_S + 1)
    assert lease.visible_through(until - timedelta(microseconds=1)) == held
    assert lease.visible_through(until) == until - ONE_MS  # released
    assert lease.quiet(until)
    lease.end_attempt(token, maybe_pending=True)  # an unknown token (already gone): nothing happens
    assert lease.quiet(until) and stamped(stamp) > held


def test_no_attempt_before_the_first_publication_nor_once_the_lease_lapsed() -> None:
    clock = Clock()
    lease = make_lease(clock, published=False)
    with pytest.raises(LeaseLapsedError, match=r"^visibility lease not published yet") as info:
        lease.begin_attempt()
    assert isinstance(info.value, MongoUnavailableError) and info.value.reason == "visibility_lease"
    assert lease.quiet(clock())  # a refused attempt holds nothing
    lease.published(clock())
    clock.advance(LEASE_S, -1)
    _, token = lease.begin_attempt()  # 1 us before the lease lapses
    lease.end_attempt(token, maybe_pending=False)
    clock.advance(microseconds=1)
    with pytest.raises(LeaseLapsedError, match=r"lapsed at 2026-11-27T21:05:14\.123Z \(last published at 2026-11-27T21:05:09\.123Z\)"):
        lease.begin_attempt()
    lease.published(T0 + timedelta(seconds=1))  # an acknowledged publication renews it from its own time
    lease.published(T0)  # an older one acknowledged later changes nothing
    assert lease.lapses_at() == T0 + timedelta(seconds=1 + LEASE_S)
    stamp, _ = lease.begin_attempt()
    assert stamp.ingested_at == "2026-11-27T21:05:14.123Z"
    lease.close()
    with pytest.raises(LeaseLapsedError, match="closed"):
        lease.begin_attempt()


def test_a_clock_stepped_back_never_stamps_at_or_below_a_bound_already_computed() -> None:
    clock = Clock()
    lease = make_lease(clock)
    bound = lease.visible_through(lease.now())
    clock.advance(-5)  # NTP stepped the wall clock back
    assert lease.now() == T0
    stamp, _ = lease.begin_attempt()
    assert stamp.ingested_at == "2026-11-27T21:05:09.123Z" and stamped(stamp) > bound


def test_truncated_ms_is_the_instant_the_stamp_says() -> None:
    assert truncated_ms(T0) == datetime(2026, 11, 27, 21, 5, 9, 123000, tzinfo=UTC) == stamped(IngestStamp.at(T0))


# ---------------------------------------------------------------------- the property

ops = st.lists(
    st.one_of(
        # microseconds: any, or steps that land on the millisecond and pin boundaries often
        st.tuples(st.just("advance"), st.integers(0, 3_000_000) | st.sampled_from([1, 999, 1000, 1001, 250_000, 500_000, 1_000_000])),
        st.tuples(st.just("begin")),
        st.tuples(st.just("end"), st.integers(0, 1000), st.booleans()),  # which open attempt, maybe_pending
        st.tuples(st.just("publish"), st.booleans()),  # acknowledged or not (its bound may be seen anyway)
    ),
    max_size=80,
)


@dataclass
class Attempt:
    seq: int  # position in the log
    began: datetime
    stamp: datetime
    token: int
    ended: int | None = None  # seq of its end
    ended_at: datetime | None = None
    pending: bool = False


@dataclass
class Log:
    attempts: list[Attempt] = field(default_factory=list)
    publications: list[tuple[int, datetime, datetime]] = field(default_factory=list)  # (seq, at, visible_through)


@settings(max_examples=400, deadline=None)
@given(ops, st.integers(0, 999_999))
def test_every_stamp_that_can_still_land_is_above_every_published_visible_through(steps: list[tuple[Any, ...]], micros: int) -> None:
    clock = Clock(T0.replace(microsecond=micros))
    lease = make_lease(clock, published=False)
    log = Log()
    acknowledged: datetime | None = None
    pin = timedelta(seconds=TIMEOUT_S + 1)
    for seq, step in enumerate(steps):
        now = clock()
        if step[0] == "advance":
            clock.advance(microseconds=step[1])
        elif step[0] == "begin":
            refused = acknowledged is None or now >= acknowledged + timedelta(seconds=LEASE_S)
            try:
                stamp, token = lease.begin_attempt()
            except LeaseLapsedError:
                assert refused
                continue
            assert not refused
            log.attempts.append(Attempt(seq, now, stamped(stamp), token))
        elif step[0] == "end":
            open_ = [a for a in log.attempts if a.ended is None]
            if open_:
                a = open_[step[1] % len(open_)]
                a.ended, a.ended_at, a.pending = seq, now, step[2]
                lease.end_attempt(a.token, maybe_pending=step[2])
        else:
            through = lease.visible_through(now)
            log.publications.append((seq, now, through))
            if step[1]:
                lease.published(now)
                acknowledged = now
    # Reconstructed from the log alone: at a publication, an attempt begun before it can still
    # land if it had not ended, or ended without an answer less than timeout + 1 s after it began.
    for seq, at, through in log.publications:
        holding = [a for a in log.attempts if a.seq < seq and (a.ended is None or a.ended > seq or (a.pending and at < a.began + pin))]
        assert through == min([at - ONE_MS, *(truncated_ms(a.began) - ONE_MS for a in holding)])
        for a in holding:
            assert a.stamp > through, (a, through)
        for a in log.attempts:
            if a.seq > seq:
                assert a.stamp > through, (a, through)
    # And what a reader computes from the published documents: every stamp of an attempt still
    # able to land at the last publication is above its bound.
    if log.publications:
        seq, at, through = log.publications[-1]
        doc = lease_document("events", lease.instance, through, at, LEASE_S, TIMEOUT_S)
        assert visible_bound([parse_lease(doc)], at, 0.0) == truncated_ms(through)  # the document holds milliseconds
        bound = truncated_ms(through)
        assert all(a.stamp > bound for a in log.attempts if a.seq > seq or a.ended is None)


# ---------------------------------------------------------------------- the publisher


class FakeCollection:
    """update_one/delete_one on ``_id`` with MongoDB's upsert semantics for the filter
    ``{_id, published_at: {$lte: p}}``; ``fail`` raises the next calls' errors."""

    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[Any, ...]] = []
        self.fail: list[Exception] = []
        self.write_concern: Any = None

    def with_options(self, write_concern: Any = None) -> FakeCollection:
        self.write_concern = write_concern
        return self

    async def update_one(self, filter: dict[str, Any], update: dict[str, Any], upsert: bool = False) -> None:
        self.calls.append(("update_one", filter, update, upsert))
        if self.fail:
            raise self.fail.pop(0)
        stored = self.docs.get(filter["_id"])
        if stored is None:
            self.docs[filter["_id"]] = {"_id": filter["_id"], **update["$set"]}
        elif stored["published_at"] <= filter["published_at"]["$lte"]:
            stored.update(update["$set"])
        else:  # no match: the upsert's insert hits the _id
            raise DuplicateKeyError("E11000 duplicate key error collection: sink_visibility index: _id_")

    async def delete_one(self, filter: dict[str, Any]) -> None:
        self.calls.append(("delete_one", filter))
        if self.fail:
            raise self.fail.pop(0)
        self.docs.pop(filter["_id"], None)


class FakeDatabase:
    def __init__(self) -> None:
        self.collections: dict[str, FakeCollection] = {}

    def __getitem__(self, name: str) -> FakeCollection:
        return self.collections.setdefault(name, FakeCollection())


def make_publisher(clock: Clock, interval_s: float = 1.0) -> tuple[LeasePublisher, FakeCollection, VisibilityLease, CollectorRegistry]:
    lease = VisibilityLease(lease_s=LEASE_S, attempt_timeout_s=TIMEOUT_S, clock=clock, instance="host:7:0123abcd")
    database = FakeDatabase()
    registry = CollectorRegistry()
    publisher = LeasePublisher(lease, database, "events", interval_s=interval_s, write_concern="w", metrics=SinkMetrics(registry))  # type: ignore[arg-type]
    return publisher, database[COLLECTION], lease, registry


async def test_a_publication_upserts_the_contracts_document_and_starts_the_lease() -> None:
    clock = Clock()
    publisher, leases, lease, registry = make_publisher(clock)
    assert leases.write_concern == "w" and publisher.timeout_s == 2.5  # min(5 s, lease / 2)
    with pytest.raises(LeaseLapsedError):
        lease.begin_attempt()
    through = await publisher.publish()
    assert through == T0 - ONE_MS and lease.published_at == T0
    expected = lease_document("events", "host:7:0123abcd", T0 - ONE_MS, T0, LEASE_S, TIMEOUT_S)
    assert expected["_id"] == "events/host:7:0123abcd"
    assert leases.docs == {"events/host:7:0123abcd": expected}
    assert leases.calls == [
        (
            "update_one",
            {"_id": "events/host:7:0123abcd", "published_at": {"$lte": "2026-11-27T21:05:09.123Z"}},
            {"$set": {k: v for k, v in expected.items() if k != "_id"}},
            True,
        )
    ]
    assert registry.get_sample_value("sink_visibility_lag_seconds") == 0.001

    _, token = lease.begin_attempt()
    clock.advance(3)
    assert await publisher.publish() == datetime(2026, 11, 27, 21, 5, 9, 122000, tzinfo=UTC)
    assert leases.docs["events/host:7:0123abcd"]["visible_through"] == "2026-11-27T21:05:09.122Z"
    assert leases.docs["events/host:7:0123abcd"]["published_at"] == "2026-11-27T21:05:12.123Z"
    assert registry.get_sample_value("sink_visibility_lag_seconds") == pytest.approx(3.001456)
    lease.end_attempt(token, maybe_pending=False)


async def test_a_failed_publication_raises_as_an_outage_and_does_not_renew_the_lease() -> None:
    clock = Clock()
    publisher, leases, lease, _ = make_publisher(clock)
    await publisher.publish()
    clock.advance(1)
    leases.fail = [NetworkTimeout("timed out")]
    with pytest.raises(MongoUnavailableError, match=r"^visibility lease events/host:7:0123abcd: NetworkTimeout: timed out") as info:
        await publisher.publish()
    assert info.value.timed_out and lease.published_at == T0
    # A later publication already stored (e.g. one given up on, applied late): never replaced by an older one.
    leases.docs["events/host:7:0123abcd"]["published_at"] = "2026-11-27T21:05:11.000Z"
    with pytest.raises(MongoUnavailableError, match="a later publication is stored already"):
        await publisher.publish()
    assert lease.published_at == T0 and leases.docs["events/host:7:0123abcd"]["published_at"] == "2026-11-27T21:05:11.000Z"


async def test_the_publisher_runs_every_interval_survives_failures_and_stops() -> None:
    publisher, leases, lease, registry = make_publisher(Clock(), interval_s=0.02)
    told: list[str] = []
    publisher.on_failed = lambda exc: told.append(f"failed {type(exc).__name__}: {exc}")
    publisher.on_published = lambda: told.append("published")
    leases.fail = [NetworkTimeout("timed out"), RuntimeError("a bug")]
    publisher.start()
    await asyncio.sleep(0.15)
    await publisher.stop()
    updates = [c for c in leases.calls if c[0] == "update_one"]
    assert 3 <= len(updates) <= 9, len(updates)  # ~0.15 / 0.02, fewer on a loaded machine
    assert told == [
        "failed MongoUnavailableError: visibility lease events/host:7:0123abcd: NetworkTimeout: timed out",
        "failed RuntimeError: a bug",
        *["published"] * (len(updates) - 2),
    ]
    assert registry.get_sample_value("sink_visibility_publication_failures_total") == 2
    assert lease.published_at == T0 and "events/host:7:0123abcd" in leases.docs
    await asyncio.sleep(0.05)
    assert len([c for c in leases.calls if c[0] == "update_one"]) == len(updates)  # stopped


async def test_retire_deletes_the_document_when_nothing_can_land_and_leaves_it_otherwise() -> None:
    clock = Clock()
    publisher, leases, lease, _ = make_publisher(clock)
    await publisher.publish()
    _, token = lease.begin_attempt()
    lease.end_attempt(token, maybe_pending=True)  # pinned until T0 + 3 s
    assert await publisher.retire(1.0) is False
    assert "events/host:7:0123abcd" in leases.docs and lease.closed
    clock.advance(TIMEOUT_S + 1)
    assert await publisher.retire(1.0) is True
    assert leases.docs == {} and leases.calls[-1] == ("delete_one", {"_id": "events/host:7:0123abcd"})
    with pytest.raises(LeaseLapsedError):
        lease.begin_attempt()


def test_the_lease_must_be_longer_than_the_interval() -> None:
    s = SinkSettings()
    assert (s.visibility_interval_s, s.visibility_lease_s) == (1.0, 10.0)
    assert SinkSettings(visibility_interval_s=2, visibility_lease_s=2.5).visibility_lease_s == 2.5
    with pytest.raises(ValidationError, match=r"SINK_VISIBILITY_LEASE_S \(1\) must be larger than SINK_VISIBILITY_INTERVAL_S \(1\)"):
        SinkSettings(visibility_interval_s=1, visibility_lease_s=1)
    with pytest.raises(ValidationError):
        SinkSettings(visibility_interval_s=0)
