"""Property (issue 29): a field the analytics does not need never costs a view.

Valid events from the generator (Glamira and seed shapes), then only fields that may not refuse
an event are mutated: ids other than a product event's ``product_id``, ``local_time``, the
referrer, user agent, URL, resolution, option, the other known fields and unknown fields. Their
new values are any JSON value (integers within int64: no store holds more, see
``test_records_property``), any string, and times in every ISO-8601 / RFC 3339 shape (with and
without offsets, fractional seconds, lowercase ``t``/``z``). Every mutated event must be copied
by the bridge and then become a MongoDB document at the sink, with:

- the event time, event type, product id and event id of the unmutated event;
- every mutated field as it came, or normalized where it parses unambiguously (an id as a
  string, ``local_time`` zero-padded), computed here with the standard library;
- ``bridge_events_with_field_kept_as_came_total{field}`` raised by one for each known field kept as it came.
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from typing import Any

from bridge.metrics import KEPT_AS_CAME
from bridge.records import Refusal, copy_record
from eventgen.generate import generate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sink.documents import IngestStamp, document_of, unescape_fields

from tests.unit.bridge.test_records_property import expected_id, same

EXAMPLES = int(os.environ.get("BRIDGE_PROPERTY_EXAMPLES", "300"))
BRIDGED_AT = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
STAMP = IngestStamp.at(datetime(2026, 12, 6, 12, 0, 1, tzinfo=UTC))
EVENTS = [json.loads(r.value) for r in generate(400, seed=29)]
PRODUCT_TYPES = {"view_product_detail", "select_product_option", "select_product_option_quality", "add_to_cart_action"}
# Written out here, not imported from the code under test.
IDS = ["product_id", "store_id", "device_id", "user_id_db", "order_id", "viewing_product_id", "recommendation_product_id"]
TEXTS = ["user_agent", "referrer_url", "current_url", "resolution"]
COUNTED = {*IDS, "local_time", *TEXTS, "option"}
OTHERS = ["ip", "remote_ip", "api_version", "show_recommendation", "email_address", "cat_id", "key_search", "price", "cart_products"]
UNKNOWN = ["utm_campaign", "x", "Referrer", "extra.dotted", "$dollar", "é"]
INT64 = st.integers(-(2**63), 2**63 - 1)


@st.composite
def iso_times(draw: st.DrawFn) -> str:
    """A time in any ISO-8601 / RFC 3339 shape."""
    moment = draw(st.datetimes(datetime(1990, 1, 1), datetime(2040, 1, 1)))
    sep = draw(st.sampled_from(["T", "t", " "]))
    hms = f"{moment:%H}:{moment:%M}:{moment:%S}" if draw(st.booleans()) else f"{moment.hour}:{moment:%M}:{moment:%S}"
    fraction = draw(st.sampled_from(["", "." + f"{moment.microsecond:06d}"[: draw(st.integers(1, 6))], ".123456789"]))
    zone = draw(st.sampled_from(["", "Z", "z", "+02:00", "-05:30", "+0100", "-03", "+00:00"]))
    date = f"{moment:%Y-%m-%d}" if draw(st.booleans()) else f"{moment.year}-{moment.month}-{moment.day}"
    return f"{date}{sep}{hms}{fraction}{zone}"


json_values = st.recursive(
    st.none() | st.booleans() | INT64 | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20) | iso_times(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
# Top-level ids are kept exactly at any size (as their string).
id_values = json_values | st.integers(-(2**80), 2**80) | st.integers(-(2**80), 2**80).map(lambda i: f" {i} ")


LOCAL_TIME = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})[ Tt](\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.(\d{1,6}))?")


def expected_local_time(raw: Any) -> Any:
    """Zero-padded when it is a local time without a zone, else as it came."""
    match = LOCAL_TIME.fullmatch(raw.strip()) if isinstance(raw, str) else None
    if match is None:
        return raw
    y, mo, d, h, mi, s = (int(g) for g in match.groups()[:6])
    try:
        datetime(y, mo, d, h, mi, s)
    except ValueError:
        return raw
    text = f"{y:04d}-{mo:02d}-{d:02d} {h:02d}:{mi:02d}:{s:02d}"
    return text + "." + match.group(7).ljust(6, "0") if match.group(7) else text


def usable(field: str, raw: Any) -> bool:
    """Would the bridge count ``field`` as kept as it came? (None: absent, always usable.)"""
    if raw is None or field not in COUNTED:
        return True
    if field in IDS:
        return expected_id(raw) is not raw or isinstance(raw, str)
    if field == "local_time":
        return expected_local_time(raw) is not raw
    if field == "option":
        return isinstance(raw, list | dict)
    return isinstance(raw, str)


def counts() -> dict[str, float]:
    return {field: KEPT_AS_CAME.labels(field)._value.get() for field in COUNTED}


@st.composite
def mutated(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the generator's event, the same event with non-essential fields mutated)."""
    source = draw(st.sampled_from(EVENTS))
    is_product_event = source.get("collection", "view_product_detail") in PRODUCT_TYPES
    fields = [*IDS[1:], "local_time", *TEXTS, "option", *OTHERS, *UNKNOWN] + ([] if is_product_event else ["product_id"])
    chosen = draw(st.lists(st.sampled_from(fields), min_size=1, max_size=6, unique=True))
    event = dict(source)
    for field in chosen:
        if field in IDS:
            event[field] = draw(id_values)
        elif field == "local_time" and draw(st.booleans()):
            event[field] = draw(iso_times())
        else:
            event[field] = draw(iso_times() | json_values)
    return source, event


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pair=mutated())
def test_mutating_fields_nothing_counts_by_never_refuses_a_view(pair: tuple[dict[str, Any], dict[str, Any]]) -> None:
    source, event = pair
    before = counts()
    result = copy_record(json.dumps(event).encode(), b"k", topic="product_views", partition=1, offset=7, bridged_at=BRIDGED_AT)
    assert not isinstance(result, Refusal), (result, event)
    copied = json.loads(result[1])
    doc = unescape_fields(document_of(result[1], STAMP, 16 << 20))
    want_counted = {f: 0 for f in COUNTED}
    for field, raw in event.items():
        if field == "_id":
            continue
        if field in IDS:
            want = expected_id(raw)
        elif field == "local_time":
            want = expected_local_time(raw)
        else:
            want = raw
        assert same(copied[field], want), (field, copied[field], want)
        assert same(doc[field], want), (field, doc[field], want)
        if not usable(field, raw):
            want_counted[field] += 1
    # What the view is counted by is the unmutated event's.
    plain = copy_record(json.dumps(source).encode(), b"k", topic="product_views", partition=1, offset=7, bridged_at=BRIDGED_AT)
    assert not isinstance(plain, Refusal), plain
    reference = json.loads(plain[1])
    for field in ("event_id", "event_time", "collection", "product_id"):
        assert copied.get(field) == reference.get(field) or (field == "product_id" and reference["collection"] not in PRODUCT_TYPES), field
    assert doc["_id"] == copied["event_id"] and doc["event_date"] == copied["event_time"][:10]
    after = counts()
    # the reference copy above counts nothing: the generator's valid events are in the usual forms
    assert {f: after[f] - before[f] for f in COUNTED} == want_counted
