"""Events → MongoDB (sink-shaped documents) → POST /runs → the star schema equals a plain-Python
computation, table by table, row by row; re-runs (incremental and full) change nothing."""

# ruff: noqa: E501
from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
import httpx
from etl_api.schema import table_checksums
from eventgen.samples import BOT_UAS

from tests.integration.etl.helpers import expected_star, make_events

RUN_TIMEOUT = 240


async def wait_run(client: httpx.AsyncClient, run_id: str, timeout: float = RUN_TIMEOUT) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = await client.get(f"/runs/{run_id}")
        assert r.status_code == 200, r.text
        body = r.json()
        if body["status"] in ("succeeded", "failed"):
            return body
        await asyncio.sleep(0.5)
    raise AssertionError(f"run {run_id} not finished in {timeout}s")


async def run_ok(client: httpx.AsyncClient, body: dict[str, Any] | None = None) -> dict[str, Any]:
    r = await client.post("/runs", json=body or {"mode": "incremental"})
    assert r.status_code == 202, r.text
    run = await wait_run(client, r.json()["run_id"])
    assert run["status"] == "succeeded", run["error"]
    return run


def insert(coll: Any, docs: list[Any]) -> None:
    coll.insert_many([d.doc for d in docs], ordered=False)


async def star_rows(pg: asyncpg.Connection, schema: str) -> dict[str, list[asyncpg.Record]]:
    q = {
        "products": "SELECT product_key, product_id, product_name, product_slug, category, created_date FROM {s}.dim_product ORDER BY product_key",
        "stores": "SELECT country_key, store_id, site_domain, country_name, region, created_date FROM {s}.dim_country ORDER BY country_key",
        "referrers": "SELECT referrer_key, referrer_url, referrer_domain, referrer_type, created_date FROM {s}.dim_referrer ORDER BY referrer_key",
        "devices": "SELECT device_key, device_id, device_type, browser_info, browser, os, created_date FROM {s}.dim_device ORDER BY device_key",
        "facts": """SELECT f.fact_key, f.date_key, d.date, p.product_id, c.store_id, r.referrer_url, v.device_id,
                           f.product_key, f.country_key, f.referrer_key, f.device_key,
                           f.view_count, f.unique_visitors, f.first_view_time, f.last_view_time, f.avg_view_timestamp,
                           f.view_duration_seconds, f.batch_id, f.data_source
                    FROM {s}.fact_product_views f JOIN {s}.dim_date d USING (date_key) JOIN {s}.dim_product p USING (product_key)
                    JOIN {s}.dim_country c USING (country_key) JOIN {s}.dim_referrer r USING (referrer_key) JOIN {s}.dim_device v USING (device_key)
                    ORDER BY f.fact_key""",
    }
    return {k: await pg.fetch(v.format(s=f'"{schema}"')) for k, v in q.items()}


def assert_star_equals(rows: dict[str, list[asyncpg.Record]], exp: dict[str, Any], run_ids: set[str]) -> None:
    # unknown members (key 0) first, then real members keyed 1..n by natural-key order of first load
    assert tuple(rows["products"][0].values())[:2] == (0, "")
    got_products = {r["product_id"]: (r["product_name"], r["product_slug"], r["category"], r["created_date"]) for r in rows["products"][1:]}
    assert got_products == exp["products"]
    got_stores = {r["store_id"]: (r["site_domain"], r["country_name"], r["region"], r["created_date"]) for r in rows["stores"][1:]}
    assert got_stores == exp["stores"]
    got_refs = {r["referrer_url"]: (r["referrer_domain"], r["referrer_type"], r["created_date"]) for r in rows["referrers"][1:]}
    assert got_refs == exp["referrers"]
    got_devices = {
        r["device_id"]: (r["device_type"], r["browser_info"], r["browser"], r["os"], r["created_date"]) for r in rows["devices"][1:]
    }
    assert got_devices == exp["devices"]
    got_facts = {
        (r["date"], r["product_id"] or None, r["store_id"] or None, r["referrer_url"] or None, r["device_id"] or None): (
            r["view_count"],
            r["unique_visitors"],
            r["first_view_time"],
            r["last_view_time"],
            r["avg_view_timestamp"],
            r["view_duration_seconds"],
        )
        for r in rows["facts"]
    }
    assert len(got_facts) == len(rows["facts"])
    assert got_facts == exp["facts"]
    assert sum(r["view_count"] for r in rows["facts"]) == exp["valid"]
    assert {r["batch_id"] for r in rows["facts"]} <= run_ids
    assert {r["data_source"] for r in rows["facts"]} == {"kafka_mongodb"}


def assert_key_rules(rows: dict[str, list[asyncpg.Record]]) -> None:
    """Keys of a first load: 1..n in natural-key order; fact_key = date_key * 1e9 + rank in the date."""
    for table, natural in (("products", "product_id"), ("stores", "store_id"), ("referrers", "referrer_url"), ("devices", "device_id")):
        members = rows[table][1:]
        assert [r[0] for r in members] == list(range(1, len(members) + 1)), table
        assert [r[natural] for r in members] == sorted(r[natural] for r in members), table
    by_date: dict[int, list[asyncpg.Record]] = {}
    for r in rows["facts"]:
        by_date.setdefault(r["date_key"], []).append(r)
    for dk, facts in by_date.items():
        ordered = sorted(facts, key=lambda r: (r["product_key"], r["country_key"], r["referrer_key"], r["device_key"]))
        assert [r["fact_key"] for r in ordered] == [dk * 1_000_000_000 + i for i in range(1, len(ordered) + 1)]


async def test_star_schema_equals_plain_python_and_reruns_change_nothing(make_service, mongo_collection, pg, unique_name) -> None:
    rng = random.Random(5)
    dates = [date(2020, 6, 1), date(2020, 6, 2), date(2020, 6, 3)]
    docs = make_events(rng, 400, dates, datetime.now(UTC))
    insert(mongo_collection, docs)
    exp = expected_star(docs)
    schema = unique_name.lower()
    svc = make_service(schema)
    await asyncio.sleep(1.2)  # past the 1 s settle margin
    async with svc.client() as client:
        run1 = await run_ok(client)
        rows = await star_rows(pg, schema)
        assert_star_equals(rows, exp, {run1["run_id"]})
        assert_key_rules(rows)
        rec = run1["reconciliation"]
        n_read = sum(1 for d in docs if d.doc["collection"] == "view_product_detail")
        n_bots = sum(1 for d in docs if d.doc["collection"] == "view_product_detail" and d.doc.get("user_agent") in BOT_UAS)
        assert rec["events_read"] == rec["events_new"] == n_read
        assert rec["valid_views"] == rec["view_count_written"] == exp["valid"]
        assert rec["skipped"] == ({"bot": n_bots} if n_bots else {})
        assert rec["events_read"] == rec["valid_views"] + rec["skipped_total"]
        assert run1["touched_dates"] == [d.isoformat() for d in dates]
        assert run1["counts"]["fact_product_views"]["inserted"] == len(exp["facts"])
        assert set(run1["timings"]) >= {"extract_seconds", "transform_seconds", "load_seconds", "driver_python_peak_rss_mb"}

        print("run1 timings", run1["timings"])
        first = await table_checksums(pg, schema)
        # incremental again: nothing new → nothing changes
        run2 = await run_ok(client)
        assert run2["reconciliation"]["events_new"] == 0 and run2["touched_dates"] == []
        assert await table_checksums(pg, schema) == first
        # full rebuild: same keys, same rows (batch_id/processed_at are the volatile audit columns)
        run3 = await run_ok(client, {"mode": "full"})
        assert await table_checksums(pg, schema) == first
        assert_star_equals(await star_rows(pg, schema), exp, {run3["run_id"]})
        # range recompute of one date: same again
        await run_ok(client, {"mode": "range", "date_from": "2020-06-02", "date_to": "2020-06-02"})
        assert await table_checksums(pg, schema) == first
        listed = (await client.get("/runs")).json()
        assert [r["status"] for r in listed] == ["succeeded"] * 4
