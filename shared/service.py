"""What every long-running service shares: the HTTP surface and the run loop.

HTTP (FastAPI on uvicorn, the one framework of every service):
``GET /health`` live; ``GET /ready`` 200 only when connected and not in backoff, 503 otherwise
(body says why); ``GET /metrics`` Prometheus text (the service's registry:
:func:`shared.metrics.service_registry`, so ``process_*`` and ``python_*`` too); ``GET /lag``
JSON from the service.

:func:`run_service` runs the worker and the HTTP server in one event loop. SIGTERM/SIGINT only
set the ``stop`` event; the worker drains, commits what is durable and returns; the process then
exits 0. A worker that does not return within ``shutdown_timeout`` is cancelled. Beside the
worker, freed heap goes back to the kernel every ``heap_trim_interval_s`` (:mod:`shared.memory`),
so a process at rest does not hold its largest backlog's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from shared.memory import release_free_heap_every
from shared.metrics import ready_gauge, service_registry

log = logging.getLogger(__name__)

SCRAPE_REFRESH_S = 3.0
HEAP_TRIM_INTERVAL_S = 60.0  # how often freed heap goes back to the kernel (shared.memory)


@dataclass
class ServiceState:
    """Liveness and readiness as the worker reports them, and how to compute ``/lag``."""

    name: str
    registry: CollectorRegistry = field(default_factory=service_registry)
    ready: bool = False
    not_ready_reason: str = "starting"
    lag: Callable[[], Awaitable[dict[str, Any]]] | None = None
    # Awaited (bounded by SCRAPE_REFRESH_S, errors ignored) before each /metrics answer: gauges
    # that need a broker round trip (the sink's lag) are fresh at every scrape.
    on_scrape: Callable[[], Awaitable[Any]] | None = None

    def __post_init__(self) -> None:
        ready_gauge(self.registry).set_function(lambda: 1.0 if self.ready else 0.0)

    def set_ready(self) -> None:
        if not self.ready:
            log.info("ready")
        self.ready, self.not_ready_reason = True, ""

    def set_not_ready(self, reason: str) -> None:
        if self.ready or reason != self.not_ready_reason:
            log.warning("not ready: %s", reason)
        self.ready, self.not_ready_reason = False, reason


def create_http_app(state: ServiceState) -> FastAPI:
    app = FastAPI(title=state.name, docs_url="/docs")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "service": state.name}

    @app.get("/ready")
    async def ready() -> Response:
        if state.ready:
            return JSONResponse({"ready": True})
        return JSONResponse({"ready": False, "reason": state.not_ready_reason}, status_code=503)

    @app.get("/metrics")
    async def metrics() -> Response:
        if state.on_scrape is not None:
            try:
                await asyncio.wait_for(state.on_scrape(), SCRAPE_REFRESH_S)
            except Exception as exc:  # the broker may be down: answer with the last values
                log.debug("metrics refresh: %s: %s", type(exc).__name__, exc)
        return PlainTextResponse(generate_latest(state.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/lag")
    async def lag() -> Response:
        if state.lag is None:
            return JSONResponse({"error": "no lag source"}, status_code=404)
        try:
            return JSONResponse(await state.lag())
        except Exception as exc:  # the broker may be down: say so, do not 500 with a trace
            return JSONResponse({"error": f"{type(exc).__name__}: {exc}"}, status_code=503)

    return app


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the service owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def run_service(
    state: ServiceState,
    worker: Callable[[asyncio.Event], Awaitable[None]],
    *,
    host: str,
    port: int,
    shutdown_timeout: float = 10.0,
    app: FastAPI | None = None,
    heap_trim_interval_s: float = HEAP_TRIM_INTERVAL_S,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # log_config=None: uvicorn installs no handlers of its own; its records go through shared.logs (LOG_FORMAT)
    server = _Server(
        uvicorn.Config(app or create_http_app(state), host=host, port=port, log_level="warning", log_config=None, lifespan="off")
    )
    http = asyncio.create_task(server.serve(), name="http")
    trim = asyncio.create_task(release_free_heap_every(heap_trim_interval_s), name="heap-trim")
    work: asyncio.Task[None] = asyncio.ensure_future(worker(stop))
    stopping = asyncio.ensure_future(stop.wait())
    try:
        # The shutdown deadline runs from the signal, not from whenever the worker notices it.
        await asyncio.wait({work, http, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if http.done() and not work.done():
            log.error("HTTP server on %s:%s stopped unexpectedly; stopping worker", host, port)
            stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(work), timeout=shutdown_timeout)
        except TimeoutError:
            log.error("worker did not stop within %.0fs; cancelling", shutdown_timeout)
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work
        work.result() if not work.cancelled() else None
    finally:
        stopping.cancel()
        trim.cancel()
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(http, timeout=3)
