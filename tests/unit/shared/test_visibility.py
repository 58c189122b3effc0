"""The reader's bound from the sinks' visibility leases (shared.visibility): never past a live
lease's visible_through, never later than now - skew, and a settled lease no longer holds it back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.visibility import Lease, MalformedLeaseError, lease_document, parse_lease, visible_bound

NOW = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)


def lease(vt_s: float, published_s: float, lease_s: float = 10, timeout_s: float = 60) -> Lease:
    return Lease("h:1:ab", NOW + timedelta(seconds=vt_s), NOW + timedelta(seconds=published_s), lease_s, timeout_s)


def test_no_lease_bounds_at_now_minus_skew() -> None:
    assert visible_bound([], NOW, 2) == NOW - timedelta(seconds=2)


def test_the_oldest_live_lease_bounds_the_read() -> None:
    leases = [lease(-1, -0.5), lease(-30, -1), lease(-3, -2)]
    assert visible_bound(leases, NOW, 2) == NOW - timedelta(seconds=30)


def test_a_settled_lease_no_longer_holds_the_read_back() -> None:
    # published 80 s ago: settled 80 - 10 - 60 - 1 (slack) = 9 s ago, more than the 2 s skew
    assert visible_bound([lease(-81, -80), lease(-1, -0.5)], NOW, 2) == NOW - timedelta(seconds=2)
    # settled only 1 s ago: within the skew, still bounding
    assert visible_bound([lease(-73, -72)], NOW, 2) == NOW - timedelta(seconds=73)


@given(st.lists(st.tuples(st.floats(-500, 0), st.floats(-500, 0), st.floats(0, 30), st.floats(0, 120)), max_size=6), st.floats(0, 10))
def test_bound_is_the_minimum_over_unsettled_leases(raw: list[tuple[float, float, float, float]], skew: float) -> None:
    leases = [lease(vt, pub, ls, to) for vt, pub, ls, to in raw]
    bound = visible_bound(leases, NOW, skew)
    expected = NOW - timedelta(seconds=skew)
    for vt, pub, ls, to in raw:
        if pub + ls + to + 1 + skew >= 0:  # not settled (1 s slack) skew seconds before now (computed independently)
            expected = min(expected, NOW + timedelta(seconds=vt))
    assert abs((bound - expected).total_seconds()) < 1e-5


def test_documents_round_trip_and_malformed_ones_are_refused() -> None:
    doc = lease_document("events", "h:1:ab", NOW - timedelta(milliseconds=1500), NOW, 10, 60)
    assert doc == {
        "_id": "events/h:1:ab",
        "collection": "events",
        "instance": "h:1:ab",
        "visible_through": "2026-12-06T09:59:58.500Z",
        "published_at": "2026-12-06T10:00:00.000Z",
        "lease_s": 10.0,
        "attempt_timeout_s": 60.0,
    }
    assert parse_lease(doc) == Lease("h:1:ab", NOW - timedelta(milliseconds=1500), NOW, 10.0, 60.0)
    for broken in (
        {**doc, "visible_through": "yesterday"},
        {k: v for k, v in doc.items() if k != "lease_s"},
        {**doc, "lease_s": float("nan")},
    ):
        with pytest.raises(MalformedLeaseError, match="events/h:1:ab"):
            parse_lease(broken)
