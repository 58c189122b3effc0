"""The page in headless Chromium: no console errors, no failed or off-host requests, every plot's
data points equal the API's numbers (and the hand-worked star-schema values), the live section
refreshes, a screenshot lands in artifacts/. A schema the ETL has not created yet: "no data yet"."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.kafka import KafkaConnection
from tests.conftest import REPO
from tests.integration.live.chromium import Chromium
from tests.integration.live.conftest import LiveSetup, make_events, minute_floor, produce
from tests.integration.live.star_fixture import EXPECTED_BREAKDOWNS, EXPECTED_RUN_STATUSES, create_star, drop_schema

pytestmark = pytest.mark.timeout(300)

ARTIFACTS = REPO / "artifacts"
POINTS_JS = """
Array.from(document.querySelectorAll('figure.chart')).map(function (f) {
  return {id: f.id, empty: f.querySelector('.empty') !== null,
          points: Array.from(f.querySelectorAll('.point')).map(function (p) { return [p.dataset.label, Number(p.dataset.value)]; })};
})
"""
RUNS_JS = "Array.from(document.querySelectorAll('#etl-runs tbody tr')).map(function (r) { return r.children[2].textContent; })"


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def charts(raw: list[dict[str, Any]]) -> dict[str, list[tuple[str, int]]]:
    return {c["id"]: [(label, value) for label, value in c["points"]] for c in raw}


async def test_page_renders_the_api_numbers(live: LiveSetup, local_kafka: KafkaConnection, postgres_dsn: str, recent_start: float) -> None:
    await create_star(postgres_dsn, live.topic)
    try:
        await produce(local_kafka, live.topic, make_events(2000, start=recent_start, span_s=12 * 60, seed=21))
        proc = live.process(live_refresh_s="2").start()
        await proc.wait_ready()
        await proc.wait_caught_up()
        until = iso(minute_floor(recent_start + 12 * 60 - 1))
        api_live = await proc.get("/api/live", until=until, minutes=15)
        api_star = await proc.get("/api/star")

        async with Chromium() as page:
            await page.load(f"{proc.url}/?until={until}&minutes=15")
            # The live section is re-fetched every 2 s: wait for two refreshes, then read the DOM.
            deadline = time.monotonic() + 20
            while int(await page.evaluate("Number(document.body.dataset.refreshes || 0)")) < 2:
                assert time.monotonic() < deadline, await page.evaluate("document.body.dataset.refreshError")
                await asyncio.sleep(0.2)
            got = charts(await page.evaluate(POINTS_JS))
            runs = await page.evaluate(RUNS_JS)
            await page.screenshot(ARTIFACTS / "live_page.png")
            assert page.errors() == []
            assert all(url.startswith(proc.url) or url.startswith("data:") for url in page.requested_urls()), page.requested_urls()

        # Live plots: exactly the API's numbers, a point per minute, non-trivial.
        assert got["live-minutes"] == [(m["window_start"], m["views"]) for m in api_live["views_per_minute"]]
        assert len(got["live-minutes"]) == 15 and sum(v for _, v in got["live-minutes"]) > 1000
        for top in api_live["top"]:
            assert got[f"live-top-{top['span_minutes']}"] == [(p["product_id"], p["views"]) for p in top["products"]]
            assert len(top["products"]) == 10
        # Star-schema plots: the API's numbers, which are the hand-worked ones.
        names = {"star-days": "views_per_day", "star-countries": "views_per_country"}
        names |= {"star-media": "views_per_referrer_medium", "star-devices": "views_per_device_type"}
        for chart_id, name in names.items():
            assert got[chart_id] == [(row["label"], row["views"]) for row in api_star["breakdowns"][name]]
            assert got[chart_id] == EXPECTED_BREAKDOWNS[name]
        assert runs == EXPECTED_RUN_STATUSES
        assert (ARTIFACTS / "live_page.png").stat().st_size > 20_000
    finally:
        await drop_schema(postgres_dsn, live.topic)


async def test_page_without_star_schema_says_no_data_yet(live: LiveSetup) -> None:
    proc = live.process(live_pg_schema=live.topic + "_missing").start()
    await proc.wait_ready()
    async with Chromium() as page:
        await page.load(proc.url + "/")
        got = await page.evaluate(POINTS_JS)
        runs_text = await page.evaluate("document.getElementById('etl-runs').textContent")
        await page.screenshot(ARTIFACTS / "live_page_empty.png")
        assert page.errors() == []
    assert {c["id"]: c["empty"] for c in got} == {
        "live-minutes": True,
        "live-top-5": True,
        "live-top-60": True,
        "star-days": True,
        "star-countries": True,
        "star-media": True,
        "star-devices": True,
    }
    assert runs_text == "no data yet"
