"""``copy_record``: exact outputs and refusals for each rule of issue 14 (expectations written out here)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from bridge import records
from bridge.event_times import EventRules
from bridge.records import DEFAULT_MAX_VALUE_BYTES, Refusal, copy_record
from bridge.settings import BridgeSettings

BRIDGED_AT = datetime(2026, 12, 2, 10, 0, 0, 123456, tzinfo=UTC)
BRIDGED_AT_TEXT = "2026-12-02T10:00:00.123Z"
COORDS: dict[str, Any] = {"topic": "product_views", "partition": 2, "offset": 99}
ADDED = {"source_topic": "product_views", "source_partition": 2, "source_offset": 99, "bridged_at": BRIDGED_AT_TEXT}
HEAD = b'{"_id":"5ed8cb2bc671fc36b74653ad","collection":"view_home_page","time_stamp":1589733273'


def copy(value: bytes | None, **kw: Any) -> tuple[bytes, bytes] | Refusal:
    return copy_record(value, b"remote-key", **COORDS, bridged_at=BRIDGED_AT, **kw)


def copied(value: bytes, **kw: Any) -> tuple[bytes, dict[str, Any]]:
    result = copy(value, **kw)
    assert not isinstance(result, Refusal), result
    key, out = result
    return key, json.loads(out)


def refusal(value: bytes | None, **kw: Any) -> Refusal:
    result = copy(value, **kw)
    assert isinstance(result, Refusal), result
    return result


def event_of(extra: bytes) -> bytes:
    return HEAD + extra + b"}"


def test_valid_record_gives_the_exact_local_key_and_value() -> None:
    value = (
        b'{"_id":"5ed8cb2bc671fc36b74653ad","time_stamp":1589733273,"collection":" view_product_detail ",'
        b'"product_id":110474,"device_id":"dev-1","n":1E5,"x":{"y":[1,-2.5,null]}}'
    )
    key, out = copy(value)
    assert key == b"dev-1"
    assert out == (
        b'{"time_stamp":1589733273,"collection":"view_product_detail","product_id":"110474","device_id":"dev-1",'
        b'"n":100000.0,"x":{"y":[1,-2.5,null]},"event_id":"5ed8cb2bc671fc36b74653ad","source_shape":"glamira",'
        b'"event_time":"2020-05-17T16:34:33.000Z","source_topic":"product_views","source_partition":2,'
        b'"source_offset":99,"bridged_at":"2026-12-02T10:00:00.123Z"}'
    )


# ---- depth ----


@pytest.mark.parametrize("depth", [65, 256, 600, 1024, 1100])
def test_nesting_deeper_than_64_is_too_deep(depth: int) -> None:
    # The event object is level 1: "nest" holds depth-1 more levels.
    for opener, closer in ((b"[", b"]"), (b'{"a":', b"}")):
        value = event_of(b',"nest":' + opener * (depth - 1) + b"1" + closer * (depth - 1))
        got = refusal(value)
        assert (got.stage, got.error_class) == ("bridge.validate", "TooDeep")
        assert "64" in got.message


def test_nesting_of_exactly_64_is_copied() -> None:
    value = event_of(b',"nest":' + b"[" * 63 + b"7" + b"]" * 63)
    _, event = copied(value)
    inner = event["nest"]
    for _ in range(62):
        inner = inner[0]
    assert inner == [7]


# ---- integers ----


def test_integer_beyond_int64_outside_the_ids_is_refused_not_turned_into_a_double() -> None:
    for number in (
        b"1180591620717411303424",
        b"-1180591620717411303424",
        b"9223372036854775808",
        b"-9223372036854775809",
        b"18446744073709551616",
    ):
        got = refusal(event_of(b',"stats":{"views":[' + number + b"]}"))
        assert (got.stage, got.error_class) == ("bridge.validate", "IntegerOutOfRange"), number
        assert number.decode() in got.message and "64-bit" in got.message


def test_int64_bounds_are_copied_exactly() -> None:
    _, event = copied(event_of(b',"hi":9223372036854775807,"lo":-9223372036854775808'))
    assert (event["hi"], event["lo"]) == (9223372036854775807, -9223372036854775808)


@pytest.mark.parametrize(
    ("literal", "text"),
    [
        (b"1180591620717411303424", "1180591620717411303424"),  # 2**70
        (b"18446744073709551616", "18446744073709551616"),  # 2**64
        (b"-9223372036854775809", "-9223372036854775809"),
        (b"123456789012345678901234567890", "123456789012345678901234567890"),
        (b"9007199254740993", "9007199254740993"),  # 2**53 + 1: a double would say ...992
    ],
)
def test_ids_of_any_size_become_their_exact_decimal_string(literal: bytes, text: str) -> None:
    value = b'{"collection":"view_product_detail","time_stamp":1589733273,"product_id":' + literal + b',"order_id":' + literal + b"}"
    _, event = copied(value)
    assert (event["product_id"], event["order_id"]) == (text, text)


def test_big_integer_inside_an_id_field_that_is_not_a_scalar_is_out_of_range() -> None:
    # order_id is not an id here, so it would be kept as it came (issue 29), but no store holds
    # 2**70 exactly: the storage limit still refuses it.
    got = refusal(b'{"collection":"checkout","time_stamp":1589733273,"order_id":[1180591620717411303424]}')
    assert (got.stage, got.error_class) == ("bridge.validate", "IntegerOutOfRange")
    assert got.message == "order_id[0] = 1180591620717411303424 is outside the signed 64-bit range BSON can store"


# ---- reserved names ----

RESERVED = ["event_id", "event_time", "source_shape", "source_topic", "source_partition", "source_offset", "bridged_at"]
RESERVED += ["ingested_at", "ingest_hour", "event_date", "part"]


@pytest.mark.parametrize("name", RESERVED)
def test_a_source_field_with_a_reserved_name_is_kept_under_orig(name: str) -> None:
    key, event = copied(event_of(b',"' + name.encode() + b'":"from the source"'))
    assert event["orig_" + name] == "from the source"
    assert event["event_id"] == "5ed8cb2bc671fc36b74653ad"
    assert event["event_time"] == "2020-05-17T16:34:33.000Z"
    assert {k: event[k] for k in ADDED} == ADDED
    assert event["source_shape"] == "glamira"
    assert key == b"5ed8cb2bc671fc36b74653ad"
    for sink_field in ("ingested_at", "ingest_hour", "event_date", "part"):
        assert sink_field not in event


def test_prefix_rule_is_injective_and_only_top_level_names_change() -> None:
    value = event_of(b',"event_id":1,"orig_event_id":2,"orig_":3,"original":4,"nested":{"event_id":5,"orig_x":6}')
    _, event = copied(value)
    assert (event["orig_event_id"], event["orig_orig_event_id"], event["orig_orig_"], event["original"]) == (1, 2, 3, 4)
    assert event["nested"] == {"event_id": 5, "orig_x": 6}
    assert event["event_id"] == "5ed8cb2bc671fc36b74653ad"


def test_a_key_that_only_contains_the_prefix_keeps_its_name() -> None:
    _, event = copied(event_of(b',"a\\u0000orig_b":1,"x orig_":2'))
    assert (event["a\x00orig_b"], event["x orig_"]) == (1, 2)
    assert "orig_a\x00orig_b" not in event


def test_reserved_names_do_not_change_what_is_read() -> None:
    """``_id``, ``collection``, ``time_stamp`` and the ids are read as before; an ``event_time``
    in the source is not the event time."""
    value = (
        b'{"time_stamp":1589733273,"collection":"view_product_detail","product_id":5,"event_time":"2099-01-01T00:00:00Z","bridged_at":0}'
    )
    _, event = copied(value)
    assert event["event_time"] == "2020-05-17T16:34:33.000Z"
    assert event["orig_event_time"] == "2099-01-01T00:00:00Z" and event["orig_bridged_at"] == 0
    assert event["product_id"] == "5"
    assert event["event_id"] == _coords_id().decode()  # no _id: the coordinates' hash


# ---- event times ----

FLOOR_S = 946_684_800  # 2000-01-01T00:00:00Z
BRIDGED_S = 1_796_205_600  # 2026-12-02T10:00:00Z; BRIDGED_AT is 0.123456 s later
CEILING_S = BRIDGED_S + 86_400  # 2026-12-03T10:00:00Z, just under the ceiling (BRIDGED_AT + 1 day)


def glamira_at(seconds: str) -> bytes:
    return b'{"collection":"view_home_page","time_stamp":' + seconds.encode() + b"}"


@pytest.mark.parametrize(
    ("time_stamp", "event_time"),
    [
        (str(FLOOR_S), "2000-01-01T00:00:00.000Z"),
        ('"946684800.0"', "2000-01-01T00:00:00.000Z"),
        (str(BRIDGED_S), "2026-12-02T10:00:00.000Z"),
        (str(CEILING_S), "2026-12-03T10:00:00.000Z"),
        (f'"{CEILING_S}.123"', "2026-12-03T10:00:00.123Z"),
    ],
)
def test_times_inside_the_window_are_copied(time_stamp: str, event_time: str) -> None:
    assert copied(glamira_at(time_stamp))[1]["event_time"] == event_time


@pytest.mark.parametrize(
    ("value", "shown", "bound"),
    [
        (glamira_at(str(FLOOR_S - 1)), "1999-12-31T23:59:59.000Z", "before the floor 2000-01-01T00:00:00.000Z"),
        (glamira_at("0"), "1970-01-01T00:00:00.000Z", "before the floor 2000-01-01T00:00:00.000Z"),
        (glamira_at("-2208988800"), "1900-01-01T00:00:00.000Z", "before the floor 2000-01-01T00:00:00.000Z"),
        (glamira_at(str(CEILING_S + 1)), "2026-12-03T10:00:01.000Z", "after 2026-12-03T10:00:00.123Z"),
        (glamira_at("4070908800"), "2099-01-01T00:00:00.000Z", "after 2026-12-03T10:00:00.123Z"),
        (glamira_at("7258118400"), "2200-01-01T00:00:00.000Z", "after 2026-12-03T10:00:00.123Z"),
        (b'{"product_id":"1","timestamp":"2099-06-01T12:00:00+02:00"}', "2099-06-01T10:00:00.000Z", "after 2026-12-03T10:00:00.123Z"),
        (b'{"product_id":"1","timestamp":"1970-01-01 00:00:00"}', "1970-01-01T00:00:00.000Z", "before the floor"),
    ],
)
def test_implausible_event_times_are_refused_with_the_time_and_the_bound(value: bytes, shown: str, bound: str) -> None:
    got = refusal(value)
    assert (got.stage, got.error_class) == ("bridge.validate", "ImplausibleEventTime")
    assert f"event time {shown}" in got.message and bound in got.message


def test_the_ceiling_is_bridged_at_plus_the_tolerance_to_the_microsecond() -> None:
    assert copied(glamira_at(f"{CEILING_S}.123456"))[1]["event_time"] == "2026-12-03T10:00:00.123Z"  # == the ceiling
    got = refusal(glamira_at(f"{CEILING_S}.123457"))
    assert got.message == (
        "event time 2026-12-03T10:00:00.123Z is after 2026-12-03T10:00:00.123Z (86400s after bridged_at 2026-12-02T10:00:00.123Z)"
    )


def test_rules_come_from_the_caller() -> None:
    rules = EventRules(event_time_floor=datetime(2020, 6, 1, tzinfo=UTC), event_time_max_ahead_s=0)
    assert refusal(glamira_at("1589733273"), rules=rules).message.endswith("before the floor 2020-06-01T00:00:00.000Z")
    got = refusal(glamira_at(str(BRIDGED_S + 1)), rules=rules)  # 10:00:01 is after bridged_at (10:00:00.123)
    assert (
        got.message
        == "event time 2026-12-02T10:00:01.000Z is after 2026-12-02T10:00:00.123Z (0s after bridged_at 2026-12-02T10:00:00.123Z)"
    )
    assert copied(glamira_at(str(BRIDGED_S)), rules=rules)[1]["event_time"] == "2026-12-02T10:00:00.000Z"


def test_event_rules_need_an_aware_floor_and_a_non_negative_tolerance() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        EventRules(event_time_floor=datetime(2000, 1, 1))
    with pytest.raises(ValueError, match=">= 0"):
        EventRules(event_time_max_ahead_s=-1)


def test_times_out_of_any_range_are_wrong_types_not_crashes() -> None:
    for value in (glamira_at('"' + "1" * 5000 + '"'), glamira_at("1e300"), b'{"product_id":"1","timestamp":"0001-01-01T00:00:00+01:00"}'):
        got = refusal(value)
        assert (got.stage, got.error_class) == ("bridge.validate", "WrongType"), value[:80]
        assert "out of range" in got.message


def test_settings_give_the_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REMOTE_KAFKA_BOOTSTRAP_SERVERS", "remote:9092")
    monkeypatch.setenv("LOCAL_KAFKA_BOOTSTRAP_SERVERS", "local:9092")
    assert BridgeSettings().event_rules() == EventRules(datetime(2000, 1, 1, tzinfo=UTC), 86_400.0)
    monkeypatch.setenv("BRIDGE_EVENT_TIME_FLOOR", "2019-01-01T00:00:00Z")
    monkeypatch.setenv("BRIDGE_EVENT_TIME_MAX_AHEAD_S", "3600")
    assert BridgeSettings().event_rules() == EventRules(datetime(2019, 1, 1, tzinfo=UTC), 3600.0)
    monkeypatch.setenv("BRIDGE_EVENT_TIME_FLOOR", "2019-01-01T00:00:00")  # naive: which zone?
    with pytest.raises(ValueError, match="timezone"):
        BridgeSettings()


# ---- size ----


def test_an_event_that_grows_beyond_the_local_limit_is_oversized() -> None:
    """240 000 x ``1E5`` is 960 001 bytes of input (under the 1 000 000 byte limit of a record) and
    2 160 000 bytes once normalized (``100000.0``): more than a local record may hold."""
    numbers = b"[" + b",".join([b"1E5"] * 240_000) + b"]"
    value = event_of(b',"n":' + numbers)
    assert len(value) < 1_000_000
    got = refusal(value)
    assert (got.stage, got.error_class) == ("bridge.encode", "OversizedEvent")
    assert f"more than the {2_000_000 - 65_536}" in got.message
    assert DEFAULT_MAX_VALUE_BYTES == 2_000_000 - 65_536


def test_the_limit_counts_key_and_value() -> None:
    value = b'{"collection":"view_home_page","time_stamp":1589733273,"device_id":"dd"}'
    expected = (
        b'{"collection":"view_home_page","time_stamp":1589733273,"device_id":"dd",'
        b'"event_id":"' + _coords_id() + b'","source_shape":"glamira","event_time":"2020-05-17T16:34:33.000Z",'
        b'"source_topic":"product_views","source_partition":2,"source_offset":99,"bridged_at":"2026-12-02T10:00:00.123Z"}'
    )
    limit = len(b"dd") + len(expected)
    assert copy(value, max_value_bytes=limit) == (b"dd", expected)
    got = refusal(value, max_value_bytes=limit - 1)
    assert (
        got.message
        == f"the normalized event is {limit} bytes (key 2, value {limit - 2}), more than the {limit - 1} a local record may hold"
    )


def _coords_id() -> bytes:
    import hashlib

    return hashlib.sha256(b"product_views/2/99").hexdigest()[:32].encode()


# ---- the boundary itself ----


@pytest.mark.parametrize(
    ("value", "stage", "error_class"),
    [
        (None, "bridge.decode", "EmptyRecord"),
        (b"", "bridge.decode", "EmptyRecord"),
        (b"\xff", "bridge.decode", "NotUTF8"),
        (b'{"a":"\\ud800"}', "bridge.decode", "NotJSON"),
        (b'{"a":1e400}', "bridge.decode", "NotJSON"),
        (b"[1]", "bridge.validate", "NotAnObject"),
    ],
)
def test_undecodable_records_keep_their_stage_and_class(value: bytes | None, stage: str, error_class: str) -> None:
    got = refusal(value)
    assert (got.stage, got.error_class) == (stage, error_class) and got.message


def test_a_surprise_in_normalize_is_a_refusal_of_that_record(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(records, "normalize", boom)
    assert copy(b"{}") == Refusal("bridge.normalize", "RuntimeError", "boom")


def test_a_surprise_while_encoding_is_a_refusal_at_encode(monkeypatch: pytest.MonkeyPatch) -> None:
    def silent(*args: Any, **kwargs: Any) -> Any:
        raise KeyError()

    monkeypatch.setattr(records, "output_key", silent)
    assert copy(event_of(b"")) == Refusal("bridge.encode", "KeyError", "KeyError")


def test_a_message_that_cannot_be_utf_8_is_escaped_for_the_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    def surrogate(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("bad \ud800 é")

    monkeypatch.setattr(records, "normalize", surrogate)
    got = refusal(b"{}")
    assert got == Refusal("bridge.normalize", "ValueError", "bad \\ud800 é")
    got.message.encode()


def test_the_600_deep_record_of_issue_14_is_refused_not_raised() -> None:
    got = refusal(event_of(b',"nest":' + b"[" * 600 + b"]" * 600))
    assert got == Refusal("bridge.validate", "TooDeep", "objects/arrays nested 65+ levels deep, more than 64")
