"""Property: an integer ``time_stamp`` is judged and written exactly, at the bounds and far beyond.

The bridge takes a cheap path for integer unix seconds (``time.gmtime`` and float bounds with a
second of margin) and the exact ``datetime`` check only near or past a bound. These tests draw
the stamp around the floor, around ``bridged_at`` plus the tolerance (both with arbitrary
microseconds) and over the whole range a datetime can hold; the expectation is computed here with
``timedelta`` arithmetic from the epoch, never by the code under test.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta

from bridge.event_times import EventRules
from bridge.records import Refusal, copy_record
from hypothesis import example, given, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("BRIDGE_PROPERTY_EXAMPLES", "500"))
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FIRST, LAST = datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)

instants = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))


def expected(stamp: int, floor: datetime, bridged_at: datetime, ahead_s: float) -> tuple[str, str]:
    """("copied", event_time) or ("refused", error class), by the epoch and timedelta alone."""
    if not (FIRST - EPOCH).total_seconds() <= stamp <= (LAST - EPOCH).total_seconds():
        return "refused", "WrongType"
    moment = EPOCH + timedelta(seconds=stamp)
    if moment < floor or moment > bridged_at + timedelta(seconds=ahead_s):
        return "refused", "ImplausibleEventTime"
    text = f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}.000Z"
    return "copied", text


def judged(stamp: int, floor: datetime, bridged_at: datetime, ahead_s: float) -> tuple[str, str]:
    value = json.dumps({"_id": "e1", "collection": "view_product_detail", "product_id": "7", "time_stamp": stamp}).encode()
    rules = EventRules(event_time_floor=floor, event_time_max_ahead_s=ahead_s)
    got = copy_record(value, None, topic="t", partition=0, offset=0, bridged_at=bridged_at, rules=rules)
    if isinstance(got, Refusal):
        return "refused", got.error_class
    return "copied", json.loads(got[1])["event_time"]


@settings(max_examples=EXAMPLES, deadline=None)
@given(floor=instants, bridged_at=instants, ahead_s=st.sampled_from([0, 0.5, 1, 59.999999, 86_400]), nudge=st.integers(-3, 3))
def test_a_stamp_next_to_the_floor(floor: datetime, bridged_at: datetime, ahead_s: float, nudge: int) -> None:
    stamp = int((floor - EPOCH).total_seconds()) + nudge
    assert judged(stamp, floor, bridged_at, ahead_s) == expected(stamp, floor, bridged_at, ahead_s)


@settings(max_examples=EXAMPLES, deadline=None)
@given(bridged_at=instants, ahead_s=st.sampled_from([0, 0.5, 1, 1.000001, 59.999999, 86_400]), nudge=st.integers(-3, 3))
@example(bridged_at=datetime(2026, 12, 2, 12, 0, 0, 999_999, tzinfo=UTC), ahead_s=0, nudge=0)
@example(bridged_at=datetime(2026, 12, 2, 12, 0, 0, 1, tzinfo=UTC), ahead_s=0, nudge=1)
def test_a_stamp_next_to_the_ceiling(bridged_at: datetime, ahead_s: float, nudge: int) -> None:
    floor = datetime(1980, 1, 1, tzinfo=UTC)
    stamp = int((bridged_at + timedelta(seconds=ahead_s) - EPOCH).total_seconds()) + nudge
    assert judged(stamp, floor, bridged_at, ahead_s) == expected(stamp, floor, bridged_at, ahead_s)


@settings(max_examples=EXAMPLES, deadline=None)
@given(stamp=st.integers(-(2**40), 2**40) | st.integers(-70_000_000_000, 260_000_000_000))
@example(stamp=0)
@example(stamp=-1)
@example(stamp=253_402_300_799)
@example(stamp=253_402_300_800)
def test_any_stamp_without_a_floor_worth_the_name(stamp: int) -> None:
    floor, bridged_at, ahead_s = FIRST, datetime(9990, 1, 1, tzinfo=UTC), 9 * 365 * 86_400
    assert judged(stamp, floor, bridged_at, ahead_s) == expected(stamp, floor, bridged_at, ahead_s)
