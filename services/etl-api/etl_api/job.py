"""One ETL run in its own process: ``python -m etl_api.job --run-id <uuid>``.

The API inserts the run row (``queued``) and launches this process. The job claims the row with
an owner token of its own and heartbeats while it works (:mod:`etl_api.ownership`), plans the
run from what is visible now (:mod:`etl_api.visibility`, :mod:`etl_api.plan`), starts a Spark
session, runs one unit of work on it (:mod:`etl_api.unit`: extract, transform, and a load that
commits the star schema together with the ``succeeded`` row behind the ownership guard) and
stops the session. Any failure marks the run ``failed`` with its reason, in the same event loop;
if the process dies without doing either, the API's reaper marks it failed.

A one-off run is a micro-batch that happens once: the continuous worker (:mod:`etl_api.worker`)
runs the same unit on a warm session.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
from datetime import datetime

import asyncpg

from etl_api import ferretdb
from etl_api.ownership import Claim, RunNotClaimableError, RunOwner, claim_run, failure_message, mark_failed, new_owner_token, work_owned
from etl_api.plan import RunPlan, plan_run
from etl_api.reading import _rss_peak_mb
from etl_api.settings import EtlSettings
from etl_api.spark import session_for
from etl_api.unit import UnitContext, run_unit
from etl_api.visibility import VisibilityReader
from shared.logs import setup_logging

log = logging.getLogger("etl_api.job")


async def plan_claimed(
    conn: asyncpg.Connection, settings: EtlSettings, claim: Claim, high: datetime, *, heal: bool, fine_max_seconds: float = 0.0
) -> RunPlan:
    """The plan of a claimed run: the dates a range run covered past the watermark are read here."""
    watermark = claim.ownership.watermark
    covered = {}
    if claim.mode in ("incremental", "continuous") and watermark is not None:
        rows = await conn.fetch("SELECT event_date, ingested_high FROM etl_date_loads WHERE ingested_high > $1", watermark)
        covered = {r["event_date"]: r["ingested_high"] for r in rows}
    plan = plan_run(
        claim.mode,
        high=high,
        watermark=watermark,
        types=settings.product_view_types,
        read_parts=settings.read_parts,
        date_from=claim.date_from,
        date_to=claim.date_to,
        covered=covered,
        heal=heal,
        fine_max_seconds=fine_max_seconds,
    )
    await conn.execute("UPDATE etl_runs SET window_low = $2, window_high = $3 WHERE run_id = $1", claim.run_id, plan.low, plan.high)
    return plan


async def ensure_read_index(settings: EtlSettings, timings: dict[str, float]) -> None:
    """FerretDB only: the GIN index its equality reads need (:mod:`etl_api.ferretdb`)."""
    if settings.ferretdb_postgresql_url is None:
        return
    t0 = time.monotonic()
    index = await ferretdb.ensure_read_indexes(
        settings.ferretdb_postgresql_url.get_secret_value(), settings.mongodb_database, settings.mongodb_collection
    )
    timings["read_index_seconds"] = round(time.monotonic() - t0, 3)
    log.info("FerretDB read index %s", index)


class Job:
    """One run, claimed by this process (see the module)."""

    def __init__(self, settings: EtlSettings, run_id: str) -> None:
        self.settings = settings
        self.run_id = run_id
        self.owner = RunOwner(settings, run_id, new_owner_token())
        self.timings: dict[str, float] = {}

    @property
    def owner_token(self) -> str:
        return self.owner.owner_token

    async def run(self) -> None:
        conn = await self.owner.connect()
        try:
            claim = await claim_run(conn, self.run_id, self.owner_token)
            await work_owned(self.owner, lambda: self._run(conn, claim))
        finally:
            await conn.close()

    async def _run(self, conn: asyncpg.Connection, claim: Claim) -> None:
        s = self.settings
        t_start = time.monotonic()
        reader = VisibilityReader(s)
        try:
            visible = await reader.read()
        finally:
            await reader.close()
        plan = await plan_claimed(conn, s, claim, visible.high, heal=claim.mode == "incremental")
        await self.owner.enter_phase(conn, "extract")
        if plan.mode == "range" or (plan.merge and plan.low is not None):  # these read by {hour|date, part}
            await ensure_read_index(s, self.timings)
        spark = await asyncio.to_thread(session_for, s, f"etl-{self.run_id}")
        self.timings["spark_start_seconds"] = round(time.monotonic() - t_start, 3)
        ctx = UnitContext(
            settings=s,
            spark=spark,
            run_id=self.run_id,
            ownership=claim.ownership,
            enter_phase=lambda phase: self.owner.enter_phase(conn, phase),
            connect=self.owner.connect,
            timings=self.timings,
        )
        try:
            await run_unit(ctx, conn, plan)
        finally:
            jvm_pid = None
            with contextlib.suppress(Exception):
                jvm_pid = spark.sparkContext._gateway.proc.pid  # type: ignore[union-attr]
            self.timings["driver_python_peak_rss_mb"] = _rss_peak_mb() or 0.0
            if jvm_pid:
                self.timings["driver_jvm_peak_rss_mb"] = _rss_peak_mb(jvm_pid) or 0.0
            await asyncio.to_thread(spark.stop)


async def run_job(settings: EtlSettings, run_id: str) -> int:
    """The job's whole life in one event loop: 0 succeeded, 1 failed (recorded), 2 not claimable."""
    job = Job(settings, run_id)
    try:
        await job.run()
    except RunNotClaimableError as exc:
        log.error("%s", exc)
        return 2
    except BaseException as exc:
        log.error("run %s failed: %s", run_id, exc, exc_info=True)  # the traceback: a field in json, lines in text
        with contextlib.suppress(Exception):
            await mark_failed(settings, run_id, failure_message(exc), job.owner_token)
        if not isinstance(exc, Exception):
            raise
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m etl_api.job", description="Run one ETL run (the API launches this).")
    parser.add_argument("--run-id", required=True)
    args = parser.parse_args(argv)
    settings = EtlSettings()  # type: ignore[call-arg]
    setup_logging("etl-job", settings.log_level, settings.log_format, fields={"hop": "etl", "run_id": args.run_id})
    logging.getLogger("py4j").setLevel(logging.WARNING)
    return asyncio.run(run_job(settings, args.run_id))


if __name__ == "__main__":
    sys.exit(main())
