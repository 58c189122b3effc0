"""The continuous worker: ``python -m etl_api.worker --owner-token <token>`` (the API launches it).

A long-lived process with one warm Spark session that turns newly visible events into the star
schema in micro-batches, every ``ETL_CONTINUOUS_INTERVAL_S`` seconds (at once again after a
micro-batch that read ``ETL_CONTINUOUS_EAGER_EVENTS`` or more: catching up).

Each micro-batch:

1. reads the visibility bound (:mod:`etl_api.visibility`) and the watermark; nothing visible past
   the watermark → nothing to do;
2. probes the window's seconds (``{ingest_second, collection}``, the driver's cheap index reads):
   no document in the window → records that the star schema is fresh up to the bound
   (``etl_continuous.checked_high``) without a run;
3. otherwise inserts a run of mode ``continuous`` and claims it exactly as a one-off job does
   (:mod:`etl_api.ownership`): the one-active-run index serializes it with one-off runs (a
   one-off run in progress makes the worker wait: ``yielding``), the heartbeat and the load's
   guard are the same, so no event is counted twice or skipped whatever runs beside it;
4. plans it (:func:`etl_api.plan.plan_run`, read by ``ingest_second`` while the window is at most
   ``ETL_CONTINUOUS_FINE_MAX_S``; the heal check only when an ingest hour closed, and on the first
   micro-batch) and runs one unit (:mod:`etl_api.unit`), which releases its caches.

Outages and failures: the micro-batch's run is marked failed with its reason, the worker reports
``waiting`` with that reason and retries with bounded backoff (up to
``ETL_CONTINUOUS_BACKOFF_MAX_S``). The worker heartbeats its row (:mod:`etl_api.continuous`) and
stops when the row is no longer its own or no longer desired, or on SIGTERM (the micro-batch in
progress finishes or rolls back; exit 0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from etl_api import continuous, extract
from etl_api.job import ensure_read_index, plan_claimed
from etl_api.ownership import RunOwner, claim_run, connect, failure_message, heartbeat_budget, mark_failed, new_owner_token, work_owned
from etl_api.plan import hour_closed
from etl_api.reading import any_new_document
from etl_api.runs import RunActiveError, create_run, init_connection
from etl_api.schema import POSTGRES_FAILURES
from etl_api.settings import EtlSettings
from etl_api.spark import jvm_memory, session_for
from etl_api.unit import UnitContext, run_unit
from etl_api.visibility import VisibilityReader
from shared.backoff import Backoff
from shared.logs import setup_logging
from shared.memory import release_free_heap

log = logging.getLogger("etl_api.worker")

SECOND_INDEX_EXPRESSIONS = ("(_jsonb -> 'ingest_second')",)
MIN_PAUSE_S = 0.5  # between two micro-batches, even when catching up


class Worker:
    def __init__(self, settings: EtlSettings, owner_token: str) -> None:
        self.settings = settings
        self.token = owner_token
        self.host = socket.gethostname()
        self.state = "starting"
        self.reason: str | None = None
        self.stop = asyncio.Event()
        self.last_beat = time.monotonic()
        self.reader = VisibilityReader(settings)
        self.healed_once = False
        self.spark: Any = None
        # micro-batch runs that failed while PostgreSQL was away: marked failed as soon as it is
        # back, so the run slot is free at once instead of after the reaper's heartbeat timeout
        self.unmarked: list[tuple[str, str, str]] = []

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> int:
        s = self.settings
        conn = await connect(s)
        await init_connection(conn)
        try:
            if not await continuous.beat(conn, self.token, self.host, os.getpid(), "starting", None):
                log.error("the continuous row is not this worker's (token %s) or not desired: exiting", self.token)
                return 3
        finally:
            await conn.close()
        beat = asyncio.create_task(self._heartbeat(), name="worker-heartbeat")
        try:
            await self._prepare()
            await self._loop()
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await beat
            await self.reader.close()
            if self.spark is not None:
                await asyncio.to_thread(self.spark.stop)
            with contextlib.suppress(Exception):
                conn = await connect(s)
                try:
                    await continuous.release(conn, self.token, "stopped", self.reason)
                finally:
                    await conn.close()
        return 0

    async def _prepare(self) -> None:
        s = self.settings
        timings: dict[str, float] = {}
        backoff = Backoff(1.0, s.continuous_backoff_max_s)
        while not self.stop.is_set():
            try:
                await ensure_read_index(s, timings)
                if s.ferretdb_postgresql_url is not None:
                    from shared.ferretdb import ensure_collection_index

                    pg = await asyncpg.connect(s.ferretdb_postgresql_url.get_secret_value())
                    try:
                        await ensure_collection_index(pg, s.mongodb_database, s.mongodb_collection, "etl_second_", SECOND_INDEX_EXPRESSIONS)
                    finally:
                        await pg.close()
                break
            except POSTGRES_FAILURES as exc:
                self._waiting(f"ferretdb read index: {type(exc).__name__}: {exc}")
                await self._sleep(backoff.next_delay())
        t0 = time.monotonic()
        self.spark = await asyncio.to_thread(lambda: session_for(s, "etl-continuous", long_lived=True))
        log.info("warm Spark session in %.1fs; micro-batches every %.1fs", time.monotonic() - t0, s.continuous_interval_s)

    async def _loop(self) -> None:
        s = self.settings
        backoff = Backoff(1.0, s.continuous_backoff_max_s)
        self.state = "running"  # the session is warm: micro-batches from now on
        while not self.stop.is_set():
            started = time.monotonic()
            delay = s.continuous_interval_s
            if time.monotonic() - self.last_beat > heartbeat_budget(s):
                self._waiting("the worker's heartbeat could not be written: no micro-batch until it is")
                await self._sleep(1.0)
                continue
            try:
                summary = await self.micro_batch()
                self.state, self.reason = "running", None
                backoff.reset()
                if summary is not None and summary["events_read"] >= s.continuous_eager_events:
                    delay = MIN_PAUSE_S  # catching up; a refused one-off run asks for its turn (request_yield)
            except RunActiveError:
                self.state, self.reason = "yielding", "another run is queued or running"
            except Exception as exc:
                self._waiting(failure_message(exc)[:500])
                log.warning("micro-batch failed (%s); retrying", self.reason, exc_info=not isinstance(exc, OSError))
                delay = backoff.next_delay()
                if not self._spark_alive():
                    raise SystemExit("the Spark driver's JVM is gone: exiting so that a new worker starts with a new session") from exc
            # a catch-up's collected rows are freed by now: their pages go back to the kernel (shared.memory)
            await asyncio.to_thread(release_free_heap)
            await self._sleep(max(0.0, delay - (time.monotonic() - started)))

    def _spark_alive(self) -> bool:
        proc = getattr(getattr(getattr(self.spark, "sparkContext", None), "_gateway", None), "proc", None)
        return proc is None or proc.poll() is None

    async def _mark_unmarked(self) -> None:
        for item in list(self.unmarked):
            run_id, token, message = item
            await mark_failed(self.settings, run_id, message, token)
            self.unmarked.remove(item)

    def _waiting(self, reason: str) -> None:
        self.state, self.reason = "waiting", reason

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), timeout=seconds)

    async def _heartbeat(self) -> None:
        """Every ``heartbeat_seconds``. Stops the worker when the row is no longer its own or no
        longer desired, when the schema's tables are gone, and when no beat could be written for
        ``ETL_HEARTBEAT_TIMEOUT_SECONDS`` (by then a supervisor may have launched another worker)."""
        s = self.settings
        conn: asyncpg.Connection | None = None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = await asyncio.wait_for(connect(s), timeout=heartbeat_budget(s))
                mine = await asyncio.wait_for(
                    continuous.beat(conn, self.token, self.host, os.getpid(), self.state, self.reason), timeout=heartbeat_budget(s)
                )
                self.last_beat = time.monotonic()
                if not mine:
                    log.info("the continuous row is no longer this worker's or no longer desired: stopping")
                    self.stop.set()
                    return
            except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError) as exc:
                log.error("the schema's continuous row is gone (%s): stopping", exc)
                self.stop.set()
                return
            except POSTGRES_FAILURES as exc:
                log.warning("worker heartbeat failed: %s: %s", type(exc).__name__, exc)
                if time.monotonic() - self.last_beat > s.heartbeat_timeout_seconds:
                    log.error(
                        "no heartbeat written for %.0fs: stopping (a supervisor may have started another worker)",
                        s.heartbeat_timeout_seconds,
                    )
                    self.stop.set()
                    return
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close(timeout=1)
                    conn = None
            await self._sleep(s.heartbeat_seconds)
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close(timeout=1)

    # ------------------------------------------------------------------ one micro-batch

    async def micro_batch(self) -> dict[str, Any] | None:
        """One micro-batch (see the module); its summary, or None when there was nothing new."""
        s = self.settings
        conn = await connect(s)
        run_id: str | None = None
        owner: RunOwner | None = None
        try:
            await self._mark_unmarked()
            if await continuous.yield_pending(conn):
                raise RunActiveError("a one-off run was refused while a micro-batch ran: waiting for it")
            visible = await self.reader.read()
            marks = await conn.fetchrow(
                "SELECT (SELECT ingested_high FROM etl_watermark WHERE name = 'events') AS watermark, "
                "(SELECT checked_high FROM etl_continuous WHERE id = 1) AS checked"
            )
            watermark = marks["watermark"]
            if watermark is not None and visible.high <= watermark:
                return None
            # nothing was new up to `checked` (an earlier probe): probe only what came after it
            probed_from = max(watermark, marks["checked"]) if watermark is not None and marks["checked"] else watermark
            if probed_from is not None and (visible.high <= probed_from or not await self._anything_new(probed_from, visible.high)):
                await continuous.record_checked(conn, self.token, visible.high)
                return None
            t0 = time.monotonic()
            run_id = await create_run(conn, "continuous", None, None)
            owner = RunOwner(s, run_id, new_owner_token())
            claim = await claim_run(conn, run_id, owner.owner_token)
            heal = not self.healed_once or hour_closed(claim.ownership.watermark, visible.high)
            timings: dict[str, Any] = {"visibility": visible.as_dict()}
            unit_owner = owner

            async def work() -> dict[str, Any]:
                plan = await plan_claimed(conn, s, claim, visible.high, heal=heal, fine_max_seconds=s.continuous_fine_max_s)
                await unit_owner.enter_phase(conn, "extract")
                ctx = UnitContext(
                    settings=s,
                    spark=self.spark,
                    run_id=claim.run_id,
                    ownership=claim.ownership,
                    enter_phase=lambda phase: unit_owner.enter_phase(conn, phase),
                    connect=unit_owner.connect,
                    timings=timings,
                    # a worker's first check looks back ETL_HEAL_LOOKBACK_HOURS; at an hour's close, the last few hours
                    heal_hours=None if not self.healed_once else s.continuous_heal_hours,
                )
                if plan.fine:  # a few seconds of events: a few tasks per stage, not one per default shuffle partition
                    ctx.set_conf("spark.sql.shuffle.partitions", str(s.continuous_shuffle_partitions))
                await run_unit(ctx, conn, plan)
                row = await conn.fetchrow("SELECT reconciliation, timings FROM etl_runs WHERE run_id = $1", claim.run_id)
                rec = row["reconciliation"] if row else None
                rec = orjson.loads(rec) if isinstance(rec, str) else (rec or {})
                committed = row["timings"] if row else None
                timings.update(orjson.loads(committed) if isinstance(committed, str) else (committed or {}))
                return {
                    "run_id": claim.run_id,
                    "low": plan.low.isoformat() if plan.low else None,
                    "high": plan.high.isoformat(),
                    "fine": plan.fine,
                    "healed": heal,
                    "events_read": int((rec or {}).get("events_read", 0)),
                    "valid_views": int((rec or {}).get("valid_views", 0)),
                }

            summary = await work_owned(owner, work)
            self.healed_once = self.healed_once or heal
            summary["seconds"] = round(time.monotonic() - t0, 3)
            summary["finished_at"] = datetime.now(UTC).isoformat()
            for key in ("extract_seconds", "transform_seconds", "load_seconds"):
                if key in timings:
                    summary[key] = timings[key]
            summary["driver_python_rss_mb"] = _rss_mb()
            summary["driver_jvm"] = await asyncio.to_thread(jvm_memory, self.spark)
            await continuous.record_batch(conn, self.token, summary)
            await self._prune(conn)
            return summary
        except BaseException as exc:
            if run_id is not None and not isinstance(exc, RunActiveError):
                token = owner.owner_token if owner else ""
                try:
                    await mark_failed(s, run_id, failure_message(exc), token)
                except Exception:  # PostgreSQL away: marked at the next micro-batch
                    self.unmarked.append((run_id, token, failure_message(exc)))
            raise
        finally:
            await conn.close()

    async def _anything_new(self, low: datetime, high: datetime) -> bool:
        """Whether a document is in (low, high]: the window's second buckets probed in the driver.
        A window too long to probe second by second is assumed to hold something."""
        s = self.settings
        if (high - low).total_seconds() > s.continuous_fine_max_s:
            return True
        tasks = extract.plan_second_tasks(low, high, s.product_view_types)
        return await asyncio.to_thread(any_new_document, s, tasks)

    async def _prune(self, conn: asyncpg.Connection) -> None:
        """Micro-batch rows finished more than ``ETL_CONTINUOUS_RETAIN_HOURS`` ago are deleted (a
        handful at a time, so the table stays the size of the retention)."""
        await conn.execute(
            """DELETE FROM etl_runs WHERE run_id IN (
                   SELECT run_id FROM etl_runs WHERE mode = 'continuous' AND status IN ('succeeded', 'failed')
                     AND finished_at < now() - make_interval(secs => $1) ORDER BY finished_at LIMIT 100)""",
            self.settings.continuous_retain_hours * 3600,
        )


def _rss_mb() -> float | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


async def run_worker(settings: EtlSettings, token: str) -> int:
    worker = Worker(settings, token)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop.set)
    return await worker.run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m etl_api.worker", description="The continuous ETL worker (the API launches it).")
    parser.add_argument("--owner-token", required=True)
    args = parser.parse_args(argv)
    settings = EtlSettings()  # type: ignore[call-arg]
    setup_logging("etl-worker", settings.log_level, settings.log_format, fields={"hop": "etl", "worker": args.owner_token})
    logging.getLogger("py4j").setLevel(logging.WARNING)
    return asyncio.run(run_worker(settings, args.owner_token))


if __name__ == "__main__":
    sys.exit(main())
