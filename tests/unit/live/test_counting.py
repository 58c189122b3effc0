"""The pure core of the live service: what counts as a view, key scoping, aggregations."""

from __future__ import annotations

import orjson
import pytest
from live.counting import (
    UNKNOWN,
    View,
    add_view,
    counts_by_window,
    iso,
    parse_iso,
    parse_view,
    scoped_key,
    series,
    top_n,
    totals,
    unscoped,
    window_start,
)

from shared.event import DEFAULT_PRODUCT_VIEW_TYPES

T0 = parse_iso("2026-11-27T10:00:00Z")


def event(**fields: object) -> bytes:
    base = {"event_id": "e1", "collection": "view_product_detail", "event_time": "2026-11-27T10:00:30.250Z"}
    base |= {"product_id": "p1", "store_id": "6"}
    base.update(fields)
    return orjson.dumps({k: v for k, v in base.items() if v is not None})


def test_a_product_view_is_parsed_with_its_event_time_in_utc() -> None:
    assert parse_view(event(), DEFAULT_PRODUCT_VIEW_TYPES) == View(T0 + 30.25, "p1", "6")


def test_only_configured_collections_count() -> None:
    assert parse_view(event(collection="add_to_cart_action"), DEFAULT_PRODUCT_VIEW_TYPES) is None
    assert parse_view(event(collection="add_to_cart_action"), ("view_product_detail", "add_to_cart_action")) is not None


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[1, 2]",
        event(product_id=None),
        event(product_id=""),
        event(product_id=42),
        event(event_time=None),
        event(event_time="yesterday"),
        event(collection=None),
    ],
)
def test_records_that_are_not_countable_views_are_skipped(raw: bytes) -> None:
    assert parse_view(raw, DEFAULT_PRODUCT_VIEW_TYPES) is None


def test_a_view_without_store_is_counted_under_unknown() -> None:
    view = parse_view(event(store_id=None), DEFAULT_PRODUCT_VIEW_TYPES)
    assert view is not None and view.store_id == UNKNOWN


def test_offsets_and_naive_times_are_read_as_utc() -> None:
    assert parse_view(event(event_time="2026-11-27T11:00:30.250+01:00"), DEFAULT_PRODUCT_VIEW_TYPES) == View(T0 + 30.25, "p1", "6")
    assert parse_view(event(event_time="2026-11-27T10:00:30.250"), DEFAULT_PRODUCT_VIEW_TYPES) == View(T0 + 30.25, "p1", "6")


def test_scoped_keys_round_trip_ids_containing_slashes() -> None:
    assert unscoped(scoped_key(3, "a/b")) == "a/b"


def test_window_start_is_the_tumbling_window_faust_uses() -> None:
    assert window_start(T0 + 59.999, 60) == T0
    assert window_start(T0 + 60, 60) == T0 + 60


def entries() -> list:
    w = (float(T0), T0 + 59.9)
    w2 = (float(T0 + 60), T0 + 119.9)
    return [
        (("0/p1", w), 2),
        (("3/p1", w), 5),  # the same product on another partition: summed
        (("1/p2", w), 4),
        (("1/p2", w2), 1),
        (("2/p3", (float(T0 - 60), T0 - 0.1)), 9),  # before the range
        (("2/p4", w2), 0),  # zero counts are not ids with views
    ]


def test_counts_by_window_sums_partitions_and_honours_the_range() -> None:
    assert counts_by_window(entries(), int(T0), int(T0) + 120) == {int(T0): {"p1": 7, "p2": 4}, int(T0) + 60: {"p2": 1}}
    assert counts_by_window(entries(), int(T0) + 60, int(T0) + 120) == {int(T0) + 60: {"p2": 1}}


def test_series_has_every_window_zeros_included() -> None:
    by_window = counts_by_window(entries(), int(T0) - 60, int(T0) + 180)
    assert series(by_window, int(T0) - 60, int(T0) + 180, 60) == [(int(T0) - 60, 9), (int(T0), 11), (int(T0) + 60, 1), (int(T0) + 120, 0)]


def test_top_n_orders_by_count_then_id() -> None:
    counts = totals({1: {"b": 3, "a": 3, "c": 1}, 2: {"c": 5}})
    assert counts == {"a": 3, "b": 3, "c": 6}
    assert top_n(counts, 2) == [("c", 6), ("a", 3)]


def test_iso_round_trip() -> None:
    assert iso(T0) == "2026-11-27T10:00:00Z"
    assert parse_iso(iso(T0 + 61)) == T0 + 61


def test_add_view_counts_each_offset_once() -> None:
    value = add_view([], 10)
    assert value == [1, 10]
    value = add_view(value, 12)
    assert value == [2, 12]
    # Redelivered after a restart (offsets at or below the last counted one): skipped.
    assert add_view(value, 12) is None
    assert add_view(value, 11) is None
    assert add_view(value, 13) == [3, 13]


def test_counts_by_window_reads_table_values() -> None:
    w = (float(T0), T0 + 59.9)
    assert counts_by_window([(("0/p1", w), [4, 99]), (("1/p1", w), [1, 7])], int(T0), int(T0) + 60) == {int(T0): {"p1": 5}}
