"""Test helpers for the ETL: synthetic events, their MongoDB documents exactly as the sink writes
them (``shared/event.py``), and the star schema computed independently in plain Python.

The expected enrichment comes from hand-labelled tables (``eventgen.samples``: what a person says a
user agent, referrer or site is), not from ``etl_api.enrich``, so the comparison is independent.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from eventgen.samples import PRODUCTS, REFERRERS, STORES, USER_AGENTS, star_events
from sink.documents import IngestStamp, build_document


@dataclass(frozen=True)
class Doc:
    """One generated MongoDB document and the truth about it."""

    doc: dict[str, Any]
    ts_ms: int
    event_date: date


def sink_document(event: dict[str, Any], ingested_at: datetime) -> dict[str, Any]:
    """The sink's document of a bridged event, built by the sink's own builder (``sink.documents``):
    ``_id``, ``ingested_at``, ``ingest_hour``, ``event_date``, ``part``."""
    return build_document(event, IngestStamp.at(ingested_at))


def make_events(rng: random.Random, n: int, dates: list[date], ingested_at: datetime, *, devices: int = 25) -> list[Doc]:
    """n events over ``dates`` (``eventgen.samples.star_events``), as the sink stores them."""
    return [Doc(sink_document(e, ingested_at), ts_ms, d) for e, ts_ms, d in star_events(rng, n, dates, ingested_at, devices=devices)]


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
