"""The bridge's pure transform on good and bad records of every kind (exact outputs)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from bridge.event_times import format_utc
from bridge.transform import normalize, output_key

from shared.errors import InvalidEventError
from shared.event import BAD_KINDS, MAX_EVENT_BYTES, event_id_from_coordinates

BRIDGED_AT = datetime(2026, 11, 27, 21, 0, 1, 234567, tzinfo=UTC)
COORDS = {"topic": "product_views", "partition": 3, "offset": 42}
ADDED = {
    "source_topic": "product_views",
    "source_partition": 3,
    "source_offset": 42,
    "bridged_at": "2026-11-27T21:00:01.234Z",
}

GLAMIRA_VIEW: dict[str, Any] = {
    "_id": "5ed8cb2bc671fc36b74653ad",
    "time_stamp": 1589733273,
    "ip": "5.88.29.169",
    "user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 13_4 like Mac OS X)",
    "resolution": "375x667",
    "user_id_db": "",
    "device_id": "a2b4c6d8-0000-4000-8000-000000000001",
    "api_version": "1.0",
    "store_id": 12,
    "local_time": "2020-05-17 9:34:33",
    "show_recommendation": "false",
    "current_url": "https://www.glamira.fr/glamira-pendant-viktor.html?alloy=yellow-375",
    "referrer_url": "https://www.google.com/",
    "email_address": "",
    "collection": "view_product_detail",
    "product_id": 110474,
    "option": [{"option_label": "alloy", "option_id": "1", "value_label": "yellow-375", "value_id": "2"}],
    "recommendation": False,
    "utm_source": False,
    "utm_medium": False,
}

SEED_DOC: dict[str, Any] = {
    "product_id": "110474",
    "device_id": "d-1",
    "store_id": "6",
    "referrer_url": "",
    "local_time": "2024-05-01T10:00:00.123456",
    "remote_ip": "10.0.0.1",
    "timestamp": "2024-05-01T08:00:00.123456Z",
}


def run(doc: Any, **coords: Any) -> dict[str, Any]:
    value = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    return normalize(value, b"k", **{**COORDS, **coords}, bridged_at=BRIDGED_AT)


def refused(value: bytes | None) -> InvalidEventError:
    with pytest.raises(InvalidEventError) as info:
        normalize(value, b"k", **COORDS, bridged_at=BRIDGED_AT)
    return info.value


def test_glamira_product_view_is_normalized_and_keeps_every_field() -> None:
    expected = {k: v for k, v in GLAMIRA_VIEW.items() if k != "_id"}
    expected.update(
        store_id="12",
        product_id="110474",
        local_time="2020-05-17 09:34:33",
        event_id="5ed8cb2bc671fc36b74653ad",
        source_shape="glamira",
        event_time="2020-05-17T16:34:33.000Z",
        **ADDED,
    )
    assert run(GLAMIRA_VIEW) == expected


def test_event_without_id_gets_the_hash_of_its_coordinates() -> None:
    doc = {k: v for k, v in GLAMIRA_VIEW.items() if k != "_id"}
    out = run(doc, partition=0, offset=7)
    assert out["event_id"] == event_id_from_coordinates("product_views", 0, 7)
    assert out["event_id"] == run(doc, partition=0, offset=7)["event_id"]
    assert out["event_id"] != run(doc, partition=0, offset=8)["event_id"]
    assert out["source_partition"] == 0 and out["source_offset"] == 7


def test_seed_shape_gets_default_collection_and_utc_times() -> None:
    assert run(SEED_DOC) == {
        **SEED_DOC,
        "local_time": "2024-05-01 10:00:00.123456",
        "event_id": event_id_from_coordinates("product_views", 3, 42),
        "collection": "view_product_detail",
        "source_shape": "seed",
        "event_time": "2024-05-01T08:00:00.123Z",
        **ADDED,
    }


def test_seed_timestamp_with_offset_is_converted_to_utc() -> None:
    out = run({**SEED_DOC, "timestamp": "2024-05-01T10:00:00.5+02:00"})
    assert out["event_time"] == "2024-05-01T08:00:00.500Z"
    assert run({**SEED_DOC, "timestamp": "2024-05-01 08:00:00"})["event_time"] == "2024-05-01T08:00:00.000Z"


def test_checkout_with_float_order_id_and_cart_products() -> None:
    doc = {
        "_id": {"$oid": "5ed8cb2bc671fc36b74653ae"},
        "time_stamp": "1589733273.25",
        "collection": "checkout",
        "device_id": "dev",
        "order_id": 778899.0,
        "user_id_db": 502567,
        "cart_products": [{"product_id": 9, "amount": 1, "price": "296.00", "currency": "CHF", "option": ""}],
        "local_time": "2020-06-04 12:21:27",
        "extra_unknown": {"nested": [1, 2]},
    }
    out = run(doc)
    assert out == {
        "time_stamp": "1589733273.25",
        "collection": "checkout",
        "device_id": "dev",
        "order_id": "778899",
        "user_id_db": "502567",
        "cart_products": [{"product_id": 9, "amount": 1, "price": "296.00", "currency": "CHF", "option": ""}],
        "local_time": "2020-06-04 12:21:27",
        "extra_unknown": {"nested": [1, 2]},
        "event_id": "5ed8cb2bc671fc36b74653ae",
        "source_shape": "glamira",
        "event_time": "2020-05-17T16:34:33.250Z",
        **ADDED,
    }


def test_non_product_event_needs_no_product_id_and_recommendation_ids_become_strings() -> None:
    doc = {
        "_id": "5ed8cb2bc671fc36b74653af",
        "time_stamp": 1589733273.9996,
        "collection": "product_detail_recommendation_clicked",
        "viewing_product_id": 12,
        "recommendation_product_id": " 34 ",
        "recommendation_product_position": 2,
        "store_id": None,
    }
    out = run(doc)
    assert out["viewing_product_id"] == "12"
    assert out["recommendation_product_id"] == "34"
    assert out["recommendation_product_position"] == 2
    assert out["store_id"] is None
    assert out["event_time"] == "2020-05-17T16:34:33.999Z"


def test_output_key_is_the_visitor_else_the_event() -> None:
    assert output_key(run(GLAMIRA_VIEW)) == b"a2b4c6d8-0000-4000-8000-000000000001"
    assert output_key(run({**GLAMIRA_VIEW, "device_id": ""})) == b"5ed8cb2bc671fc36b74653ad"
    assert output_key(run({k: v for k, v in GLAMIRA_VIEW.items() if k != "device_id"})) == b"5ed8cb2bc671fc36b74653ad"


def test_format_utc_converts_and_cuts_to_milliseconds() -> None:
    moment = datetime(2020, 1, 1, 1, 0, 0, 999999, tzinfo=timezone(timedelta(hours=2)))
    assert format_utc(moment) == "2019-12-31T23:00:00.999Z"


# ---- bad input: one case per generator kind (shared.event.BAD_KINDS), plus the rules' edges ----

BAD: dict[str, tuple[bytes | None, str, str, str]] = {
    # kind: (value, stage, error_class, reason fragment)
    "not_json": (b'{"_id": "x", "collection": ', "decode", "NotJSON", "not JSON"),
    "not_utf8": (b'{"product_id": "\xff\xfe"}', "decode", "NotUTF8", "not UTF-8"),
    "json_array": (orjson.dumps([GLAMIRA_VIEW]), "validate", "NotAnObject", "JSON list is not an object"),
    "missing_product_id": (
        orjson.dumps({k: v for k, v in GLAMIRA_VIEW.items() if k != "product_id"}),
        "validate",
        "MissingField",
        "view_product_detail event has no product_id",
    ),
    "wrong_types": (orjson.dumps({**GLAMIRA_VIEW, "product_id": {"id": 1}}), "validate", "WrongType", "product_id is dict"),
    "oversized": (
        orjson.dumps({**GLAMIRA_VIEW, "pad": "x" * MAX_EVENT_BYTES}),
        "decode",
        "OversizedRecord",
        "more than 1000000",
    ),
    "empty": (b"", "decode", "EmptyRecord", "empty record"),
}


def test_every_generator_bad_kind_has_a_case() -> None:
    assert set(BAD) == set(BAD_KINDS)


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_kind_is_refused_with_stage_and_reason(kind: str) -> None:
    value, stage, error_class, fragment = BAD[kind]
    err = refused(value)
    assert (err.stage, err.error_class) == (stage, error_class)
    assert fragment in err.reason


@pytest.mark.parametrize(
    ("doc", "error_class", "fragment"),
    [
        ({**GLAMIRA_VIEW, "product_id": True}, "WrongType", "product_id is a bool"),
        ({**GLAMIRA_VIEW, "product_id": 1.5}, "WrongType", "product_id is float"),
        ({**SEED_DOC, "product_id": ["1"]}, "WrongType", "product_id is list"),
        ({**GLAMIRA_VIEW, "product_id": "  "}, "MissingField", "has no product_id"),
        ({**GLAMIRA_VIEW, "product_id": None}, "MissingField", "has no product_id"),
        ({**GLAMIRA_VIEW, "time_stamp": "yesterday"}, "WrongType", "not unix seconds"),
        ({**GLAMIRA_VIEW, "time_stamp": True}, "WrongType", "not unix seconds"),
        ({**GLAMIRA_VIEW, "time_stamp": 10**15}, "WrongType", "out of range"),
        ({k: v for k, v in GLAMIRA_VIEW.items() if k != "time_stamp"}, "MissingField", "time_stamp is missing"),
        ({**GLAMIRA_VIEW, "collection": ""}, "MissingField", "collection is missing"),
        ({**GLAMIRA_VIEW, "collection": 5}, "WrongType", "collection is int"),
        ({**GLAMIRA_VIEW, "_id": 17}, "WrongType", "_id is int"),
        ({**SEED_DOC, "timestamp": "1 May"}, "WrongType", "not ISO-8601"),
        ({**SEED_DOC, "timestamp": 1714550400}, "WrongType", "timestamp is int"),
        ({k: v for k, v in SEED_DOC.items() if k != "timestamp"}, "MissingField", "neither time_stamp nor timestamp"),
        ({k: v for k, v in SEED_DOC.items() if k != "product_id"}, "MissingField", "has no product_id"),
        ("a string", "NotAnObject", "JSON str is not an object"),
        (None, "NotAnObject", "JSON NoneType is not an object"),
    ],
)
def test_rule_edges_are_refused(doc: Any, error_class: str, fragment: str) -> None:
    err = refused(orjson.dumps(doc))
    assert err.error_class == error_class
    assert err.stage == "validate"
    assert fragment in err.reason


@pytest.mark.parametrize(
    ("field", "raw"),
    [
        ("store_id", 1.5),
        ("store_id", True),
        ("device_id", ["a"]),
        ("device_id", {"id": 1}),
        ("user_id_db", False),
        ("local_time", "2020-13-01 00:00:00"),
        ("local_time", "noon"),
        ("local_time", "2020-05-17T09:34:33+02:00"),
        ("local_time", 1589733273),
        ("referrer_url", 5),
        ("user_agent", ["Mozilla"]),
        ("resolution", 375),
        ("current_url", {"href": "x"}),
        ("option", "alloy"),
    ],
)
def test_a_field_the_analytics_does_not_need_is_kept_as_it_came(field: str, raw: Any) -> None:
    kept: list[str] = []
    event = normalize(orjson.dumps({**GLAMIRA_VIEW, field: raw}), b"k", **COORDS, bridged_at=BRIDGED_AT, kept_as_came=kept)
    assert event[field] == raw and type(event[field]) is type(raw)
    assert kept == [field]
    assert (event["event_time"], event["product_id"], event["collection"]) == ("2020-05-17T16:34:33.000Z", "110474", "view_product_detail")


def test_a_non_product_event_keeps_a_product_id_that_is_not_an_id() -> None:
    kept: list[str] = []
    doc = {**GLAMIRA_VIEW, "collection": "view_listing_page", "product_id": {"id": 7}}
    event = normalize(orjson.dumps(doc), b"k", **COORDS, bridged_at=BRIDGED_AT, kept_as_came=kept)
    assert (event["product_id"], kept) == ({"id": 7}, ["product_id"])


@pytest.mark.parametrize(
    ("text", "event_time"),
    [
        ("2024-05-01t08:00:00.5z", "2024-05-01T08:00:00.500Z"),
        ("2024-05-01 10:00:00+02:00", "2024-05-01T08:00:00.000Z"),
        ("2024-05-01T08:00:00.123456789Z", "2024-05-01T08:00:00.123Z"),
        ("2024-05-01T09:00:00+0100", "2024-05-01T08:00:00.000Z"),
        ("2024-05-01T07:00:00-01", "2024-05-01T08:00:00.000Z"),
        ("20240501T080000Z", "2024-05-01T08:00:00.000Z"),
        ("2024-05-01T08:00:00,25Z", "2024-05-01T08:00:00.250Z"),
        ("2024-05-01T07:59:60Z", "2024-05-01T07:59:59.999Z"),
    ],
)
def test_event_times_in_any_iso_8601_form_are_understood(text: str, event_time: str) -> None:
    assert run({**SEED_DOC, "timestamp": text})["event_time"] == event_time
    assert run({**GLAMIRA_VIEW, "time_stamp": text})["event_time"] == event_time


def test_none_value_is_empty() -> None:
    assert refused(None).error_class == "EmptyRecord"


def test_exactly_max_bytes_is_not_oversized() -> None:
    doc = {**GLAMIRA_VIEW, "pad": ""}
    base = len(orjson.dumps(doc))
    doc["pad"] = "x" * (MAX_EVENT_BYTES - base)
    value = orjson.dumps(doc)
    assert len(value) == MAX_EVENT_BYTES
    assert run(value)["pad"] == doc["pad"]


def test_the_layout_cache_stays_bounded_whatever_the_names() -> None:
    from bridge import transform

    transform._LAYOUTS.clear()
    for i in range(transform._MAX_LAYOUTS + 10):
        run({**GLAMIRA_VIEW, f"k{i}": 1})
    assert 0 < len(transform._LAYOUTS) <= transform._MAX_LAYOUTS
    transform._LAYOUTS.clear()
    run({**GLAMIRA_VIEW, "n" * 5000: 1})  # names longer than 4 096 characters in all
    run({**GLAMIRA_VIEW, **{f"f{i}": i for i in range(70)}})  # more than 64 names
    assert transform._LAYOUTS == {}
    event = run({**GLAMIRA_VIEW, "event_id": "x", "store_id": 7})  # a renamed layout is right too
    assert (event["orig_event_id"], event["store_id"]) == ("x", "7")
