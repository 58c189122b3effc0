"""Test helpers for the ETL: synthetic events, their MongoDB documents exactly as the sink writes
them (``shared/event.py``), and the star schema computed independently in plain Python.

The expected enrichment comes from hand-labelled tables here (what a person says a user agent,
referrer or site is), not from ``etl_api.enrich``, so the comparison is independent.
"""

# ruff: noqa: E501
from __future__ import annotations

import random
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sink.documents import IngestStamp, build_document

from shared.event import SEED_COLLECTION

# user agent → (device_type, browser, browser_info, os, is_bot)
USER_AGENTS: dict[str, tuple[str, str | None, str | None, str | None, bool]] = {
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/83.0.4103.61 Safari/537.36": (
        "desktop",
        "Chrome",
        "Chrome 83.0 / Windows 10",
        "Windows 10",
        False,
    ),
    "Mozilla/5.0 (iPhone; CPU iPhone OS 13_3 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/13.0.5 Mobile/15E148 Safari/604.1": (
        "mobile",
        "Mobile Safari",
        "Mobile Safari 13.0 / iOS 13.3",
        "iOS 13.3",
        False,
    ),
    "Mozilla/5.0 (Linux; Android 10; SM-G973F) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/83.0.4103.106 Mobile Safari/537.36": (
        "mobile",
        "Chrome Mobile",
        "Chrome Mobile 83.0 / Android 10",
        "Android 10",
        False,
    ),
    "Mozilla/5.0 (iPad; CPU OS 13_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/13.1.1 Mobile/15E148 Safari/604.1": (
        "tablet",
        "Mobile Safari",
        "Mobile Safari 13.1 / iOS 13.5",
        "iOS 13.5",
        False,
    ),
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/13.1.1 Safari/605.1.15": (
        "desktop",
        "Safari",
        "Safari 13.1 / Mac OS X 10.15",
        "Mac OS X 10.15",
        False,
    ),
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)": ("bot", "FacebookBot", "FacebookBot 1.1", None, True),
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)": ("bot", "Googlebot", "Googlebot 2.1", None, True),
}
HUMAN_UAS = [ua for ua, v in USER_AGENTS.items() if not v[4]]
BOT_UAS = [ua for ua, v in USER_AGENTS.items() if v[4]]

# referrer url → (domain, medium); "" = no referrer (direct, key 0)
REFERRERS: dict[str, tuple[str | None, str]] = {
    "": (None, "direct"),
    "https://www.google.com/": ("google.com", "search"),
    "https://www.google.com.vn/search?q=nhan": ("google.com.vn", "search"),
    "https://www.bing.com/search?q=ring": ("bing.com", "search"),
    "https://l.facebook.com/l.php?u=https%3A%2F%2Fwww.glamira.de": ("facebook.com", "social"),
    "https://www.pinterest.com/pin/123/": ("pinterest.com", "social"),
    "https://mail.google.com/mail/u/0/": ("google.com", "email"),
    "https://www.googleadservices.com/pagead/aclk?sa=L": ("googleadservices.com", "paid"),
    "https://www.glamira.de/ringe/": ("glamira.de", "internal"),
    "https://some-blog.example.org/best-rings": ("example.org", "other"),
}

# store id → (site domain, country, region); None site = seed-shaped store (ISO code id)
STORES: dict[str, tuple[str | None, str, str]] = {
    "12": ("glamira.fr", "France", "Europe"),
    "7": ("glamira.de", "Germany", "Europe"),
    "41": ("glamira.com.vn", "Vietnam", "Asia"),
    "3": ("glamira.co.uk", "United Kingdom", "Europe"),
    "55": ("glamira.com.au", "Australia", "Oceania"),
    "US": (None, "United States", "North America"),
}

# product id → (slug, name, category); None slug = no product page URL (seed shape)
PRODUCTS: dict[str, tuple[str | None, str | None, str | None]] = {
    "110474": ("glamira-pendant-viktor", "Glamira Pendant Viktor", "pendant"),
    "95923": ("glamira-ring-saphira", "Glamira Ring Saphira", "ring"),
    "84771": ("glamira-earrings-lumia", "Glamira Earrings Lumia", "earring"),
    "100213": ("glamira-bracelet-ameli", "Glamira Bracelet Ameli", "bracelet"),
    "77001": ("glamira-necklace-dawn", "Glamira Necklace Dawn", "necklace"),
    "P001": (None, None, None),
}


@dataclass(frozen=True)
class Doc:
    """One generated MongoDB document and the truth about it."""

    doc: dict[str, Any]
    ts_ms: int
    event_date: date


def iso_ms(ts: datetime) -> str:
    utc = ts.astimezone(UTC)
    return f"{utc:%Y-%m-%dT%H:%M:%S}.{utc.microsecond // 1000:03d}Z"


def sink_document(event: dict[str, Any], ingested_at: datetime) -> dict[str, Any]:
    """The sink's document of a bridged event, built by the sink's own builder (``sink.documents``):
    ``_id``, ``ingested_at``, ``ingest_hour``, ``event_date``, ``part``."""
    return build_document(event, IngestStamp.at(ingested_at))


def make_events(rng: random.Random, n: int, dates: list[date], ingested_at: datetime, *, devices: int = 25) -> list[Doc]:
    """n events over ``dates``: mostly product views, some bots, some other types, a few seed-shaped."""
    out = []
    device_ua = {f"dev-{i:03d}": rng.choice(HUMAN_UAS) for i in range(devices)}
    device_ids = list(device_ua)
    referrer_urls = list(REFERRERS)
    product_ids = [p for p in PRODUCTS if p != "P001"]
    store_ids = [s for s in STORES if s != "US"]
    for _ in range(n):
        d = rng.choice(dates)
        ts = datetime(d.year, d.month, d.day, tzinfo=UTC) + timedelta(milliseconds=rng.randrange(86_400_000))
        event_id = uuid.UUID(int=rng.getrandbits(128)).hex[:24]
        roll = rng.random()
        if roll < 0.1:  # the seed's simplified document
            event = {
                "event_id": event_id,
                "product_id": "P001",
                "device_id": rng.choice(device_ids),
                "store_id": "US",
                "referrer_url": rng.choice(referrer_urls),
                "local_time": ts.strftime("%Y-%m-%dT%H:%M:%S.%f"),
                "remote_ip": "192.0.2.1",
                "timestamp": ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "collection": SEED_COLLECTION,
                "source_shape": "seed",
            }
            ts = ts.replace(microsecond=0)  # the seed's timestamp has whole seconds
        else:
            product_id = rng.choice(product_ids)
            store_id = rng.choice(store_ids)
            site = STORES[store_id][0]
            slug = PRODUCTS[product_id][0]
            device_id: str | None = rng.choice(device_ids)
            ua = device_ua[device_id] if device_id else rng.choice(HUMAN_UAS)
            if roll < 0.16:
                ua = rng.choice(BOT_UAS)
                device_id = f"bot-{rng.randrange(3)}"
            elif roll < 0.19:
                device_id = None  # no visitor cookie: device key 0, no unique visitor
            collection = "view_product_detail" if roll < 0.85 else rng.choice(["view_listing_page", "select_product_option"])
            event = {
                "event_id": event_id,
                "time_stamp": int(ts.timestamp()),
                "ip": "198.51.100.7",
                "user_agent": ua,
                "resolution": "375x667",
                "user_id_db": "",
                "api_version": "1.0",
                "store_id": store_id,
                "local_time": ts.strftime("%Y-%m-%d %H:%M:%S"),
                "show_recommendation": "false",
                "current_url": f"https://www.{site}/{slug}.html?alloy=yellow-375",
                "referrer_url": rng.choice(referrer_urls),
                "email_address": "",
                "collection": collection,
                "product_id": product_id,
                "option": rng.choice(
                    [
                        [{"option_label": "alloy", "option_id": "1", "value_label": "yellow-375", "value_id": "2"}],
                        {"alloy": "white-585", "diamond": "", "shapediamond": ""},
                    ]
                ),
                "source_shape": "glamira",
            }
            if device_id is not None:
                event["device_id"] = device_id
            ts = ts.replace(microsecond=0)  # time_stamp is unix seconds
        event["event_time"] = iso_ms(ts)
        event.update({"source_topic": "product_views", "source_partition": 0, "source_offset": rng.randrange(10**9)})
        event["bridged_at"] = iso_ms(ingested_at)
        out.append(Doc(sink_document(event, ingested_at), int(ts.timestamp() * 1000), d))
    return out


def is_valid_view(doc: dict[str, Any], types: tuple[str, ...] = ("view_product_detail",)) -> bool:
    ua = doc.get("user_agent")
    return doc["collection"] in types and bool(doc.get("product_id")) and not (ua and USER_AGENTS[ua][4])


def expected_star(docs: list[Doc]) -> dict[str, Any]:
    """The star schema's content by natural keys, computed from the documents in plain Python."""
    views = [d for d in docs if is_valid_view(d.doc)]
    latest: dict[tuple[str, str], tuple[tuple[int, str], dict[str, Any]]] = {}

    def see(kind: str, key: str, d: Doc) -> None:
        order = (d.ts_ms, d.doc["_id"])
        if (kind, key) not in latest or latest[(kind, key)][0] < order:
            latest[(kind, key)] = (order, d.doc)

    first_date: dict[tuple[str, str], date] = {}
    for d in views:
        doc = d.doc
        keys = [("product", doc["product_id"]), ("store", doc["store_id"])]
        if doc.get("referrer_url"):
            keys.append(("referrer", doc["referrer_url"]))
        if doc.get("device_id"):
            keys.append(("device", doc["device_id"]))
        for k in keys:
            first_date[k] = min(first_date.get(k, d.event_date), d.event_date)
            if k[0] != "device" or doc.get("user_agent"):  # a device's attributes come from events with a user agent
                see(*k, d)
    products = {
        key: (PRODUCTS[key][1], PRODUCTS[key][0], PRODUCTS[key][2], first_date[(kind, key)])
        for (kind, key) in first_date
        if kind == "product"
    }
    stores = {key: (*STORES[key], first_date[(kind, key)]) for (kind, key) in first_date if kind == "store"}
    referrers = {key: (*REFERRERS[key], first_date[(kind, key)]) for (kind, key) in first_date if kind == "referrer"}
    devices = {}
    for (kind, key), fd in first_date.items():
        if kind == "device":
            ua = latest[(kind, key)][1].get("user_agent") if (kind, key) in latest else None
            dt, browser, info, os_, _ = USER_AGENTS[ua] if ua else ("unknown", None, None, None, False)
            devices[key] = (dt, info, browser, os_, fd)
    groups: dict[tuple[Any, ...], list[Doc]] = defaultdict(list)
    for d in views:
        doc = d.doc
        groups[(d.event_date, doc["product_id"], doc["store_id"], doc.get("referrer_url") or None, doc.get("device_id"))].append(d)
    facts = {}
    for key, members in groups.items():
        ms = [m.ts_ms for m in members]
        facts[key] = (
            len(members),
            len({m.doc.get("device_id") for m in members if m.doc.get("device_id")}),
            datetime.fromtimestamp(min(ms) / 1000, UTC).replace(tzinfo=None),
            datetime.fromtimestamp(max(ms) / 1000, UTC).replace(tzinfo=None),
            float(sum(ms)) / float(len(ms)) / 1000.0,
            (max(ms) - min(ms)) // 1000,
        )
    return {"products": products, "stores": stores, "referrers": referrers, "devices": devices, "facts": facts, "valid": len(views)}
