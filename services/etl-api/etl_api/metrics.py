"""The ETL API's Prometheus metrics (docs/operations.md "Metrics").

On the service's own registry (:func:`shared.metrics.service_registry`: ``process_*`` and
``python_*`` too). Counters are named without ``_total`` here and exposed with it.

Freshness is read from PostgreSQL at every scrape (:meth:`EtlMetrics.refresh`), so it is right
after an API restart and whichever API instance ran the last job:

- ``etl_watermark_age_seconds``: PostgreSQL's ``now()`` minus ``etl_watermark.ingested_high`` (the
  ingest time up to which the star schema counts every event; moved by incremental and full
  runs). NaN while there is no watermark (no incremental/full run has succeeded yet).
- ``etl_last_success_timestamp_seconds``: ``finished_at`` of the newest succeeded run of any mode;
  0 while none has succeeded (``time() - …`` is then huge: a freshness alert fires).

Per finished run (observed by the API that watched the job process, or whose reaper marked it
failed): ``etl_run_duration_seconds{mode,outcome}`` (``finished_at`` minus ``started_at``, or minus
``requested_at`` for a run that never started) and ``etl_run_events_read{mode}`` (the run's
``reconciliation.events_read``; failed runs have none and are not observed there).
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

import asyncpg
from prometheus_client import Counter, Gauge, Histogram

from etl_api.schema import POSTGRES_FAILURES
from shared.metrics import ready_gauge, service_registry

log = logging.getLogger(__name__)

MODES = ("incremental", "full", "range")  # what POST /runs starts and this API watches; micro-batches are not observed here
OUTCOMES = ("succeeded", "failed")
REFRESH_TIMEOUT_S = 2.0

_FRESHNESS = """
SELECT extract(epoch FROM now() - (SELECT ingested_high FROM etl_watermark WHERE name = 'events'))::float8 AS watermark_age,
       extract(epoch FROM (SELECT max(finished_at) FROM etl_runs WHERE status = 'succeeded'))::float8 AS last_success
"""

_CONTINUOUS = """
SELECT desired, extract(epoch FROM now() - heartbeat_at)::float8 AS silent_s, state,
       extract(epoch FROM now() - greatest((SELECT ingested_high FROM etl_watermark WHERE name = 'events'), checked_high))::float8
           AS behind_s,
       (last_batches -> 0 ->> 'events_read')::float8 AS behind_events
FROM etl_continuous WHERE id = 1
"""

_FINISHED_RUN = """
SELECT mode, status,
       extract(epoch FROM finished_at - coalesce(started_at, requested_at))::float8 AS duration,
       (reconciliation ->> 'events_read')::float8 AS events_read
FROM etl_runs WHERE run_id = $1
"""


class EtlMetrics:
    def __init__(self, heartbeat_timeout_s: float = 60.0) -> None:
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.registry = registry = service_registry()
        self.started = Counter("etl_runs_started", "Runs accepted by POST /runs", ["mode"], registry=registry)
        self.finished = Counter("etl_runs_finished", "Runs that reached a final status", ["status"], registry=registry)
        self.rejected = Counter("etl_runs_rejected_active", "POST /runs refused because a run was active", registry=registry)
        self.ready = ready_gauge(registry)  # set at each scrape: DDL applied and PostgreSQL answering
        self.active = Gauge("etl_run_processes", "Job processes this API is waiting for", registry=registry)
        self.reconciliation_hours = Gauge(
            "etl_reconciliation_disagreeing_hours", "Hours late or missing in the last GET /reconciliation", registry=registry
        )
        self.watermark_age = Gauge(
            "etl_watermark_age_seconds", "Now minus the incremental watermark (ingested_high); NaN without one", registry=registry
        )
        self.last_success = Gauge(
            "etl_last_success_timestamp_seconds", "Unix time the newest succeeded run finished; 0 if none", registry=registry
        )
        self.run_duration = Histogram(
            "etl_run_duration_seconds",
            "From start (or request) to the final status of a run",
            ["mode", "outcome"],
            buckets=(5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200),
            registry=registry,
        )
        self.events_read = Histogram(
            "etl_run_events_read",
            "Events a succeeded run read from the raw store",
            ["mode"],
            buckets=(0, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000),
            registry=registry,
        )
        for mode in MODES:
            self.started.labels(mode)
            self.events_read.labels(mode)
            for outcome in OUTCOMES:
                self.run_duration.labels(mode, outcome)
        for outcome in OUTCOMES:
            self.finished.labels(outcome)
        self.watermark_age.set(math.nan)
        self.continuous_desired = Gauge(
            "etl_continuous_desired_processes", "1 while continuous mode is on (PUT /continuous)", registry=registry
        )
        self.continuous_running = Gauge(
            "etl_continuous_ready", "1 while a continuous worker heartbeats and runs micro-batches (or yields to a run)", registry=registry
        )
        self.behind_seconds = Gauge(
            "etl_star_behind_seconds",
            "now - the instant up to which the star schema counts every visible event",
            registry=registry,
        )
        self.behind_events = Gauge(
            "etl_star_behind_events",
            "Events the newest micro-batch found waiting (behind the star schema when it started)",
            registry=registry,
        )
        self.behind_seconds.set(math.nan)
        self.behind_events.set(math.nan)
        self._observing: set[asyncio.Task[None]] = set()

    async def refresh(self, pool: asyncpg.Pool | None, active_processes: int) -> None:
        """Freshness gauges from PostgreSQL (bounded; on failure the last values stay) and
        ``pipeline_service_ready``: 1 when ``pool`` (given once the DDL is applied) answers."""
        self.active.set(active_processes)
        self.ready.set(0)
        if pool is None:
            return
        try:
            async with pool.acquire(timeout=REFRESH_TIMEOUT_S) as conn:
                row = await conn.fetchrow(_FRESHNESS, timeout=REFRESH_TIMEOUT_S)
                worker = await conn.fetchrow(_CONTINUOUS, timeout=REFRESH_TIMEOUT_S)
        except POSTGRES_FAILURES as exc:
            log.debug("metrics refresh: %s: %s", type(exc).__name__, exc)
            return
        self.ready.set(1)
        self.watermark_age.set(math.nan if row["watermark_age"] is None else row["watermark_age"])
        self.last_success.set(row["last_success"] or 0.0)
        if worker is not None:
            self.continuous_desired.set(1 if worker["desired"] else 0)
            alive = worker["silent_s"] is not None and worker["silent_s"] < self.heartbeat_timeout_s
            # yielding to a one-off run is healthy: the worker resumes when the run ends
            self.continuous_running.set(1 if worker["desired"] and alive and worker["state"] in ("running", "yielding") else 0)
            self.behind_seconds.set(math.nan if worker["behind_s"] is None else worker["behind_s"])
            self.behind_events.set(math.nan if worker["behind_events"] is None else worker["behind_events"])

    def on_finished(self, pool: asyncpg.Pool) -> Any:
        """The :class:`etl_api.runs.RunLauncher` callback ``(run_id, status)``: counts the final
        status and observes the run's duration and events read from its ``etl_runs`` row."""

        def finished(run_id: str, status: str) -> None:
            self.finished.labels(status).inc()
            task = asyncio.get_running_loop().create_task(self._observe(pool, run_id))
            self._observing.add(task)
            task.add_done_callback(self._observing.discard)

        return finished

    async def _observe(self, pool: asyncpg.Pool, run_id: str) -> None:
        try:
            async with pool.acquire(timeout=10) as conn:
                row = await conn.fetchrow(_FINISHED_RUN, run_id)
        except POSTGRES_FAILURES as exc:
            log.warning("run %s: metrics not observed: %s: %s", run_id, type(exc).__name__, exc)
            return
        if row is None or row["status"] not in OUTCOMES or row["duration"] is None:
            return
        self.run_duration.labels(row["mode"], row["status"]).observe(max(0.0, row["duration"]))
        if row["status"] == "succeeded" and row["events_read"] is not None:
            self.events_read.labels(row["mode"]).observe(row["events_read"])
