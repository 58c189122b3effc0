"""The generator's output, checked against the event contract (shared/event.py) and the reference.

The rule checker below is written from the contract's text, independently of the generator, so
a generator that drifts from the contract fails here.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import Any
from urllib.parse import urlsplit

import pytest
from eventgen import GeneratedRecord, generate, plan_counts
from eventgen.catalog import COLLECTION_COUNTS, PRODUCT_BY_ID, PRODUCT_COUNT, collection_share
from eventgen.stores import STORES
from ua_parser import parse as parse_user_agent

from shared.event import BAD_KINDS, MAX_EVENT_BYTES, PRODUCT_EVENT_TYPES, STRING_ID_FIELDS

START = date(2020, 6, 1)
START_TS = int(datetime(2020, 6, 1, tzinfo=UTC).timestamp())
DAYS = 3
END_TS = START_TS + DAYS * 86400
HEX24 = re.compile(r"^[0-9a-f]{24}$")
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
GLAMIRA_LOCAL_TIME = re.compile(r"^(\d{4})-(\d{2})-(\d{2}) (\d{1,2}):(\d{2}):(\d{2})$")
SEED_LOCAL_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}$")
SEED_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
GLAMIRA_COMMON = (
    "_id",
    "time_stamp",
    "ip",
    "user_agent",
    "resolution",
    "user_id_db",
    "device_id",
    "api_version",
    "store_id",
    "local_time",
    "show_recommendation",
    "current_url",
    "referrer_url",
    "email_address",
    "collection",
)
SEED_FIELDS = ("product_id", "device_id", "store_id", "referrer_url", "local_time", "remote_ip", "timestamp")


# ---- the contract's rules, as the bridge must apply them ------------------------------------------


def id_type_ok(value: Any) -> bool:
    """STRING_ID_FIELDS: str, int or integral float; bool, dict, list, other floats are wrong."""
    if isinstance(value, bool):
        return False
    if isinstance(value, str | int):
        return True
    return isinstance(value, float) and value.is_integer()


def time_stamp_ok(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return False
        return True
    return False


def violation(value: bytes) -> str | None:  # noqa: PLR0911 - one return per rule reads best
    """The first contract rule ``value`` breaks (a BAD_KINDS name), or None if it is valid."""
    if not value:
        return "empty"
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return "not_utf8"
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        return "not_json"
    if not isinstance(doc, dict):
        return "json_array" if isinstance(doc, list) else "not_object"
    if len(value) > MAX_EVENT_BYTES:
        return "oversized"
    if any(field in doc and not id_type_ok(doc[field]) for field in STRING_ID_FIELDS):
        return "wrong_types"
    if "time_stamp" in doc:
        if not time_stamp_ok(doc["time_stamp"]):
            return "wrong_types"
    elif not isinstance(doc.get("timestamp"), str):
        return "missing_event_time"
    is_seed_shape = "collection" not in doc
    if (is_seed_shape or doc["collection"] in PRODUCT_EVENT_TYPES) and doc.get("product_id") in (None, ""):
        return "missing_product_id"
    return None


# ---- fixtures --------------------------------------------------------------------------------------


@cache
def records(count: int, seed: int, bad_fraction: float = 0.0, seed_shape_fraction: float = 0.1) -> tuple[GeneratedRecord, ...]:
    return tuple(generate(count, seed=seed, bad_fraction=bad_fraction, seed_shape_fraction=seed_shape_fraction))


def digest(recs: tuple[GeneratedRecord, ...]) -> str:
    h = hashlib.sha256()
    for r in recs:
        h.update(r.kind.encode() + b"\0" + (r.key or b"") + b"\0" + len(r.value).to_bytes(4, "big") + r.value)
    return h.hexdigest()


MIXED = (7000, 11, 0.1)  # 100 of each bad kind
GLAMIRA_ONLY = (20_000, 5, 0.0, 0.0)


# ---- determinism and counts ----------------------------------------------------------------------


def test_same_seed_gives_identical_bytes() -> None:
    first = tuple(generate(3000, seed=123, bad_fraction=0.1))
    second = tuple(generate(3000, seed=123, bad_fraction=0.1))
    assert [(r.kind, r.key, r.value) for r in first] == [(r.kind, r.key, r.value) for r in second]
    assert digest(first) == digest(second)


def test_different_seed_gives_different_records() -> None:
    a = tuple(generate(3000, seed=123, bad_fraction=0.1))
    b = tuple(generate(3000, seed=124, bad_fraction=0.1))
    assert digest(a) != digest(b)
    assert sum(x.value == y.value for x, y in zip(a, b, strict=True)) <= 3  # only empty/[] records can coincide
    ids_a = {r.event_id for r in a if r.event_id}
    ids_b = {r.event_id for r in b if r.event_id}
    assert ids_a and ids_b and not ids_a & ids_b


def test_other_arguments_change_the_stream_but_not_the_catalog() -> None:
    base = records(2000, 1)
    later = tuple(generate(2000, seed=1, start=date(2021, 1, 1), days=1))
    assert digest(base) != digest(later)
    assert min(r.event["time_stamp"] for r in later if r.kind == "glamira") >= int(datetime(2021, 1, 1, tzinfo=UTC).timestamp())
    products = {r.event["product_id"] for r in base + later if r.event and "product_id" in r.event}
    assert products <= set(PRODUCT_BY_ID)


@pytest.mark.parametrize(
    ("count", "bad_fraction", "seed_shape_fraction", "expected"),
    [
        (7000, 0.1, 0.1, {"glamira": 5670, "seed": 630, **dict.fromkeys(BAD_KINDS, 100)}),
        (
            1003,
            0.05,
            0.1,
            {
                "glamira": 858,
                "seed": 95,
                "not_json": 8,
                "not_utf8": 7,
                "json_array": 7,
                "missing_product_id": 7,
                "wrong_types": 7,
                "oversized": 7,
                "empty": 7,
            },
        ),
        (500, 0.0, 0.0, {"glamira": 500, "seed": 0, **dict.fromkeys(BAD_KINDS, 0)}),
        (10, 1.0, 0.5, {"glamira": 0, "seed": 0, **dict.fromkeys(BAD_KINDS[:3], 2), **dict.fromkeys(BAD_KINDS[3:], 1)}),
        (0, 0.5, 0.5, {"glamira": 0, "seed": 0, **dict.fromkeys(BAD_KINDS, 0)}),
    ],
)
def test_exact_counts_per_kind(count: int, bad_fraction: float, seed_shape_fraction: float, expected: dict[str, int]) -> None:
    assert plan_counts(count, bad_fraction, seed_shape_fraction) == expected
    got = Counter(r.kind for r in generate(count, seed=9, bad_fraction=bad_fraction, seed_shape_fraction=seed_shape_fraction))
    assert {kind: got.get(kind, 0) for kind in expected} == expected
    assert sum(got.values()) == count


def test_invalid_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        generate(10, seed=1, bad_fraction=1.5)
    with pytest.raises(ValueError):
        generate(10, seed=1, seed_shape_fraction=-0.1)
    with pytest.raises(ValueError):
        generate(-1, seed=1)
    with pytest.raises(ValueError):
        generate(10, seed=1, days=0)


# ---- valid records satisfy the contract -----------------------------------------------------------


def test_every_valid_record_satisfies_the_contract() -> None:
    recs = records(*MIXED)
    valid = [r for r in recs if r.kind in ("glamira", "seed")]
    assert len(valid) == 6300
    ids = set()
    for r in valid:
        assert violation(r.value) is None, r.value[:300]
        event = json.loads(r.value)
        assert event == r.event
        assert r.key == event["device_id"].encode()
        assert UUID4.match(event["device_id"])
        assert event["store_id"] in STORES
        for field in STRING_ID_FIELDS:
            if field in event:
                assert id_type_ok(event[field])
        if r.kind == "glamira":
            assert tuple(event)[: len(GLAMIRA_COMMON)] == GLAMIRA_COMMON
            assert HEX24.match(event["_id"]) and r.event_id == event["_id"]
            assert r.collection == event["collection"] in COLLECTION_COUNTS
            assert type(event["time_stamp"]) is int and START_TS <= event["time_stamp"] < END_TS
            assert event["api_version"] == "1.0"
            assert urlsplit(event["current_url"]).hostname == "www." + STORES[event["store_id"]].domain
            if event["collection"] in PRODUCT_EVENT_TYPES:
                assert type(event["product_id"]) is str and event["product_id"] in PRODUCT_BY_ID
            ids.add(event["_id"])
        else:
            assert tuple(event) == SEED_FIELDS
            assert r.event_id is None and r.collection is None
            assert event["product_id"] in PRODUCT_BY_ID
            assert SEED_TIMESTAMP.match(event["timestamp"]) and SEED_LOCAL_TIME.match(event["local_time"])
            ts = datetime.strptime(event["timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
            assert START_TS <= ts.timestamp() < END_TS
            local = datetime.strptime(event["local_time"], "%Y-%m-%dT%H:%M:%S.%f")
            offset = timedelta(hours=STORES[event["store_id"]].utc_offset)
            assert local.replace(microsecond=0) == ts.replace(tzinfo=None) + offset
    assert len(ids) == 5670  # _id unique


def test_glamira_local_time_is_the_store_country_time_with_unpadded_hours_sometimes() -> None:
    events = [r.event for r in records(*GLAMIRA_ONLY) if r.event]
    unpadded = padded_early = 0
    for event in events:
        m = GLAMIRA_LOCAL_TIME.match(event["local_time"])
        assert m, event["local_time"]
        y, mo, d, h, mi, s = (int(g) for g in m.groups())
        utc = datetime.fromtimestamp(event["time_stamp"], tz=UTC).replace(tzinfo=None)
        assert datetime(y, mo, d, h, mi, s) == utc + timedelta(hours=STORES[event["store_id"]].utc_offset)
        if len(m.group(4)) == 1:
            unpadded += 1
        elif h < 10:
            padded_early += 1
    assert unpadded > 300 and padded_early > 300  # both spellings of early hours occur


def test_event_times_rise_through_the_window() -> None:
    times = [r.event["time_stamp"] for r in records(*GLAMIRA_ONLY) if r.event]
    assert times == sorted(times)
    assert times[0] < START_TS + 600 and times[-1] > END_TS - 600
    per_day = Counter((t - START_TS) // 86400 for t in times)
    assert sorted(per_day) == [0, 1, 2] and max(per_day.values()) - min(per_day.values()) < 200


# ---- realism: proportions and shapes ---------------------------------------------------------------


def test_collection_proportions_match_the_reference() -> None:
    """Each of the 27 types within 4 binomial standard deviations (+2 events) of its real share."""
    events = [r.event for r in records(*GLAMIRA_ONLY) if r.event]
    n = len(events)
    assert n == 20_000
    got = Counter(e["collection"] for e in events)
    assert set(got) <= set(COLLECTION_COUNTS)
    for collection in COLLECTION_COUNTS:
        p = collection_share(collection)
        expected = n * p
        tolerance = 4 * math.sqrt(n * p * (1 - p)) + 2
        assert abs(got[collection] - expected) <= tolerance, (collection, got[collection], expected)
        if expected >= 5:
            assert got[collection] > 0
    assert got.most_common(3)[0][0] in ("view_listing_page", "view_product_detail")


def test_option_is_a_list_on_product_events_a_dict_on_listing_and_landing_and_absent_elsewhere() -> None:
    events = [r.event for r in records(*GLAMIRA_ONLY) if r.event]
    shapes = Counter()
    for e in events:
        option = e.get("option")
        if e["collection"] in ("view_product_detail", "select_product_option", "select_product_option_quality"):
            assert isinstance(option, list) and 1 <= len(option) <= 2
            for entry in option:
                assert set(entry) == {"option_label", "option_id", "value_label", "value_id"}
                assert entry["option_label"] in ("alloy", "diamond")
            shapes["list"] += 1
        elif e["collection"] in ("view_listing_page", "view_landing_page"):
            assert isinstance(option, dict) and set(option) == {"alloy", "diamond", "shapediamond"}
            assert isinstance(e["cat_id"], str) and isinstance(e["collect_id"], str)
            shapes["dict"] += 1
        else:
            assert "option" not in e
            shapes["none"] += 1
    # dataset: ~22 M list, ~12.7 M dict, ~6.7 M none of 41.4 M
    assert 0.50 < shapes["list"] / len(events) < 0.56
    assert 0.28 < shapes["dict"] / len(events) < 0.33
    assert 0.13 < shapes["none"] / len(events) < 0.19


def test_event_specific_fields() -> None:
    events = [r.event for r in records(*GLAMIRA_ONLY) if r.event]
    by_type: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by_type.setdefault(e["collection"], []).append(e)
    for e in by_type["add_to_cart_action"]:
        assert re.fullmatch(r"\d+\.\d\d", e["price"]) and e["currency"] == STORES[e["store_id"]].currency
        assert isinstance(e["is_paypal"], bool)
    for e in by_type["view_product_detail"]:
        assert isinstance(e["recommendation"], bool)
        assert (e["utm_source"] is False) == (e["utm_medium"] is False)
    assert Counter(e["utm_source"] is False for e in by_type["view_product_detail"])[True] > 0.7 * len(by_type["view_product_detail"])
    for e in by_type["select_product_option_quality"]:
        assert e["quality"] and e["quality_label"]
    for e in by_type["search_box_action"]:
        assert e["key_search"]
    for e in by_type["product_detail_recommendation_clicked"]:
        assert e["viewing_product_id"] in PRODUCT_BY_ID and e["recommendation_product_id"] in PRODUCT_BY_ID
        assert e["recommendation_clicked_position"] == e["recommendation_product_position"]
    for name in ("view_shopping_cart", "checkout"):
        for e in by_type[name]:
            assert e["cart_products"]
            for line in e["cart_products"]:
                assert type(line["product_id"]) is int and str(line["product_id"]) in PRODUCT_BY_ID
                assert set(line) == {"product_id", "amount", "price", "currency", "option"}
    # order_id as str, int and float (always integral) across a bigger sample
    order_types = Counter(
        type(r.event["order_id"]).__name__
        for r in generate(60_000, seed=2, seed_shape_fraction=0)
        if r.event and r.event["collection"] == "checkout_success"
    )
    assert set(order_types) == {"str", "int", "float"}


def test_visitors_products_referrers_and_agents_look_real() -> None:
    events = [r.event for r in records(*GLAMIRA_ONLY) if r.event]
    n = len(events)
    # visitors are reused, each with one user agent / resolution / ip
    per_device: dict[str, set[tuple[str, str, str]]] = {}
    for e in events:
        per_device.setdefault(e["device_id"], set()).add((e["user_agent"], e["resolution"], e["ip"]))
    assert len(per_device) < n / 4
    assert all(len(v) == 1 for v in per_device.values())
    # personal fields mostly empty (~95%), referrer empty ~9%
    assert 0.93 < sum(e["user_id_db"] == "" for e in events) / n < 0.97
    assert 0.93 < sum(e["email_address"] == "" for e in events) / n < 0.97
    assert 0.08 < sum(e["referrer_url"] == "" for e in events) / n < 0.13  # 9% + crawlers
    hosts = Counter(urlsplit(e["referrer_url"]).hostname for e in events if e["referrer_url"])
    for host in ("www.google.com", "www.bing.com", "www.facebook.com", "www.instagram.com", "mail.google.com", "www.googleadservices.com"):
        assert hosts[host] > 0, host
    assert sum(h.removeprefix("www.") in {s.domain for s in STORES.values()} for h in hosts.elements()) > 0.4 * n
    assert any("gclid=" in e["referrer_url"] for e in events)
    # Zipf-like product popularity over the catalog
    products = Counter(e["product_id"] for e in events if "product_id" in e)
    assert len(products) > 500 and max(int(p) for p in products) < 130_000
    top10 = sum(c for _, c in products.most_common(10))
    assert 0.2 < top10 / products.total() < 0.5  # uniform over 2000 would be 0.5%
    assert PRODUCT_COUNT == 2000
    # product pages carry the product's stable slug
    for e in events:
        if e["collection"] == "view_product_detail":
            assert urlsplit(e["current_url"]).path == f"/{PRODUCT_BY_ID[e['product_id']].slug}.html"
    # user agents: real browsers on all device classes, ~2% crawlers
    families = Counter()
    bots = 0
    for e in events:
        ua = parse_user_agent(e["user_agent"])
        assert ua.user_agent is not None
        families[ua.user_agent.family] += 1
        if ua.device and ua.device.family == "Spider":
            bots += 1
            assert e["resolution"] == "" and e["referrer_url"] == ""
    assert 0.015 < bots / n < 0.025
    for family in ("Chrome", "Chrome Mobile", "Mobile Safari", "Safari", "Firefox", "Edge", "Samsung Internet", "Googlebot", "bingbot"):
        assert families[family] > 0, family
    assert families["FacebookBot"] > 0
    assert any("iPad" in e["user_agent"] for e in events)


def test_stores_cover_85_country_sites() -> None:
    events = [r.event for r in records(*GLAMIRA_ONLY) if r.event]
    stores = Counter(e["store_id"] for e in events)
    assert set(stores) <= set(STORES) and len(stores) > 60
    assert stores.most_common(1)[0][0] == "1"  # glamira.de is the biggest market


# ---- bad records break exactly their rule ---------------------------------------------------------


def test_each_bad_kind_breaks_the_rule_it_is_named_after() -> None:
    bad = [r for r in records(*MIXED) if r.kind in BAD_KINDS]
    assert Counter(r.kind for r in bad) == dict.fromkeys(BAD_KINDS, 100)
    variants: Counter[str] = Counter()
    for r in bad:
        assert r.event is None and r.event_id is None and r.collection is None
        assert r.key is not None and UUID4.match(r.key.decode())
        assert violation(r.value) == r.kind, (r.kind, r.value[:200])
        if r.kind == "not_utf8":
            with pytest.raises(UnicodeDecodeError):
                r.value.decode("utf-8")
            variants["utf16" if r.value.startswith(b"\xff\xfe") else "ff" if b"\xff" in r.value else "latin1"] += 1
        elif r.kind == "not_json":
            with pytest.raises(json.JSONDecodeError):
                json.loads(r.value.decode("utf-8"))
            assert r.value
        elif r.kind == "json_array":
            doc = json.loads(r.value)
            assert isinstance(doc, list)
            variants[f"array{len(doc)}"] += 1
        elif r.kind == "missing_product_id":
            doc = json.loads(r.value)
            assert "product_id" not in doc
            if "collection" in doc:
                assert doc["collection"] in PRODUCT_EVENT_TYPES
                variants["glamira_missing"] += 1
            else:
                assert tuple(doc) == SEED_FIELDS[1:]
                variants["seed_missing"] += 1
        elif r.kind == "wrong_types":
            doc = json.loads(r.value)
            broken = [f for f in STRING_ID_FIELDS if f in doc and not id_type_ok(doc[f])]
            if "time_stamp" in doc and not time_stamp_ok(doc["time_stamp"]):
                broken.append("time_stamp")
            assert len(broken) == 1, doc  # exactly one rule broken
            variants[f"{broken[0]}:{type(doc[broken[0]]).__name__}"] += 1
        elif r.kind == "oversized":
            assert MAX_EVENT_BYTES < len(r.value) < 2 * 1024 * 1024 - 1024
            doc = json.loads(r.value)
            assert isinstance(doc, dict) and HEX24.match(doc["_id"])
        elif r.kind == "empty":
            assert r.value == b""
    assert {"utf16", "ff", "latin1"} <= set(variants)
    assert {"array0", "array1", "array2", "array3"} <= set(variants)
    assert variants["glamira_missing"] > 50 and variants["seed_missing"] > 10
    assert {
        "product_id:dict",
        "product_id:list",
        "product_id:bool",
        "product_id:float",
        "time_stamp:str",
        "time_stamp:dict",
    } <= set(variants)


def test_oversized_records_are_otherwise_valid_events() -> None:
    for r in records(*MIXED):
        if r.kind != "oversized":
            continue
        doc = json.loads(r.value)
        if "cart_products" in doc:
            doc["cart_products"] = doc["cart_products"][:1]
        else:
            doc["current_url"] = doc["current_url"].split("_tr=")[0]
        assert violation(json.dumps(doc).encode()) is None
