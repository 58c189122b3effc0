"""The page in headless Chromium, after a demo-sized star schema and a live stream of events stamped
with the last minutes' times.

Every number the page draws is read from the DOM (each chart point carries its label, key and
value) and compared with values the test computes itself: the star-schema breakdowns from the
fact rows it wrote (plain Python sums, not the app's SQL), for the default range and for a
filtered range; the live counts from the events it produced. Also: no console errors, no failed
or off-origin request, both sections refresh themselves, one PostgreSQL pool (the same backends
after more page loads). Screenshots go to ``$CI_ARTIFACTS_DIR`` (default ``artifacts/``).
The star schema's freshness beside the star header: what a stand-in ETL API's ``GET /continuous``
answers, redrawn by the live timer when the answer changes. A schema the ETL has not created yet:
every chart says "no data yet"; an ETL API that is down: "ETL API unreachable".
"""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from shared.kafka import KafkaConnection, wait_for_leaders
from tests.conftest import REPO
from tests.integration.live.chromium import Chromium
from tests.integration.live.conftest import WINDOW_S, Expected, LiveSetup, make_events, minute_floor, produce
from tests.integration.live.star_fixture import Fact, create_random_star, drop_schema, grant_analyst

pytestmark = pytest.mark.timeout(300)

ARTIFACTS = Path(os.environ.get("CI_ARTIFACTS_DIR") or REPO / "artifacts")
POINTS_JS = """
Array.from(document.querySelectorAll('figure.chart')).map(function (f) {
  return {id: f.id, empty: f.querySelector('.empty') !== null,
          points: Array.from(f.querySelectorAll('.point')).map(function (p) {
            return [p.dataset.label, p.dataset.key === undefined ? null : p.dataset.key, Number(p.dataset.value)]; })};
})
"""
LAST_DAY = date(2026, 11, 22)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def charts(raw: list[dict[str, Any]]) -> dict[str, list[tuple[str, str | None, int]]]:
    return {c["id"]: [(label, key, value) for label, key, value in c["points"]] for c in raw}


# ---- the test's own arithmetic -------------------------------------------------------------------


def ranked(counts: Counter[tuple[str, str]], n: int = 10) -> list[tuple[str, str, int]]:
    """(key, name, views), most views first, ties by key then name (code point order)."""
    return [(k, name, v) for (k, name), v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0][0], kv[0][1]))[:n] if v > 0]


def star_expectation(facts: Iterable[Fact], lo: date, hi: date, country: str | None = None, device: str | None = None) -> dict[str, Any]:
    """What each star chart must show (label, key, value), from the facts written."""
    picked = [
        f
        for f in facts
        if lo <= f.day <= hi
        and (country is None or (f.country_name or f.store_id) == country)
        and (device is None or (f.device_type or "unknown") == device)
    ]
    by: dict[str, Counter[tuple[str, str]]] = {k: Counter() for k in ("product", "country", "medium", "device")}
    days: Counter[date] = Counter()
    for f in picked:
        by["product"][(f.product_id, f.product_name or f.product_id)] += f.views
        by["country"][(f.country_name or f.store_id,) * 2] += f.views
        by["medium"][(f.referrer_type or "unknown",) * 2] += f.views
        by["device"][(f.device_type or "unknown",) * 2] += f.views
        days[f.day] += f.views
    out: dict[str, Any] = {}
    for dim, chart_id in (
        ("product", "star-products"),
        ("country", "star-countries"),
        ("medium", "star-media"),
        ("device", "star-devices"),
    ):
        rows = ranked(by[dim])
        if dim == "product":
            out[chart_id] = [(f"{name} ({key})" if name != key else key, key, v) for key, name, v in rows]
        else:
            out[chart_id] = [(name, key, v) for key, name, v in rows]
    span = [lo + timedelta(days=i) for i in range((hi - lo).days + 1)]
    out["star-days"] = [(d.isoformat(), None, days[d]) for d in span] if picked else []
    return out


def live_expectation(
    events: list[dict[str, Any]], last_window: int, minutes: int, retention_s: int, names: dict[str, str]
) -> dict[str, Any]:
    expected = Expected.of(events)
    per_window = {ws: sum(c.values()) for ws, c in expected.stores.items()}
    first = last_window - (minutes - 1) * WINDOW_S
    out: dict[str, Any] = {"live-minutes": [(iso(ws), None, per_window.get(ws, 0)) for ws in range(first, last_window + 1, WINDOW_S)]}
    end = last_window + WINDOW_S
    first_hour = int((end - retention_s) // 3600 * 3600)
    out["live-hours"] = [
        (iso(h), None, sum(v for ws, v in per_window.items() if h <= ws < min(h + 3600, end))) for h in range(first_hour, end, 3600)
    ]
    for span in (5, 60):
        top = expected.top(last_window, span, 10)
        out[f"live-top-{span}"] = [
            (f"{names[p['product_id']]} ({p['product_id']})" if p["product_id"] in names else p["product_id"], p["product_id"], p["views"])
            for p in top
        ]
    return out


async def wait_for(page: Any, expression: str, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not await page.evaluate(expression):
        assert time.monotonic() < deadline, f"{what}: {await page.evaluate('JSON.stringify(document.body.dataset)')}"
        await asyncio.sleep(0.2)


class EtlApiStandIn(http.server.ThreadingHTTPServer):
    """``GET /continuous`` answering ``self.body`` (the ETL API's shape), on a free local port."""

    def __init__(self) -> None:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                payload = json.dumps(server.body).encode()
                self.send_response(200 if self.path == "/continuous" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.body: dict[str, Any] = {}
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def continuous_body(star_as_of: str, behind: float, **change: Any) -> dict[str, Any]:
    return {"desired": True, "alive": True, "state": "running", "reason": None, "star_as_of": star_as_of, "behind_seconds": behind} | change


FRESHNESS_JS = "[document.getElementById('star-freshness').textContent, document.getElementById('star-freshness').dataset.status]"


async def backends(dsn: str, application_name: str) -> list[tuple[int, str]]:
    """(pid, role) of the page's connections."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT pid, usename FROM pg_stat_activity WHERE application_name = $1 ORDER BY pid", application_name)
        return [(r["pid"], r["usename"]) for r in rows]
    finally:
        await conn.close()


async def test_page_shows_the_star_schema_and_the_last_minutes_exactly(
    live: LiveSetup, local_kafka: KafkaConnection, postgres_dsn: str
) -> None:
    facts = await create_random_star(postgres_dsn, live.topic, seed=18, last=LAST_DAY)
    await grant_analyst(postgres_dsn, live.topic)  # the page reads as the read-only role analyst
    try:
        # Events stamped with the last 6 minutes' times, as `eventgen --now` streams them.
        now = time.time()
        start = float(minute_floor(now) - 6 * WINDOW_S)
        events = make_events(1500, start=start, span_s=now - start, seed=18)
        await wait_for_leaders(local_kafka, [live.topic], timeout_s=60)
        await produce(local_kafka, live.topic, events)
        etl = EtlApiStandIn()
        etl.body = continuous_body("2026-11-22T23:59:58.5+00:00", 4.2)
        proc = live.process(
            analyst_postgres_dsn=os.environ["ANALYST_POSTGRES_DSN"],
            live_refresh_s="2",
            live_star_refresh_s="3",
            live_pg_application_name=live.topic,
            live_etl_api_url=etl.url,
        ).start()
        await proc.wait_ready()
        await proc.wait_caught_up()
        last_window = minute_floor(now)
        until, minutes = iso(last_window), 10
        names = {f.product_id: f.product_name for f in facts if f.product_name}
        want_live = live_expectation(events, last_window, minutes, 7200, names)
        want_default = star_expectation(facts, LAST_DAY - timedelta(days=6), LAST_DAY)
        filtered = {"from": "2026-10-20", "to": "2026-11-10", "country": "Italy", "device": "mobile"}
        want_filtered = star_expectation(facts, date(2026, 10, 20), date(2026, 11, 10), "Italy", "mobile")
        assert sum(v for _, _, v in want_live["live-minutes"]) > 1000 and len(want_filtered["star-products"]) >= 5

        async with Chromium() as page:
            await page.load(f"{proc.url}/?until={until}&minutes={minutes}")
            await wait_for(page, "Number(document.body.dataset.refreshes || 0) >= 2", "live section refreshed twice")
            await wait_for(page, "Number(document.body.dataset.starRefreshes || 0) >= 1", "star section refreshed")
            fresh_loaded = await page.evaluate(FRESHNESS_JS)
            # The live timer redraws the freshness line from /api/star/freshness (answers are cached 2 s).
            etl.body = continuous_body("2026-11-23T00:00:09+00:00", 250, state="waiting", reason="MongoDB: timed out\nTraceback")
            await wait_for(page, "document.getElementById('star-freshness').dataset.status === 'not_running'", "freshness redrawn")
            fresh_redrawn = await page.evaluate(FRESHNESS_JS)
            got = charts(await page.evaluate(POINTS_JS))
            runs = await page.evaluate("document.getElementById('etl-runs').textContent")
            shown_range = await page.evaluate(
                "[document.getElementById('star-range').dataset.from, document.getElementById('star-range').dataset.to]"
            )
            await page.screenshot(ARTIFACTS / "live_page.png")

            await page.load(f"{proc.url}/?until={until}&minutes={minutes}&" + "&".join(f"{k}={v}" for k, v in filtered.items()))
            await wait_for(page, "Number(document.body.dataset.starRefreshes || 0) >= 1", "filtered star section refreshed")
            got_filtered = charts(await page.evaluate(POINTS_JS))
            form = await page.evaluate(
                "Array.from(document.querySelectorAll('#star-filters input, #star-filters select'))"
                ".map(function (e) { return [e.name, e.value]; })"
            )
            await page.screenshot(ARTIFACTS / "live_page_filtered.png")
            assert page.errors() == []
            assert all(url.startswith(proc.url) or url.startswith("data:") for url in page.requested_urls()), page.requested_urls()

        etl.shutdown()
        assert fresh_loaded == ["star schema as of 2026-11-22 23:59:58 UTC, 4 s behind", "running"]
        assert fresh_redrawn == [
            "continuous mode waiting: MongoDB: timed out; star schema as of 2026-11-23 00:00:09 UTC, 4 min behind",
            "not_running",
        ]
        for chart_id, want in want_live.items():
            assert got[chart_id] == want, chart_id
        for chart_id, want in want_default.items():
            assert got[chart_id] == want, chart_id
        assert shown_range == ["2026-11-16", "2026-11-22"]
        assert runs == "etl_runs is not readable by the page's database role"  # analyst may not read it
        for chart_id, want in want_filtered.items():
            assert got_filtered[chart_id] == want, chart_id
        assert form == [["from", "2026-10-20"], ["to", "2026-11-10"], ["country", "Italy"], ["device", "mobile"]]
        # The JSON API answers the same numbers the charts drew.
        api = await proc.get("/api/star/top", dimension="product", **filtered)
        assert [(i["key"], i["views"]) for i in api["items"]] == [(k, v) for _, k, v in want_filtered["star-products"]]

        # One pool: more page loads are served by the backends already open.
        before = await backends(postgres_dsn, live.topic)
        async with httpx.AsyncClient(base_url=proc.url, timeout=10) as client:
            for _ in range(5):
                assert (await client.get("/")).status_code == 200
        after = await backends(postgres_dsn, live.topic)
        assert 1 <= len(before) <= 4 and after == before
        assert {role for _, role in before} == {"analyst"}
        assert (ARTIFACTS / "live_page.png").stat().st_size > 20_000
    finally:
        await drop_schema(postgres_dsn, live.topic)


async def test_page_without_star_schema_says_no_data_yet(live: LiveSetup) -> None:
    with socket.socket() as s:  # a port nobody listens on: the ETL API is down
        s.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{s.getsockname()[1]}"
    proc = live.process(live_pg_schema=live.topic + "_missing", live_etl_api_url=down).start()
    await proc.wait_ready()
    async with Chromium() as page:
        await page.load(proc.url + "/")
        got = await page.evaluate(POINTS_JS)
        runs_text = await page.evaluate("document.getElementById('etl-runs').textContent")
        range_text = await page.evaluate("document.getElementById('star-range').textContent")
        fresh = await page.evaluate(FRESHNESS_JS)
        await page.screenshot(ARTIFACTS / "live_page_empty.png")
        assert page.errors() == []
    ids = {"live-minutes", "live-hours", "live-top-5", "live-top-60"}
    ids |= {"star-days", "star-products", "star-countries", "star-media", "star-devices"}
    assert {c["id"]: c["empty"] for c in got} == dict.fromkeys(ids, True)
    assert runs_text == "no data yet"
    assert range_text == "no data yet: the ETL has not loaded any fact"
    assert fresh == ["ETL API unreachable", "unreachable"]
