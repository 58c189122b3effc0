"""shared.service's /metrics: the default collectors, pipeline_service_ready following readiness,
and the on_scrape refresh (awaited before the answer, bounded, its failure never a 500)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from prometheus_client import Gauge
from prometheus_client.parser import text_string_to_metric_families

from shared import service
from shared.service import ServiceState, create_http_app


async def scrape(state: ServiceState) -> dict[str, list[tuple[dict[str, str], float]]]:
    transport = httpx.ASGITransport(app=create_http_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        res = await client.get("/metrics")
    assert res.status_code == 200
    return {f.name: [(s.labels, s.value) for s in f.samples] for f in text_string_to_metric_families(res.text)}


async def test_metrics_has_the_default_collectors_and_readiness() -> None:
    state = ServiceState("svc")
    families = await scrape(state)
    assert {
        "process_cpu_seconds",
        "process_resident_memory_bytes",
        "process_start_time_seconds",
        "python_info",
        "python_gc_collections",
    } <= set(families)
    assert not [name for name in families if name.endswith("_created")]
    assert families["pipeline_service_ready"] == [({}, 0.0)]
    state.set_ready()
    assert (await scrape(state))["pipeline_service_ready"] == [({}, 1.0)]
    state.set_not_ready("mongodb: down")
    assert (await scrape(state))["pipeline_service_ready"] == [({}, 0.0)]


async def test_on_scrape_refreshes_before_the_answer() -> None:
    state = ServiceState("svc")
    gauge = Gauge("svc_lag_records", "lag", ["partition"], registry=state.registry)
    calls = []

    async def refresh() -> None:
        calls.append(len(calls))
        gauge.labels("0").set(len(calls) * 10)

    state.on_scrape = refresh
    assert (await scrape(state))["svc_lag_records"] == [({"partition": "0"}, 10.0)]
    assert (await scrape(state))["svc_lag_records"] == [({"partition": "0"}, 20.0)]
    assert calls == [0, 1]


@pytest.mark.parametrize("failure", ["raises", "hangs"])
async def test_a_failing_refresh_answers_with_the_last_values(failure: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "SCRAPE_REFRESH_S", 0.2)
    state = ServiceState("svc")
    Gauge("svc_lag_records", "lag", registry=state.registry).set(7)

    async def refresh() -> None:
        if failure == "raises":
            raise ConnectionError("broker down")
        await asyncio.sleep(30)

    state.on_scrape = refresh
    started = asyncio.get_running_loop().time()
    assert (await scrape(state))["svc_lag_records"] == [({}, 7.0)]
    assert asyncio.get_running_loop().time() - started < 5
