"""Property: ``copy_record`` never raises, whatever the bytes, and what it copies is the source, exactly.

The records are generated as bytes (so nesting goes to 1 100 levels without ``json.dumps``
recursing, number literals like ``1E5`` or ``1e400`` appear verbatim, and duplicate keys are real):
NUL and lone surrogates in strings and keys (as ``\\ud800`` escapes and as raw invalid UTF-8),
``$``/``.``/empty keys, integers up to ±2**70 and around the int64 bounds, floats, huge strings,
the pipeline's own field names, event times 1900-2200 in every accepted spelling.

Every expectation is computed here from the source text with the standard library
(``json.loads``: exact integers, last duplicate wins), never by the code under test.
"""

from __future__ import annotations

import json
import math
import os
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from bridge.records import Refusal, copy_record
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("BRIDGE_PROPERTY_EXAMPLES", "500"))
BRIDGED_AT = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
FLOOR = datetime(2000, 1, 1, tzinfo=UTC)
CEILING = BRIDGED_AT + timedelta(days=1)
TOPIC, PARTITION = "product_views", 4
STAGES = {"bridge.decode", "bridge.validate", "bridge.encode"}  # "bridge.normalize" would be a bug: an unforeseen exception
# Written out here, not imported: the names the bridge and the sink add to an event.
PIPELINE_NAMES = {
    "event_id",
    "event_time",
    "source_shape",
    "source_topic",
    "source_partition",
    "source_offset",
    "bridged_at",
    "ingested_at",
    "ingest_hour",
    "event_date",
    "part",
}
ID_FIELDS = {"product_id", "store_id", "device_id", "user_id_db", "order_id", "viewing_product_id", "recommendation_product_id"}
T_1900 = int(datetime(1900, 1, 1, tzinfo=UTC).timestamp())
T_2200 = int(datetime(2200, 1, 1, tzinfo=UTC).timestamp())
EVENT_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")

# ------------------------------------------------------------------------------------ generators

special = st.sampled_from(["\x00", "\ud800", "\udfff", "$", ".", "", "$gt", "a.b", "é", "😀", '"', "\\", "orig_"])
nasty_text = st.lists(special | st.text(max_size=5), max_size=3).map("".join)
keys = nasty_text | st.sampled_from(
    [*sorted(PIPELINE_NAMES), "orig_event_id", "orig_", "_id", "collection", "product_id", "time_stamp", "timestamp", "local_time"]
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**31), 2**31)
    | st.integers(-(2**31), 2**31)
    | st.integers(-(2**70), 2**70)
    | st.integers(-(2**63) - 2, -(2**63) + 2)
    | st.integers(2**63 - 2, 2**64 + 2)
    | st.floats()
    | nasty_text
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3), max_leaves=10)
# Number literals json.dumps never writes.
RAW_NUMBERS = [b"1E5", b"1e400", b"-1e400", b"1.0e-400", b"-0", b"-0.0", b"18446744073709551616", b"9223372036854775808", b"1" * 30]
ID_VALUES: list[Any] = ["1001", 1001, 2**70, -(2**70), 2**64, "", " 77 ", 1.5, 1e20, True, None, [1], "\x00"]
GOOD_IDS: list[Any] = ["1001", 1001, 2**70, 2**64, " 77 ", 1e20, "\x00"]
COLLECTIONS = ["view_product_detail", "view_listing_page", "select_product_option", "checkout", " checkout ", "", 5]
T_FLOOR, T_CEILING = int(FLOOR.timestamp()), int(CEILING.timestamp())
# Any time in 1900-2200, and the plausible window's edges.
unix_seconds = st.integers(T_1900, T_2200) | st.sampled_from([T_FLOOR - 1, T_FLOOR, T_CEILING, T_CEILING + 1])


def encode(value: Any, ascii_only: bool) -> bytes:
    """JSON text of ``value``; without ``ascii_only`` a lone surrogate becomes invalid UTF-8 bytes."""
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


@st.composite
def time_field(draw: st.DrawFn, shape: str, ascii_only: bool, plausible: bool) -> bytes:
    """``time_stamp`` (Glamira: int, float or numeric text) or ``timestamp`` (seed: ISO-8601)."""
    seconds = draw(st.integers(T_FLOOR, T_CEILING) if plausible else unix_seconds)
    if shape == "glamira":
        spelling = draw(st.sampled_from(["int", "float", "text"]))
        if spelling == "int":
            return b'"time_stamp":' + str(seconds).encode()
        if spelling == "float":
            return b'"time_stamp":' + encode(seconds + draw(st.floats(0, 0.5)), True)
        return b'"time_stamp":' + encode(f" {seconds}.25 ", True)
    moment = datetime.fromtimestamp(seconds, UTC)
    spelling = draw(st.sampled_from(["naive", "z", "offset"]))
    if spelling == "naive":
        text = moment.replace(tzinfo=None).isoformat()
    elif spelling == "z":
        text = moment.replace(tzinfo=None).isoformat() + "Z"
    else:
        text = moment.astimezone(timezone(timedelta(hours=draw(st.integers(-12, 14))))).isoformat()
    return b'"timestamp":' + encode(text, ascii_only)


@st.composite
def records(draw: st.DrawFn) -> bytes:
    """One remote record value. About half are "clean" (good ids, plausible times) so that many
    are copied and their contents checked; the rest may break any rule."""
    kind = draw(st.sampled_from(["glamira", "glamira", "glamira", "seed", "seed", "deep", "garbage", "not_object"]))
    ascii_only = draw(st.booleans())
    if kind == "garbage":
        return draw(st.binary(max_size=40))
    if kind == "not_object":
        return encode(draw(values), ascii_only)
    clean = draw(st.booleans())
    ids = st.sampled_from(GOOD_IDS) if clean else st.sampled_from(ID_VALUES)
    pairs: list[bytes] = []
    if draw(st.booleans()):
        good_ids: list[Any] = ["5ed8cb2bc671fc36b74653ad", " x ", {"$oid": "ab"}, None]
        pairs.append(b'"_id":' + encode(draw(st.sampled_from(good_ids if clean else [*good_ids, "", 17, [1]])), True))
    if kind == "seed":
        pairs.append(draw(time_field("seed", ascii_only, clean)))
    else:
        pairs.append(b'"collection":' + encode(draw(st.sampled_from(COLLECTIONS[:5] if clean else COLLECTIONS)), True))
        pairs.append(draw(time_field("glamira", ascii_only, clean)))
    pairs.append(b'"product_id":' + encode(draw(ids), True))
    for field in draw(st.lists(st.sampled_from(sorted(ID_FIELDS - {"product_id"})), max_size=3, unique=True)):
        pairs.append(encode(field, True) + b":" + encode(draw(ids), True))
    for key, value in draw(st.lists(st.tuples(keys, values), max_size=3)):
        pairs.append(encode(key, ascii_only) + b":" + encode(value, ascii_only))
    if draw(st.integers(0, 4)) == 0:
        pairs.append(b'"n":' + draw(st.sampled_from(RAW_NUMBERS)))
    if draw(st.integers(0, 4)) == 0:  # a duplicate key: the later value wins
        first = draw(st.sampled_from(pairs))
        pairs.append(first.split(b":", 1)[0] + b":" + encode(draw(values), ascii_only))
    if draw(st.integers(0, 14)) == 0:
        pairs.append(b'"big":"' + b"x" * draw(st.sampled_from([10_000, 900_000, 1_100_000])) + b'"')
    if kind == "deep":
        depth = draw(st.integers(1, 1100))
        if draw(st.booleans()):
            pairs.append(b'"nest":' + b"[" * depth + b"1" + b"]" * depth)
        else:
            pairs.append(b'"nest":' + b'{"a":' * depth + b"1" + b"}" * depth)
    draw(st.randoms()).shuffle(pairs)
    return b"{" + b",".join(pairs) + b"}"


# ----------------------------------------------------------------- independent expectations


def source_of(raw: bytes) -> Any:
    """The record as the standard library reads it (exact ints, last duplicate wins), else None."""
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        return None


def depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def ints(value: Any) -> list[int]:
    found, stack = [], [value]
    while stack:
        node = stack.pop()
        if isinstance(node, bool):
            continue
        if isinstance(node, int):
            found.append(node)
        elif isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def kept_name(name: str) -> str:
    return "orig_" + name if name in PIPELINE_NAMES or name.startswith("orig_") else name


def same(a: Any, b: Any) -> bool:
    """Equal as JSON values (NaN equals NaN; 1 and 1.0 are not the same)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def must_refuse(source: Any) -> str | None:
    """A reason the bridge must refuse the record, computed from the source alone (None: not sure)."""
    if not isinstance(source, dict):
        return "not a JSON object"
    if depth(source) > 64:
        return "nested deeper than 64"
    outside_ids = [v for k, v in source.items() if k not in ID_FIELDS]
    nested_ids = [v for k, v in source.items() if k in ID_FIELDS and isinstance(v, dict | list)]
    if any(not -(2**63) <= i < 2**63 for i in ints(outside_ids) + ints(nested_ids)):
        return "integer beyond int64"
    ts = source.get("time_stamp")
    if type(ts) is int and not FLOOR <= datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=ts) <= CEILING:
        return "time_stamp outside the plausible window"
    return None


def expected_id(raw: Any) -> Any:
    if isinstance(raw, str):
        return raw.strip()
    if isinstance(raw, int) and not isinstance(raw, bool):
        return str(raw)
    if isinstance(raw, float) and raw.is_integer():
        return str(int(raw))
    return raw  # not an id: kept as it came (issue 29), unless it is a product event's product_id


# ---------------------------------------------------------------------------------- the property


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(raw=records(), max_value_bytes=st.sampled_from([1_934_464, 1_934_464, 1_934_464, 400]))
@example(raw=b'{"collection":"checkout","time_stamp":1600000000,"nest":' + b"[" * 600 + b"]" * 600 + b"}", max_value_bytes=1_934_464)
@example(raw=b'{"collection":"checkout","time_stamp":1600000000,"n":1180591620717411303424}', max_value_bytes=1_934_464)
@example(raw=b'{"collection":"checkout","time_stamp":"' + b"1" * 5000 + b'"}', max_value_bytes=1_934_464)
def test_copy_record_never_raises_and_copies_exactly(raw: bytes, max_value_bytes: int) -> None:
    result = copy_record(
        raw, b"src-key", topic=TOPIC, partition=PARTITION, offset=17, bridged_at=BRIDGED_AT, max_value_bytes=max_value_bytes
    )
    source = source_of(raw)
    if isinstance(result, Refusal):
        assert result.stage in STAGES, result
        assert result.error_class and result.message, result
        if result.stage == "bridge.encode":
            assert result.error_class == "OversizedEvent", result
        return
    reason = must_refuse(source)
    assert reason is None, f"copied a record it must refuse ({reason}): {raw[:300]!r}"
    key, value = result
    assert isinstance(key, bytes) and key and isinstance(value, bytes)
    assert len(key) + len(value) <= max_value_bytes
    event = json.loads(value)
    assert isinstance(event, dict) and isinstance(source, dict)

    # The contract fields.
    assert isinstance(event["event_id"], str) and event["event_id"]
    assert (event["source_topic"], event["source_partition"], event["source_offset"]) == (TOPIC, PARTITION, 17)
    assert event["bridged_at"] == "2026-12-02T12:00:00.000Z"
    assert event["source_shape"] in ("glamira", "seed")
    assert isinstance(event["collection"], str) and event["collection"]
    assert EVENT_TIME.fullmatch(event["event_time"]), event["event_time"]
    moment = datetime.fromisoformat(event["event_time"].replace("Z", "+00:00"))
    assert FLOOR <= moment <= CEILING
    ts = source.get("time_stamp")
    if type(ts) is int:
        assert moment == datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=ts)
    elif type(ts) is float:
        assert abs((moment - (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=ts))).total_seconds()) < 0.002

    # Every source field is kept, under its kept name; nothing else is added.
    added = {"event_id", "event_time", "source_shape", "source_topic", "source_partition", "source_offset", "bridged_at", "collection"}
    assert set(event) == {kept_name(k) for k in source if k != "_id"} | added
    if isinstance(source.get("_id"), str):
        assert event["event_id"] == source["_id"].strip()
    elif isinstance(source.get("_id"), dict):
        assert event["event_id"] == source["_id"]["$oid"].strip()
    for name, want in source.items():
        if name in ("_id", "local_time"):
            continue
        got = event[kept_name(name)]
        if name in ID_FIELDS:
            assert got == expected_id(want), name
        elif name == "collection":
            assert got == want.strip()
        else:
            assert same(got, want), (name, got, want)
