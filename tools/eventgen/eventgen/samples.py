# ruff: noqa: E501
"""Small deterministic event sets shared by the integration tests and the benchmarks.

- :func:`bridged_events`: events as the bridge emits them (``shared/event.py``), with the awkward
  parts of the real data on purpose: field names with dots and a leading ``$`` at several
  depths, ``option`` as a list or a dict, unicode, seed-shape events (the sink's tests and
  ``bench/sink_vs_connector.py``).
- :func:`star_events`: bridged events over given dates built from the hand-labelled tables
  below (what a person says a user agent, referrer, store or product is), so the ETL's tests can
  compute the expected star schema independently of ``etl_api.enrich`` (the ETL's tests and
  ``bench/etl_full_vs_incremental.py``).
"""

from __future__ import annotations

import random
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

from shared.event import SEED_COLLECTION

COLLECTIONS = ("view_product_detail", "view_listing_page", "select_product_option", "checkout", "search_box_action")


def bridged_events(count: int, seed: int, prefix: str = "") -> list[dict[str, Any]]:
    """``count`` distinct bridge-output events; deterministic for a seed."""
    rng = random.Random(seed)
    events = []
    for i in range(count):
        event_id = f"{prefix}{seed:04x}{i:020x}"[-24:] if not prefix else f"{prefix}-{i}"
        ts = 1591200000 + rng.randrange(0, 86400 * 30)
        t = time.gmtime(ts)
        ms = rng.randrange(1000)
        event: dict[str, Any] = {
            "event_id": event_id,
            "collection": rng.choice(COLLECTIONS),
            "source_shape": "glamira",
            "event_time": time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{ms:03d}Z",
            "local_time": time.strftime("%Y-%m-%d %H:%M:%S", t),
            "ip": f"5.88.{rng.randrange(256)}.{rng.randrange(256)}",
            "user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 13_3 like Mac OS X) AppleWebKit/605.1.15",
            "resolution": "375x667",
            "user_id_db": "",
            "device_id": f"{rng.getrandbits(128):032x}",
            "api_version": "1.0",
            "store_id": str(rng.randrange(1, 86)),
            "show_recommendation": rng.choice(["true", "false", None]),
            "current_url": f"https://www.glamira.fr/glamira-pendant-{i}.html?alloy=yellow-375",
            "referrer_url": rng.choice(["https://www.google.com/", "", "https://www.facebook.com/"]),
            "email_address": "",
            "product_id": str(100000 + rng.randrange(20000)),
            "source_topic": "product_views",
            "source_partition": rng.randrange(3),
            "source_offset": i,
            "bridged_at": "2026-11-27T21:00:00.000Z",
        }
        kind = i % 10
        if kind == 0:
            event["option"] = [{"option_label": "alloy", "option_id": "332", "value_label": "yellow-375", "value_id": "3315"}]
        elif kind == 1:
            event["option"] = {"alloy": "white-585", "diamond": "", "shapediamond": ""}
        elif kind == 2:  # names MongoDB refuses unless escaped, at several depths
            event["utm.source"] = "newsletter"
            event["$meta"] = {"a.b": [{"$c": 1, "d": "e.f"}], "50%": "$kept"}
        elif kind == 3:
            event.update(source_shape="seed", collection="view_product_detail", remote_ip=event.pop("ip"))
            event["timestamp"] = event["event_time"]
        elif kind == 4:
            event["key_search"] = "bague fiançailles ünïcødé ✓"
            event["cart_products"] = [{"product_id": 1, "amount": 2, "price": "296.00", "currency": "CHF", "option": []}]
        events.append(event)
    return events


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


def iso_ms(ts: datetime) -> str:
    utc = ts.astimezone(UTC)
    return f"{utc:%Y-%m-%dT%H:%M:%S}.{utc.microsecond // 1000:03d}Z"


def star_events(
    rng: random.Random, n: int, dates: list[date], ingested_at: datetime, *, devices: int = 25
) -> list[tuple[dict[str, Any], int, date]]:
    """n bridged events over ``dates``: mostly product views, some bots, some other types, a few
    seed-shaped; each with its event time in epoch ms and its event date."""
    out: list[tuple[dict[str, Any], int, date]] = []
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
            event: dict[str, Any] = {
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
        out.append((event, int(ts.timestamp() * 1000), d))
    return out
