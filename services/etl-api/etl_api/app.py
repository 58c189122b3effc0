"""The HTTP API: assembles settings, the PostgreSQL pool, the DDL, the run launcher and the routes.

``POST /runs`` (bearer token) → 202 ``{run_id}``; 409 while a run is queued/running; 422 on a
bad body. ``GET /runs/{run_id}``, ``GET /runs``, ``GET /reconciliation?from=&to=`` (the raw store
against the star schema, hour by hour: :mod:`etl_api.ledger`), ``GET /health`` (live),
``GET /ready`` (DDL applied and PostgreSQL answering), ``GET /metrics`` (Prometheus), OpenAPI at
``/docs``.

``GET /runs`` and ``GET /runs/{run_id}`` answer anyone, but only with the bearer token do they show
the run's full ``error`` (it can hold a job-log tail), ``host``, ``pid`` and ``owner_token``; an
anonymous caller gets ``error`` = ``error_summary``, a short fixed-form summary (:func:`error_summary`),
and those fields null (``detail: false``). A wrong token is refused (401).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Literal
from uuid import UUID

import asyncpg
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response, status
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, model_validator

from etl_api import continuous, hops, ledger, runs, supervisor
from etl_api.metrics import EtlMetrics
from etl_api.schema import POSTGRES_FAILURES, apply_ddl
from etl_api.settings import EtlSettings
from etl_api.views import RunView, jsonable
from shared.backoff import Backoff
from shared.errors import is_retriable

log = logging.getLogger(__name__)

# A request waits this long for a pooled connection before it is answered 503.
REQUEST_ACQUIRE_TIMEOUT_S = 10.0

MAX_RANGE_DAYS = 366


class RunRequest(BaseModel):
    """incremental (default): new events since the last successful run; full: rebuild every fact;
    range: recompute the facts of ``date_from``..``date_to`` (inclusive)."""

    model_config = ConfigDict(extra="forbid")
    mode: Literal["incremental", "full", "range"] = "incremental"
    date_from: date | None = None
    date_to: date | None = None

    @model_validator(mode="after")
    def _dates_match_mode(self) -> RunRequest:
        if self.mode == "range":
            if self.date_from is None or self.date_to is None:
                raise ValueError("range mode needs date_from and date_to")
            if self.date_to < self.date_from:
                raise ValueError("date_to is before date_from")
            if (self.date_to - self.date_from).days >= MAX_RANGE_DAYS:
                raise ValueError(f"a range covers at most {MAX_RANGE_DAYS} days")
        elif self.date_from is not None or self.date_to is not None:
            raise ValueError(f"{self.mode} mode takes no dates")
        return self


class RunAccepted(BaseModel):
    run_id: str
    status: str = "queued"


def parse_hour(text: str, what: str) -> str:
    """An ingest hour ``YYYY-MM-DDTHH``, or any ISO-8601 instant (its UTC hour); 422 otherwise."""
    try:
        if len(text) == 13:
            return ledger.hour_of(ledger.hour_start(text))
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, f"{what}: {text!r} is not YYYY-MM-DDTHH or an ISO-8601 instant") from exc
    return ledger.hour_of(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC))


class State:
    def __init__(self, settings: EtlSettings) -> None:
        self.settings = settings
        self.metrics = EtlMetrics(settings.heartbeat_timeout_seconds)
        self.pool: asyncpg.Pool | None = None
        self.launcher: runs.RunLauncher | None = None
        self.supervisor: supervisor.WorkerSupervisor | None = None
        self.ddl_applied = False
        self.not_ready_reason = "starting"


async def supervise(state: State) -> None:
    """Keeps the continuous worker running while it is desired (:mod:`etl_api.supervisor`)."""
    while True:
        try:
            if state.supervisor is not None:
                await state.supervisor.ensure()
        except POSTGRES_FAILURES as exc:
            log.warning("continuous supervisor: %s: %s", type(exc).__name__, exc)
        await asyncio.sleep(state.settings.reaper_interval_seconds)


_bearer = HTTPBearer(auto_error=False)


def get_state(request: Request) -> State:
    state: State = request.app.state.etl
    return state


def require_token(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    """Writes need ``Authorization: Bearer <ETL_API_TOKEN>``; without a configured token they are refused."""
    settings = get_state(request).settings
    expected = settings.api_token.get_secret_value() if settings.api_token else ""
    if not expected:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "writes are disabled: ETL_API_TOKEN is not set")
    if credentials is None or not secrets.compare_digest(credentials.credentials.encode(), expected.encode()):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})


def has_token(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> bool:
    """Reads: True with the right bearer token, False without one (or when no token is
    configured); a wrong token is refused (401), not silently treated as anonymous."""
    if credentials is None:
        return False
    settings = get_state(request).settings
    expected = settings.api_token.get_secret_value() if settings.api_token else ""
    if not expected or not secrets.compare_digest(credentials.credentials.encode(), expected.encode()):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong bearer token", headers={"WWW-Authenticate": "Bearer"})
    return True


Detail = Annotated[bool, Depends(has_token)]


async def connection(request: Request) -> AsyncIterator[asyncpg.Connection]:
    """A pooled warehouse connection for one request; 503 (not 500) when PostgreSQL cannot give one
    (away, restarting): an outage the client retries, said as such."""
    state = get_state(request)
    pool = state.pool
    if pool is None or not state.ddl_applied:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"not ready: {state.not_ready_reason or 'starting'}")
    try:
        conn = await pool.acquire(timeout=REQUEST_ACQUIRE_TIMEOUT_S)
    except POSTGRES_FAILURES as exc:
        log.warning("request %s %s: no PostgreSQL connection: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, f"postgres unavailable: {type(exc).__name__}: {exc}", headers={"Retry-After": "5"}
        ) from exc
    try:
        yield conn
    finally:
        with contextlib.suppress(*POSTGRES_FAILURES):  # a broken connection is closed by the pool
            await pool.release(conn)


Conn = Annotated[asyncpg.Connection, Depends(connection)]


def create_app(settings: EtlSettings) -> FastAPI:
    state = State(settings)

    async def prepare() -> None:
        """Pool, DDL, reaper; PostgreSQL down → retry with bounded backoff, not ready meanwhile."""
        backoff = Backoff(initial=0.5, maximum=15.0)
        while True:
            try:
                if state.pool is None:
                    state.pool = await asyncpg.create_pool(
                        settings.postgres_dsn.get_secret_value(),
                        min_size=1,
                        max_size=5,
                        init=runs.init_connection,
                        server_settings={"search_path": settings.pg_schema, "application_name": "etl-api"},
                    )
                async with state.pool.acquire() as conn:
                    applied = await apply_ddl(conn, settings.pg_schema)
                log.info("DDL applied to schema %s: %s", settings.pg_schema, ", ".join(applied) or "none (all up to date)")
                state.launcher = runs.RunLauncher(settings, state.pool, on_finished=state.metrics.on_finished(state.pool))
                await state.launcher.reap()
                state.supervisor = supervisor.WorkerSupervisor(settings, state.pool)
                if settings.continuous:  # ETL_CONTINUOUS: as PUT /continuous at every start
                    async with state.pool.acquire() as conn:
                        await continuous.set_desired(conn, True)
                state.ddl_applied = True
                state.not_ready_reason = ""
                break
            except POSTGRES_FAILURES as exc:
                state.not_ready_reason = f"postgres: {type(exc).__name__}: {exc}"
                delay = backoff.next_delay()
                log.warning("not ready (%s); retrying in %.1fs", state.not_ready_reason, delay)
                await asyncio.sleep(delay)
        await asyncio.gather(state.launcher.reap_forever(), supervise(state))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        worker = asyncio.create_task(prepare(), name="prepare-and-reap")
        try:
            yield
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
            if state.launcher is not None:
                await state.launcher.close()
            if state.supervisor is not None:
                await state.supervisor.close()
            if state.pool is not None:
                await state.pool.close()

    app = FastAPI(title="etl-api", version="1.0.0", description=__doc__, lifespan=lifespan, docs_url="/docs")
    app.state.etl = state

    @app.post("/runs", status_code=status.HTTP_202_ACCEPTED, response_model=RunAccepted, dependencies=[Depends(require_token)])
    async def start_run(body: RunRequest, conn: Conn) -> RunAccepted:
        try:
            run_id = await runs.create_run(conn, body.mode, body.date_from, body.date_to)
        except runs.RunActiveError as exc:
            state.metrics.rejected.inc()
            await continuous.request_yield(conn)  # a micro-batch may hold the slot: the worker lets the next request in
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
        assert state.launcher is not None
        try:
            await state.launcher.launch(run_id)
        except OSError as exc:
            await runs.mark_failed(conn, run_id, f"could not start the job process: {exc}")
            raise HTTPException(status.HTTP_500_INTERNAL_SERVER_ERROR, f"could not start the job process: {exc}") from exc
        state.metrics.started.labels(body.mode).inc()
        return RunAccepted(run_id=run_id)

    @app.put("/continuous", dependencies=[Depends(require_token)])
    async def start_continuous(conn: Conn) -> JSONResponse:
        """Continuous mode on: a worker is launched (by this or another API instance) and kept running."""
        await continuous.set_desired(conn, True)
        assert state.supervisor is not None
        await state.supervisor.ensure()
        return JSONResponse(jsonable(await supervisor.status(conn, settings, True)))

    @app.delete("/continuous", dependencies=[Depends(require_token)])
    async def stop_continuous(conn: Conn) -> JSONResponse:
        """Continuous mode off: the worker finishes its micro-batch and exits."""
        await continuous.set_desired(conn, False)
        if state.supervisor is not None:
            state.supervisor.stop_child()
        return JSONResponse(jsonable(await supervisor.status(conn, settings, True)))

    @app.get("/continuous")
    async def read_continuous(conn: Conn, detail: Detail) -> JSONResponse:
        """The worker: desired, alive, state and reason, how far the star schema is behind
        (``behind_seconds``, ``behind_events``, ``star_as_of``) and the newest micro-batches."""
        return JSONResponse(jsonable(await supervisor.status(conn, settings, detail)))

    @app.get("/runs/{run_id}", response_model=RunView)
    async def read_run(run_id: UUID, conn: Conn, detail: Detail) -> RunView:
        row = await runs.get_run(conn, str(run_id))
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such run")
        return RunView.of(row, detail)

    @app.get("/runs", response_model=list[RunView])
    async def read_runs(
        conn: Conn,
        detail: Detail,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        run_status: Annotated[Literal["queued", "running", "succeeded", "failed"] | None, Query(alias="status")] = None,
    ) -> list[RunView]:
        return [RunView.of(r, detail) for r in await runs.list_runs(conn, limit, run_status)]

    @app.get("/reconciliation")
    async def reconciliation(
        conn: Conn,
        first: Annotated[str | None, Query(alias="from", description="first ingest hour (YYYY-MM-DDTHH or ISO instant)")] = None,
        last: Annotated[str | None, Query(alias="to", description="last ingest hour, inclusive; default: the watermark's")] = None,
        hours: Annotated[int, Query(ge=1, le=ledger.MAX_SPAN_HOURS, description="without from: this many hours up to `to`")] = 24,
    ) -> JSONResponse:
        """Per ingest hour, MongoDB's product-view documents (ingested up to the watermark) against
        what the star schema accounts for (counted + skipped). ``ok`` is false when an hour is
        ``late`` (healed by the next incremental run within ETL_HEAL_LOOKBACK_HOURS) or
        ``missing`` (counted documents gone from the raw store); ``disagreeing_hours`` names them.
        Default span: the ``hours`` (24) hours up to the watermark's hour."""
        # one snapshot for the watermark and the ledger: a micro-batch committing between the two
        # reads would add ledger counts past the watermark read first, which look "missing"
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            watermark = await conn.fetchval("SELECT ingested_high FROM etl_watermark WHERE name = 'events'")
            to_hour = parse_hour(last, "to") if last else ledger.hour_of(watermark or datetime.now(UTC))
            from_hour = parse_hour(first, "from") if first else ledger.hour_of(ledger.hour_start(to_hour) - timedelta(hours=hours - 1))
            span = (ledger.hour_start(to_hour) - ledger.hour_start(from_hour)) / timedelta(hours=1) + 1
            if span < 1 or span > ledger.MAX_SPAN_HOURS:
                detail = f"from..to must be 1 to {ledger.MAX_SPAN_HOURS} hours, not {span:.0f}"
                raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, detail)
            fdb = settings.ferretdb_postgresql_url.get_secret_value() if settings.ferretdb_postgresql_url else None
            count = ledger.raw_store_counter(settings.mongodb_uri, settings.mongodb_database, settings.mongodb_collection, fdb)
            try:
                report = await ledger.reconcile(conn, count, settings.product_view_types, from_hour, to_hour, watermark)
            except Exception as exc:  # the raw store is not answering: say so, do not pretend agreement
                if type(exc).__module__.startswith(("pymongo", "bson")):
                    raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"raw store (MongoDB): {type(exc).__name__}: {exc}") from exc
                raise
        state.metrics.reconciliation_hours.set(len(report.disagreeing))
        return JSONResponse(report.as_dict())

    @app.get("/reconciliation/kafka")
    async def reconciliation_kafka(
        topic: Annotated[str | None, Query(description="only this remote topic")] = None,
    ) -> JSONResponse:
        """Per remote partition, the Kafka hops against each other: the bridge's copied records
        (its offsets topic) against the local records the sink counted (its ledger), and the
        documents the sink stored against MongoDB's documents of that partition (shared.hops).
        ``ok`` is false when a partition is ``over`` (counted downstream, never committed
        upstream) or ``missing`` (stored documents gone); ``in_flight`` is not a disagreement."""
        kafka = settings.local_kafka
        if kafka is None:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "local Kafka not configured: LOCAL_KAFKA_BOOTSTRAP_SERVERS is not set")
        fdb = settings.ferretdb_postgresql_url.get_secret_value() if settings.ferretdb_postgresql_url else None
        try:
            report = await hops.reconcile_kafka(
                kafka,
                settings.bridge_offsets_topic,
                settings.mongodb_uri,
                settings.mongodb_database,
                settings.mongodb_collection,
                fdb,
                topic,
            )
        except Exception as exc:  # a store not answering: say which, never pretend agreement
            if is_retriable(exc) or type(exc).__module__.startswith(("pymongo", "bson", "aiokafka")):
                raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"{type(exc).__name__}: {exc}") from exc
            raise
        return JSONResponse(report.as_dict())

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "service": "etl-api"}

    @app.get("/ready")
    async def ready() -> Response:
        if state.pool is None or not state.ddl_applied:
            return JSONResponse({"ready": False, "reason": state.not_ready_reason or "starting"}, status_code=503)
        try:
            async with state.pool.acquire(timeout=2) as conn:
                await conn.fetchval("SELECT 1")
        except POSTGRES_FAILURES as exc:
            return JSONResponse({"ready": False, "reason": f"postgres: {exc}"}, status_code=503)
        return JSONResponse({"ready": True})

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        launcher = state.launcher
        await state.metrics.refresh(state.pool if state.ddl_applied else None, len(launcher.children) if launcher else 0)
        return PlainTextResponse(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
