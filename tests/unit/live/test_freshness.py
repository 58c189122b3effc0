"""The star schema's freshness line (live.freshness): the exact text for each answer of the ETL
API's ``GET /continuous``, the fallback when the ETL API does not answer (down, not ready, slow,
not JSON), the cache, and where the page and ``/api/star/freshness`` show it."""

from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from live.app import LiveReader, create_app
from live.freshness import FreshnessReader, StarFreshness, as_of_text, behind_text, describe, fetch_continuous
from live.page import freshness_html, render_page
from live.settings import LiveSettings
from live.star_api import StarSection

from shared.kafka import KafkaConnection
from shared.service import ServiceState
from tests.unit.live.test_star_api import FakeStar

NOW = datetime(2026, 11, 27, 10, 3, 12, tzinfo=UTC)
RUNNING = {
    "desired": True,
    "alive": True,
    "state": "running",
    "reason": None,
    "ready": True,
    "heartbeat_at": "2026-11-27T10:03:10.5+00:00",
    "batches": 42,
    "star_as_of": "2026-11-27T10:03:05.250000+00:00",
    "behind_seconds": 6.75,
    "behind_events": 12,
    "interval_s": 5.0,
    "last_batches": [],
}


def test_a_running_worker_says_as_of_when_and_how_far_behind() -> None:
    f = describe(RUNNING, NOW)
    assert (f.status, f.text) == ("running", "star schema as of 2026-11-27 10:03:05 UTC, 7 s behind")
    assert (f.star_as_of, f.behind_seconds, f.batches, f.state, f.reason) == (
        datetime(2026, 11, 27, 10, 3, 5, 250000, tzinfo=UTC),
        6.75,
        42,
        "running",
        None,
    )


AS_OF = "star schema as of 2026-11-27 10:03:05 UTC, 7 s behind"


@pytest.mark.parametrize(
    ("change", "status", "text"),
    [
        ({"desired": False, "alive": False, "state": "stopped", "reason": "not desired"}, "off", f"continuous mode off; {AS_OF}"),
        (
            {"state": "waiting", "reason": "ServerSelectionTimeoutError: 127.0.0.1:27017\nTraceback …"},
            "not_running",
            f"continuous mode waiting: ServerSelectionTimeoutError: 127.0.0.1:27017; {AS_OF}",
        ),
        (
            {"state": "yielding", "reason": "another run is queued or running"},  # healthy: a backfill runs meanwhile
            "running",
            f"{AS_OF}; the worker waits for a one-off run",
        ),
        (
            {"alive": False, "state": "failed", "reason": "no heartbeat for 75s"},
            "not_running",
            f"continuous mode failed: no heartbeat for 75s; {AS_OF}",
        ),
        ({"alive": False, "state": None, "reason": None}, "not_running", f"continuous mode starting; {AS_OF}"),
    ],
)
def test_a_worker_that_is_not_running_says_why(change: dict[str, Any], status: str, text: str) -> None:
    f = describe(RUNNING | change, NOW)
    assert (f.status, f.text) == (status, text)
    assert f.reason == change["reason"]  # the whole reason stays in the JSON (and the element's title)


def test_a_long_reason_is_cut_in_the_line_not_in_the_json() -> None:
    reason = "worker process exited with code 1: " + "x" * 200
    f = describe(RUNNING | {"alive": False, "state": "failed", "reason": reason}, NOW)
    assert f.text == f"continuous mode failed: {reason[:119]}…; {AS_OF}"
    assert f.reason == reason


def test_nothing_loaded_yet_and_the_units_of_behind() -> None:
    assert describe(RUNNING | {"star_as_of": None, "behind_seconds": None}, NOW).text == "star schema: nothing loaded yet"
    assert [behind_text(s) for s in (0, 0.4, 119.4, 120, 7199, 7200, 90000, -3)] == [
        "0 s",
        "0 s",
        "119 s",
        "2 min",
        "119 min",
        "2 h",
        "25 h",
        "0 s",
    ]
    assert as_of_text(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), None) == "star schema as of 2026-01-02 03:04:05 UTC"


# ---- the ETL API not answering -------------------------------------------------------------------


class Stub(http.server.BaseHTTPRequestHandler):
    """GET /continuous answers what the server's ``answer`` says: (status, body bytes)."""

    def do_GET(self) -> None:
        status, body = self.server.answer  # type: ignore[attr-defined]
        self.server.calls += 1  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def stub() -> Iterator[Any]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    server.answer, server.calls = (200, b"{}"), 0  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_etl_api_that_does_not_answer_is_unreachable_never_an_error(stub: Any) -> None:
    down = asyncio.run(FreshnessReader(f"http://127.0.0.1:{closed_port()}").read())
    assert (down.status, down.text) == ("unreachable", "ETL API unreachable")
    assert down.reason is not None and "Connection refused" in down.reason
    stub.answer = (503, b'{"detail": "not ready: starting"}')
    url = f"http://127.0.0.1:{stub.server_address[1]}"
    starting = asyncio.run(FreshnessReader(url).read())
    assert (starting.status, starting.text, starting.reason) == (
        "unreachable",
        "ETL API unreachable",
        'HTTP 503: {"detail": "not ready: starting"}',
    )
    stub.answer = (200, b"<html>a proxy page</html>")
    assert asyncio.run(FreshnessReader(url).read()).text == "ETL API unreachable"
    stub.answer = (200, b"[]")
    assert asyncio.run(FreshnessReader(url).read()).reason == "ValueError: GET /continuous did not answer a JSON object"


def test_a_slow_etl_api_is_given_up_on_within_the_timeout() -> None:
    def hang(url: str, timeout_s: float) -> dict[str, Any]:
        import time

        time.sleep(2)
        return RUNNING

    async def go() -> tuple[StarFreshness, float]:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        answer = await FreshnessReader("http://etl", timeout_s=0.1, fetch=hang).read()
        return answer, loop.time() - t0

    answer, took = asyncio.run(go())
    assert answer.status == "unreachable" and took < 1.8  # timeout_s + 1 at most


def test_one_answer_serves_every_request_for_the_cache_period(stub: Any) -> None:
    import json

    stub.answer = (200, json.dumps(RUNNING).encode())
    clock = [0.0]
    reader = FreshnessReader(f"http://127.0.0.1:{stub.server_address[1]}/", cache_s=2.0, clock=lambda: clock[0])

    async def many() -> list[StarFreshness]:
        return list(await asyncio.gather(*(reader.read() for _ in range(10))))

    assert {f.text for f in asyncio.run(many())} == {"star schema as of 2026-11-27 10:03:05 UTC, 7 s behind"}
    assert stub.calls == 1  # concurrent requests shared one call
    clock[0] = 1.9
    asyncio.run(reader.read())
    assert stub.calls == 1
    clock[0] = 2.1
    asyncio.run(reader.read())
    assert stub.calls == 2


def test_an_empty_url_disables_it() -> None:
    f = asyncio.run(FreshnessReader("").read())
    assert (f.status, f.text) == ("disabled", "")
    assert freshness_html(f) == "" and freshness_html(None) == ""


def test_fetch_continuous_reads_the_route_under_the_base_url(stub: Any) -> None:
    stub.answer = (200, b'{"desired": false}')
    assert fetch_continuous(f"http://127.0.0.1:{stub.server_address[1]}/", 1.0) == {"desired": False}


# ---- on the page and in the JSON API -------------------------------------------------------------


def test_the_page_shows_it_beside_the_star_header() -> None:
    page = render_page("starting", StarSection(None, {}, None, []), refresh_s=5, star_refresh_s=60, freshness=describe(RUNNING, NOW))
    assert (
        '<h2>Star schema (ETL, refreshed every 60 s) <span class="muted" id="star-freshness" data-status="running" '
        'data-behind-seconds="6.75" data-as-of="2026-11-27T10:03:05.250000Z">'
        "star schema as of 2026-11-27 10:03:05 UTC, 7 s behind</span></h2>"
    ) in page
    assert "every(Number(body.dataset.liveEvery), '/api/star/freshness', 'data-freshness-refreshes'" in page
    down = render_page(
        "starting",
        StarSection(None, {}, None, []),
        refresh_s=5,
        star_refresh_s=60,
        freshness=StarFreshness(status="unreachable", text="ETL API unreachable", reason='HTTP 503: "<x>"', checked_at=NOW),
    )
    assert (
        '<h2>Star schema (ETL, refreshed every 60 s) <span class="muted error" id="star-freshness" data-status="unreachable" '
        'title="HTTP 503: &quot;&lt;x&gt;&quot;">ETL API unreachable</span></h2>'
    ) in down
    assert "<h2>Star schema (ETL, refreshed every 60 s)</h2>" in render_page(
        "starting", StarSection(None, {}, None, []), refresh_s=5, star_refresh_s=60
    )


def test_the_route_and_the_page_answer_with_the_etl_api_down() -> None:
    s = LiveSettings(local_kafka=KafkaConnection(bootstrap_servers="127.0.0.1:1"), etl_api_url=f"http://127.0.0.1:{closed_port()}")
    with TestClient(create_app(s, ServiceState("live"), LiveReader(s), star=FakeStar())) as c:
        api = c.get("/api/star/freshness")
        assert api.status_code == 200
        assert (api.json()["status"], api.json()["text"]) == ("unreachable", "ETL API unreachable")
        page = c.get("/")
        assert page.status_code == 200
        assert '<span class="muted error" id="star-freshness" data-status="unreachable"' in page.text
        assert ">ETL API unreachable</span></h2>" in page.text
        schema = c.get("/openapi.json").json()["paths"]["/api/star/freshness"]["get"]["responses"]["200"]
        assert schema["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/StarFreshness"}


def test_the_route_relays_a_running_worker(stub: Any) -> None:
    import json

    stub.answer = (200, json.dumps(RUNNING).encode())
    s = LiveSettings(local_kafka=KafkaConnection(bootstrap_servers="127.0.0.1:1"), etl_api_url=f"http://127.0.0.1:{stub.server_address[1]}")
    with TestClient(create_app(s, ServiceState("live"), LiveReader(s), star=FakeStar())) as c:
        body = c.get("/api/star/freshness").json()
    assert {k: body[k] for k in ("status", "text", "star_as_of", "behind_seconds", "batches")} == {
        "status": "running",
        "text": "star schema as of 2026-11-27 10:03:05 UTC, 7 s behind",
        "star_as_of": "2026-11-27T10:03:05.250000Z",
        "behind_seconds": 6.75,
        "batches": 42,
    }
