"""Wires the live service: faust counters + star-schema reader behind one FastAPI app.

HTTP (port ``LIVE_HTTP_PORT``, default 8104), besides ``/health``, ``/ready``, ``/metrics``, ``/lag``:

- ``GET /api/live?until=&minutes=`` views per minute and the top-N products over each span in
  ``top_spans_min``; windows end with the one holding ``until`` (ISO-8601, default now);
- ``GET /api/views/{products|stores}?start=&end=`` exact counts per window and id for windows
  starting in ``[start, end)``;
- ``GET /api/top?minutes=&until=&n=`` one top-N;
- ``GET /api/star/{range,top,views,runs}`` the star schema for a date range and filters (:mod:`live.star_api`);
- ``GET /api/star/freshness`` how fresh the star schema is, from the ETL API's ``GET /continuous``
  (:mod:`live.freshness`; ``LIVE_ETL_API_URL``);
- ``GET /`` the page (its live section refreshes from ``/api/live``, its star section from ``/partials/star``).

The faust app runs in this process and event loop; the routes read its in-memory tables
directly, so a number on the page is the table's value at the moment of the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse, Response
from prometheus_client import Gauge

from live.counting import WindowEntry, counts_by_window, iso, parse_iso, series, top_n, totals, window_start
from live.deadletters import DeadLetterPanel, DeadLetterReader, panel_html
from live.freshness import FreshnessReader, StarFreshness
from live.models import LiveSnapshot
from live.page import render_page, star_section_html
from live.settings import LiveSettings
from live.star import StarReader, StarUnavailable
from live.star_api import FromParam, LabelParam, RangeError, StarSection, ToParam, star_router, star_section
from live.streams import PRODUCT_TABLE, STORE_TABLE, LiveCounters, changelog_topics, prepare_topics
from live.view import ChangelogView
from shared.backoff import Backoff
from shared.errors import PipelineError
from shared.kafka import committed_positions, create_consumer, partition_lags, topic_partitions
from shared.service import ServiceState, create_http_app, run_service

log = logging.getLogger(__name__)

Clock = Callable[[], float]
# Module level: FastAPI resolves the (postponed) annotations of the routes in this namespace.
Until = Annotated[str | None, Query(description="ISO-8601; the last window is the one holding it (default now)")]
Minutes = Annotated[int | None, Query(ge=1, le=24 * 60)]


class LiveReader:
    """Read-side queries over the counters, against an injectable clock.

    Counts come from the replica's :class:`~live.view.ChangelogView` (every partition, whichever
    replica counted it); the per-process statistics from its own :class:`LiveCounters`.
    """

    def __init__(
        self, settings: LiveSettings, counters: LiveCounters | None = None, view: ChangelogView | None = None, clock: Clock = time.time
    ) -> None:
        self.settings, self._live_counters, self._view, self.clock = settings, counters, view, clock

    @property
    def counters(self) -> LiveCounters:
        if self._live_counters is None:
            raise HTTPException(503, "starting: Kafka topics not prepared yet")
        return self._live_counters

    @property
    def view(self) -> ChangelogView:
        if self._view is None:
            raise HTTPException(503, "starting: Kafka topics not prepared yet")
        return self._view

    def attach(self, counters: LiveCounters, view: ChangelogView) -> None:
        self._live_counters, self._view = counters, view

    async def sync(self) -> None:
        """Read-your-writes: waits until the view holds everything the changelogs held when called."""
        try:
            await self.view.sync()
        except TimeoutError as exc:
            raise HTTPException(503, "changelog view behind the changelog topics; try again") from exc
        except KafkaError as exc:
            raise HTTPException(503, f"Kafka unreachable: {type(exc).__name__}: {exc}") from exc

    def product_entries(self) -> Iterator[WindowEntry]:
        return self.view.entries(PRODUCT_TABLE)

    def store_entries(self) -> Iterator[WindowEntry]:
        return self.view.entries(STORE_TABLE)

    def _last_window(self, until: str | None) -> int:
        try:
            instant = parse_iso(until) if until else self.clock()
        except ValueError as exc:
            raise HTTPException(422, f"until: not an ISO-8601 time: {until!r}") from exc
        return window_start(instant, self.settings.window_s)

    def top(self, minutes: int, until: str | None, n: int | None = None) -> dict[str, Any]:
        w = self.settings.window_s
        last = self._last_window(until)
        start, end = last + w - minutes * 60, last + w
        counts = totals(counts_by_window(self.product_entries(), start, end))
        return {
            "span_minutes": minutes,
            "window_start": iso(start),
            "window_end": iso(end),
            "products": [{"product_id": pid, "views": views} for pid, views in top_n(counts, n or self.settings.top_n)],
        }

    def live(self, until: str | None, minutes: int | None) -> dict[str, Any]:
        w = self.settings.window_s
        last = self._last_window(until)
        span = (minutes or self.settings.series_minutes) * 60
        start, end = last + w - span, last + w
        # Totals per window come from the store table: one row per store, far fewer than products.
        by_window = counts_by_window(self.store_entries(), start, end)
        return {
            "until": iso(end),
            "window_s": w,
            "retention_s": self.settings.retention_s,
            "events_seen": self.counters.events_seen,
            "views_counted": self.counters.views_counted,
            "views_redelivered": self.counters.views_redelivered,
            "views_per_minute": [{"window_start": iso(ws), "views": views} for ws, views in series(by_window, start, end, w)],
            "views_per_hour": self.hours(end),
            "top": [self.top(span_min, until) for span_min in self.settings.top_spans_min],
        }

    def hours(self, end: int) -> list[dict[str, Any]]:
        """Views per whole UTC hour, from the hour holding ``end - retention`` (older windows are
        gone) to the hour holding the last window before ``end``."""
        first = window_start(end - self.settings.retention_s, 3600)
        hours = dict.fromkeys(range(first, end, 3600), 0)
        for ws, ids in counts_by_window(self.store_entries(), first, end).items():
            hours[window_start(ws, 3600)] += sum(ids.values())
        return [{"window_start": iso(h), "views": views} for h, views in sorted(hours.items())]

    def views(self, table: Literal["products", "stores"], start: str, end: str) -> dict[str, Any]:
        try:
            lo, hi = int(parse_iso(start)), int(parse_iso(end))
        except ValueError as exc:
            raise HTTPException(422, "start/end: ISO-8601 times") from exc
        entries = self.product_entries() if table == "products" else self.store_entries()
        by_window = counts_by_window(entries, lo, hi)
        return {
            "window_s": self.settings.window_s,
            "windows": [{"window_start": iso(ws), "counts": dict(sorted(by_window[ws].items()))} for ws in sorted(by_window)],
        }


def create_app(
    settings: LiveSettings,
    state: ServiceState,
    reader: LiveReader,
    star: StarReader | None = None,
    freshness: FreshnessReader | None = None,
    dead_letters: DeadLetterReader | None = None,
) -> FastAPI:
    """The HTTP app. ``star``: the process's one star-schema reader (its pool); a new one when None.
    ``freshness``: the ETL API's view of the star's freshness; from ``LIVE_ETL_API_URL`` when None."""
    app = create_http_app(state)
    app.title, app.description = "live: product views, live and from the star schema", __doc__ or ""
    if star is None:
        dsn = settings.postgres_dsn.get_secret_value() if settings.postgres_dsn else None
        star = StarReader(
            dsn,
            settings.pg_schema,
            timeout_s=settings.pg_timeout_s,
            pool_max=settings.pg_pool_max,
            application_name=settings.pg_application_name,
        )
    stars: StarReader = star
    app.state.star = stars
    fresh = freshness if freshness is not None else FreshnessReader(settings.etl_api_url)
    app.state.freshness = fresh
    app.include_router(star_router(stars, days=settings.star_days, runs_limit=settings.etl_runs_limit))
    letters = dead_letters if dead_letters is not None else DeadLetterReader(settings.local_kafka, settings.dlq_topic)

    @app.get(
        "/api/dead-letters",
        response_model=DeadLetterPanel,
        tags=["dead letters"],
        summary="Dead letters of the last 24 hours by stage and class",
    )
    async def api_dead_letters() -> DeadLetterPanel:
        return await letters.read()

    async def live_snapshot(until: str | None, minutes: int | None) -> LiveSnapshot:
        await reader.sync()
        snapshot = LiveSnapshot.model_validate(reader.live(until, minutes))
        ids = sorted({p.product_id for top in snapshot.top for p in top.products})
        try:
            names = await stars.product_names(ids)
        except StarUnavailable:
            names = {}  # the counts do not depend on PostgreSQL: shown without names
        for top in snapshot.top:
            for product in top.products:
                product.name = names.get(product.product_id)
        return snapshot

    async def section(date_from: str | None, date_to: str | None, country: str | None, device: str | None) -> StarSection:
        try:
            return await star_section(
                stars,
                days=settings.star_days,
                runs_limit=settings.etl_runs_limit,
                n=settings.star_top_n,
                date_from=date_from,
                date_to=date_to,
                country=country,
                device=device,
            )
        except RangeError as exc:
            raise HTTPException(422, str(exc)) from exc

    @app.get("/api/live", response_model=LiveSnapshot, tags=["live"], summary="Views per minute and per hour, top products")
    async def api_live(until: Until = None, minutes: Minutes = None) -> LiveSnapshot:
        return await live_snapshot(until, minutes)

    @app.get("/api/top", tags=["live"], summary="One live top-N over the last `minutes`")
    async def api_top(
        minutes: Annotated[int, Query(ge=1, le=24 * 60)] = 5, until: Until = None, n: Annotated[int, Query(ge=1, le=1000)] = 10
    ) -> dict[str, Any]:
        await reader.sync()
        return reader.top(minutes, until, n)

    @app.get("/api/views/{table}", tags=["live"], summary="Exact live counts per window and id")
    async def api_views(table: Literal["products", "stores"], start: str, end: str) -> dict[str, Any]:
        await reader.sync()
        return reader.views(table, start, end)

    @app.get(
        "/api/star/freshness",
        response_model=StarFreshness,
        tags=["star schema"],
        summary="How fresh the star schema is (the ETL API's continuous mode); never fails: says when the ETL API is unreachable",
    )
    async def api_star_freshness() -> StarFreshness:
        return await fresh.read()

    @app.get("/partials/star", response_class=HTMLResponse, include_in_schema=False)
    async def partial_star(
        date_from: FromParam = None, date_to: ToParam = None, country: LabelParam = None, device: LabelParam = None
    ) -> str:
        return star_section_html(await section(date_from, date_to, country, device))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(
        until: Until = None,
        minutes: Minutes = None,
        date_from: FromParam = None,
        date_to: ToParam = None,
        country: LabelParam = None,
        device: LabelParam = None,
    ) -> str:
        star_data, freshness_now, dead = await asyncio.gather(section(date_from, date_to, country, device), fresh.read(), letters.read())
        live: LiveSnapshot | str
        try:
            live = await live_snapshot(until, minutes)
        except HTTPException as exc:
            if exc.status_code != 503:
                raise
            live = f"live counters not available yet: {exc.detail}"  # the star half still helps; the timer retries
        return render_page(
            live,
            star_data,
            refresh_s=settings.refresh_s,
            star_refresh_s=settings.star_refresh_s,
            freshness=freshness_now,
            dead_letters=panel_html(dead),
        )

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(status_code=204)

    return app


async def consumer_lag(settings: LiveSettings) -> dict[str, Any]:
    """Committed offsets of the app's group against the source topic's last stable offsets
    (:mod:`shared.kafka`'s lag rule: a partition the group has not committed yet counts from its
    log start, where faust's consumer starts, ``consumer_auto_offset_reset="earliest"``)."""
    conn = settings.local_kafka
    admin = AIOKafkaAdminClient(**conn.client_kwargs())
    consumer = create_consumer(conn)
    await admin.start()
    try:
        await consumer.start()
        tps = await topic_partitions(consumer, settings.local_topic)
        lags = await partition_lags(consumer, await committed_positions(admin, settings.app_id, tps))
        lag = {p.tp.partition: p.lag for p in lags}
        return {"topic": settings.local_topic, "group": settings.app_id, "lag": sum(lag.values()), "partitions": lag}
    finally:
        await consumer.stop()
        await admin.close()


LAG_REFRESH_S = 15.0  # /lag builds two clients: a scrape refreshes the gauge at most this often


def lag_gauge_refresher(settings: LiveSettings, state: ServiceState) -> Callable[[], Any]:
    """``live_lag_records{partition}`` (the group's lag, as ``/lag``), refreshed before a scrape
    when older than ``LAG_REFRESH_S``; a failed refresh keeps the last values."""
    gauge = Gauge(
        "live_lag_records",
        "Source-topic records the counters' group has not committed, per partition",
        ["partition"],
        registry=state.registry,
    )
    refreshed = [-LAG_REFRESH_S]

    async def refresh() -> None:
        if time.monotonic() - refreshed[0] < LAG_REFRESH_S:
            return
        refreshed[0] = time.monotonic()
        body = await consumer_lag(settings)
        for partition, lag in body["partitions"].items():
            gauge.labels(str(partition)).set(lag)

    return refresh


async def run(settings: LiveSettings) -> None:
    """Runs counters and HTTP until SIGTERM/SIGINT; stopping faust commits its open transactions.

    HTTP is up from the start (``/ready`` says why not ready); the counters start once the topics
    exist, after bounded-backoff retries while Kafka is unreachable.
    """
    state = ServiceState("live")
    state.lag = lambda: consumer_lag(settings)
    state.on_scrape = lag_gauge_refresher(settings, state)
    reader = LiveReader(settings)
    app = create_app(settings, state, reader)
    star: StarReader = app.state.star

    async def worker(stop: asyncio.Event) -> None:
        partitions = await _prepare_with_retry(settings, state, stop)
        if partitions is None:
            return
        topics = dict(zip((PRODUCT_TABLE, STORE_TABLE), changelog_topics(settings), strict=True))
        view = ChangelogView(
            settings.local_kafka,
            topics,
            partitions,
            window_s=settings.window_s,
            retention_s=settings.retention_s,
            snapshot_path=snapshot_path(settings) if settings.recovery == "snapshot" else None,
            snapshot_every_s=settings.snapshot_interval_s,
            registry=state.registry,
        )
        seeded = settings.recovery != "replay"
        counters = LiveCounters(settings, partitions, registry=state.registry, seeder=view.seed if seeded else None)
        await view.start()
        try:
            if seeded:
                # faust seeds its tables from the view when partitions are assigned (live.recovery):
                # start it once the view holds the changelogs, so faust has no tail left to replay.
                while not view.caught_up and not stop.is_set():
                    view.raise_if_failed()
                    state.set_not_ready("reading the changelog topics")
                    with contextlib.suppress(TimeoutError, KafkaError):
                        await view.sync()
                if stop.is_set():
                    await view.stop()
                    return
            await counters.start()
        except BaseException:
            await view.stop()
            raise
        reader.attach(counters, view)
        try:
            while not stop.is_set():
                view.raise_if_failed()  # a dead reader would serve stale counts: crash, be restarted
                if not view.caught_up:
                    state.set_not_ready("reading the changelog topics")
                    with contextlib.suppress(TimeoutError, KafkaError):
                        await view.sync()
                elif counters.ready:
                    state.set_ready()
                else:
                    state.set_not_ready(counters.not_ready_reason())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=0.5)
        finally:
            state.set_not_ready("stopping")
            await counters.stop()
            await view.stop()

    try:
        await run_service(
            state, worker, host=settings.http_host, port=settings.http_port, shutdown_timeout=settings.shutdown_timeout_s, app=app
        )
    finally:
        await star.close()  # the process's one PostgreSQL pool


def snapshot_path(settings: LiveSettings) -> Path:
    """The changelog view's snapshot: one per app id in ``LIVE_DATA_DIR``."""
    return Path(settings.data_dir) / f"{settings.app_id}.view-snapshot.json"


async def _prepare_with_retry(settings: LiveSettings, state: ServiceState, stop: asyncio.Event) -> int | None:
    """The source partition count once the topics exist; None when stopped while waiting."""
    backoff = Backoff(initial=settings.backoff_initial_s, maximum=settings.backoff_max_s)
    while not stop.is_set():
        try:
            return await prepare_topics(settings)
        except PipelineError as exc:
            if not exc.retriable:
                raise
            state.set_not_ready(str(exc))
        except (OSError, KafkaError) as exc:
            state.set_not_ready(f"Kafka unreachable: {type(exc).__name__}: {exc}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=backoff.next_delay())
    return None
