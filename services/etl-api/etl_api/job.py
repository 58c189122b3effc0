"""One ETL run in its own process: ``python -m etl_api.job --run-id <uuid>``.

The API inserts the run row (``queued``) and launches this process; the job claims the row
(``running``) with an **owner token** of its own (``<host>:<pid>:<random hex>``), heartbeats while
it works, and either commits the star schema together with the ``succeeded`` row (one
transaction, see :mod:`etl_api.load`) or marks the run ``failed`` with the error. If the process
dies without doing either, the API's reaper marks it failed.

Ownership: a run commits only while it still owns its window. Every heartbeat and phase change
writes the row only where it is still ``running`` with this process's token; a heartbeat that
finds the row reaped or taken ends the job at once (``lost ownership: …``), and one that cannot be
written for ``ETL_HEARTBEAT_TIMEOUT_SECONDS / 2`` (PostgreSQL unreachable: the reaper may be
about to mark the run failed) ends it too (``heartbeat could not be written …``): the run work is
cancelled (an open load transaction rolls back). The load's own guard
(:func:`etl_api.load.check_ownership`) is the last word: under row locks it refuses to commit
unless the run is still owned and the watermark and load generation are those read at the claim.

Windows (all instants are the sink's ``ingested_at``, UTC):

- ``high`` = start of the run − ``ETL_SETTLE_SECONDS``. The sink stamps a batch *before* MongoDB
  acknowledges it, so a batch stamped at t may become visible a little after t; reading only up to
  now − settle margin means such a late-committed batch is still in the *next* run's window
  (settle > the sink's longest write attempt, SINK_WRITE_ATTEMPT_TIMEOUT_S, plus clock skew;
  120 s by default: the sink restamps ``ingested_at`` on each attempt).
- per date, ``etl_date_loads.ingested_high`` records the ``ingested_at`` up to which that date's
  facts count its events: every run sets it to its ``high`` for the dates it wrote.
- incremental: reads **only** the new events, ``watermark < ingested_at ≤ high``, and of those
  only the ones ingested after their date's ``ingested_high`` too (a range run may have counted
  them already: it does not move the watermark); their dates are the touched dates. Their
  aggregates are **merged** into the touched dates' existing facts inside PostgreSQL
  (:mod:`etl_api.load`), exactly — every stored aggregate is mergeable — so the result is the
  one a rebuild from all events would give. A touched date with fact rows written before
  ``view_time_sum_ms`` existed cannot be merged exactly: it is recomputed from all its events
  ≤ high instead (``reconciliation.recomputed_dates``). Without a watermark (first run) it reads
  everything ≤ high and rebuilds all facts.
- full: every event ≤ high; every fact replaced; watermark := high.
- range: every event of the given dates ≤ high; those dates' facts replaced; watermark unchanged.
  Its high is never below the watermark (only if ``ETL_SETTLE_SECONDS`` grew between runs
  could it be), so a range run never drops events the watermark says are counted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.storagelevel import StorageLevel

from etl_api import extract, ferretdb, ledger, transform
from etl_api.load import (
    DIMENSIONS,
    FACT_STAGE_COLUMNS,
    LoadInput,
    Ownership,
    OwnershipLostError,
    load_star,
    read_ownership,
    stage_columns,
)
from etl_api.owned_run import HeartbeatError, OwnedRun, RunNotClaimableError, new_owner_token
from etl_api.reading import (
    _chunks,
    _rss_peak_mb,
    count_by_date,
    estimated_documents,
    read_events,
    read_partitions,
    shuffle_partitions,
    unmergeable_dates,
)
from etl_api.schema import quote_ident
from etl_api.settings import EtlSettings
from etl_api.spark import build_spark_session
from shared.logs import setup_logging

log = logging.getLogger("etl_api.job")


class Job(OwnedRun):
    def __init__(self, settings: EtlSettings, run_id: str) -> None:
        self.settings = settings
        self.run_id = run_id
        self.phase = "starting"
        self.timings: dict[str, Any] = {}
        self.owner_token = new_owner_token()
        self.ownership: Ownership | None = None

    async def run(self) -> None:
        conn = await self._connect()
        try:
            row = await conn.fetchrow(
                """UPDATE etl_runs SET status = 'running', phase = 'starting', started_at = now(), heartbeat_at = now(),
                          pid = $2, host = $3, owner_token = $4
                   WHERE run_id = $1 AND status = 'queued' RETURNING mode, date_from, date_to""",
                self.run_id,
                os.getpid(),
                socket.gethostname(),
                self.owner_token,
            )
            if row is None:
                raise RunNotClaimableError(f"run {self.run_id} is not queued")
            self.ownership = await read_ownership(conn, self.owner_token)
            log.info("run %s claimed by %s (%s)", self.run_id, self.owner_token, self.ownership)
            beat = asyncio.create_task(self._heartbeat(), name="heartbeat")
            work = asyncio.create_task(self._run(conn, row["mode"], row["date_from"], row["date_to"]), name="run")
            try:
                await asyncio.wait({beat, work}, return_when=asyncio.FIRST_COMPLETED)
                if not work.done() and beat.exception() is not None:  # lost ownership / no heartbeat: stop the work
                    log.error("run %s: %s", self.run_id, beat.exception())
                    work.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await work  # its finally blocks run: an open load transaction rolls back, Spark stops
                    beat.result()
                await work
            finally:
                for task in (beat, work):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
        finally:
            await conn.close()

    async def _run(self, conn: asyncpg.Connection, mode: str, date_from: date | None, date_to: date | None) -> None:
        s = self.settings
        t_start = time.monotonic()
        high = datetime.now(UTC) - timedelta(seconds=s.settle_seconds)
        low: datetime | None = None
        assert self.ownership is not None
        watermark = self.ownership.watermark  # read with the claim; the load refuses to commit if it moved
        if mode == "incremental":
            low = watermark
        elif mode == "range" and watermark is not None and watermark > high:
            high = watermark  # a range run must cover at least what the watermark says is counted
        await conn.execute("UPDATE etl_runs SET window_low = $2, window_high = $3 WHERE run_id = $1", self.run_id, low, high)

        await self._enter_phase(conn, "extract")
        spark = await asyncio.to_thread(
            build_spark_session,
            s.spark_master,
            f"etl-{self.run_id}",
            shuffle_partitions=s.spark_shuffle_partitions,
            driver_memory=s.spark_driver_memory,
            python=s.spark_python,
            conf=s.spark_conf,
        )
        self.timings["spark_start_seconds"] = round(time.monotonic() - t_start, 3)
        try:
            await self._run_spark(conn, spark, mode, low, high, date_from, date_to)
        finally:
            jvm_pid = None
            with contextlib.suppress(Exception):
                jvm_pid = spark.sparkContext._gateway.proc.pid  # type: ignore[union-attr]
            self.timings["driver_python_peak_rss_mb"] = _rss_peak_mb()
            if jvm_pid:
                self.timings["driver_jvm_peak_rss_mb"] = _rss_peak_mb(jvm_pid)
            await asyncio.to_thread(spark.stop)

    async def _run_spark(
        self,
        conn: asyncpg.Connection,
        spark: SparkSession,
        mode: str,
        low: datetime | None,
        high: datetime,
        date_from: date | None,
        date_to: date | None,
    ) -> None:
        s = self.settings
        types = s.product_view_types
        t0 = time.monotonic()
        if s.ferretdb_postgresql_url is not None and (mode == "range" or (mode == "incremental" and low is not None)):
            # these modes read by {ingest_hour|event_date, part}: make FerretDB able to use an index
            index = await ferretdb.ensure_read_indexes(
                s.ferretdb_postgresql_url.get_secret_value(), s.mongodb_database, s.mongodb_collection
            )
            self.timings["read_index_seconds"] = round(time.monotonic() - t0, 3)
            log.info("run %s: FerretDB read index %s", self.run_id, index)
        new_events: int
        replace_all = False
        merge = False
        heal: list[date] = []
        if mode == "range":
            assert date_from is not None and date_to is not None
            touched = [date_from + timedelta(days=i) for i in range((date_to - date_from).days + 1)]
            tasks = extract.plan_date_tasks(touched, high, types, s.read_parts)
            new_events = 0
        elif mode == "full" or low is None:
            tasks = extract.plan_all_tasks(high, types, s.read_parts)
            replace_all = True
            touched = []  # every date read (below)
            new_events = -1
        else:
            # only the new events, minus those a range run already counted (its dates' ingested_high)
            covered = {
                r["event_date"]: r["ingested_high"]
                for r in await conn.fetch("SELECT event_date, ingested_high FROM etl_date_loads WHERE ingested_high > $1", low)
            }
            tasks = extract.plan_window_tasks(low, high, types, s.read_parts, covered)
            merge = True
            new_events = -1
            heal = await self._late_dates(conn, low)
        partitions = 0
        if replace_all:  # a full read: bound the rows per partition, whatever the collection's size
            partitions = read_partitions(await asyncio.to_thread(estimated_documents, s), s.read_partition_rows)
            self.timings["read_partitions"] = max(partitions, len(tasks))
            # the aggregates' shuffles too: adaptive execution merges small partitions but never
            # splits one, and the load fetches the facts into the driver a partition at a time
            self.timings["shuffle_partitions"] = shuffle_partitions(s.spark_shuffle_partitions, partitions)
            spark.conf.set("spark.sql.shuffle.partitions", str(self.timings["shuffle_partitions"]))
        raw = read_events(spark, s, tasks, partitions)
        events = transform.clean_events(raw).persist(StorageLevel.MEMORY_AND_DISK)
        implausible = transform.implausible_event_time(s.event_time_floor_ms, int(s.event_time_max_ahead_s * 1000))
        events_read, dates_read = await asyncio.to_thread(count_by_date, events, implausible)  # one pass, fills the cache
        if new_events < 0:
            new_events = events_read
        if replace_all or merge:
            touched = sorted(set(dates_read) | set(heal))
        merge_dates: list[date] = []
        recomputed: list[date] = []
        if merge and touched:
            # legacy rows (no view_time_sum_ms) and late documents' dates: read all their events, replace
            recomputed = sorted(set(await unmergeable_dates(conn, touched)) | set(heal))
            merge_dates = [d for d in touched if d not in set(recomputed)]
            if recomputed:
                log.info("run %s: %d touched dates recomputed from all their events (healed: %s)", self.run_id, len(recomputed), heal)
                whole = transform.clean_events(read_events(spark, s, extract.plan_date_tasks(recomputed, high, types, s.read_parts)))
                mixed = events.where(~F.col("event_date").isin(recomputed)).unionByName(whole).persist(StorageLevel.MEMORY_AND_DISK)
                events_read, _ = await asyncio.to_thread(count_by_date, mixed)
                events.unpersist()
                events = mixed
        self.timings["extract_seconds"] = round(time.monotonic() - t0, 3)
        log.info("run %s: %s mode, %d new events, %d events read for %d dates", self.run_id, mode, new_events, events_read, len(touched))

        await self._enter_phase(conn, "transform")
        t1 = time.monotonic()
        classified = transform.classify_events(
            transform.enrich_events(events, s.internal_domains),
            types,
            s.exclude_bots,
            time_floor_ms=s.event_time_floor_ms,
            max_ahead_ms=int(s.event_time_max_ahead_s * 1000),
        )
        classified = classified.persist(StorageLevel.MEMORY_AND_DISK)
        skips = await asyncio.to_thread(lambda: {r["skip_reason"]: r["n"] for r in transform.skip_counts(classified).collect()})
        valid = int(skips.pop(None, 0))
        ledger_rows = await asyncio.to_thread(
            lambda: [
                (r[transform.LEDGER_HOUR], r[transform.LEDGER_DATE], int(r["events"]), int(r["valid"]))
                for r in transform.ledger_counts(classified).collect()
            ]
        )
        if sum(r[3] for r in ledger_rows) != valid or sum(r[2] for r in ledger_rows) != valid + sum(skips.values()):
            raise ledger.LedgerMismatchError(f"hour ledger rows {ledger_rows[:5]}… do not add up to {valid} valid, {skips} skipped")
        views = transform.valid_views(classified)
        dim_frames = {
            "dim_product": transform.build_dim_product(views),
            "dim_country": transform.build_dim_country(views),
            "dim_referrer": transform.build_dim_referrer(views),
            "dim_device": transform.build_dim_device(views),
        }
        facts = transform.build_facts(views)
        self.timings["transform_seconds"] = round(time.monotonic() - t1, 3)  # lazy parts run while loading

        await self._enter_phase(conn, "load")
        reconciliation: dict[str, Any] = {
            "events_new": new_events,
            "events_read": events_read,
            "valid_views": valid,
            "skipped": dict(sorted(skips.items())),
            "skipped_total": sum(skips.values()),
            "recomputed_dates": [d.isoformat() for d in recomputed],
            "healed_dates": [d.isoformat() for d in heal],
        }
        spec_cols = {d.table: stage_columns(d) for d in DIMENSIONS}
        fact_cols = [c for c, _ in FACT_STAGE_COLUMNS]
        size = s.load_batch_rows

        def rows_of(df: DataFrame, cols: list[str]) -> Iterator[Any]:
            return df.select(*cols).toLocalIterator(prefetchPartitions=True)

        assert self.ownership is not None
        data = LoadInput(
            run_id=self.run_id,
            mode=mode,
            ownership=self.ownership,
            replace_all_facts=replace_all,
            touched_dates=touched,
            dims={t: _chunks(rows_of(df, spec_cols[t]), size, tuple) for t, df in dim_frames.items()},
            facts=_chunks(rows_of(facts, fact_cols), size, tuple),
            valid_views=valid,
            watermark=None if mode == "range" else high,
            ingested_high=high,
            merge_dates=merge_dates,
            run_fields={"timings": self.timings, "reconciliation": reconciliation},
            fault_pause_seconds=s.fault_pause_in_load_seconds,
            ledger=ledger.LedgerWrite(
                rows=ledger_rows,
                replace_all=replace_all,
                replace_dates=[d.isoformat() for d in (touched if mode == "range" else recomputed)],
                covers_from=None if replace_all else (high if mode == "range" else low),
            ),
        )
        self.timings["total_seconds_before_load"] = round(time.monotonic() - t0, 3)
        self.timings["driver_python_peak_rss_mb"] = _rss_peak_mb()
        with contextlib.suppress(Exception):
            self.timings["driver_jvm_peak_rss_mb"] = _rss_peak_mb(spark.sparkContext._gateway.proc.pid)  # type: ignore[union-attr]
        load_conn = await self._connect()
        try:
            counts = await load_star(load_conn, s.pg_schema, data)
        finally:
            await load_conn.close()
        log.info("run %s succeeded: %s", self.run_id, counts)

    async def _late_dates(self, conn: asyncpg.Connection, watermark: datetime) -> list[date]:
        """Healing: the event dates of documents ingested in the last ``heal_lookback_hours`` up to
        the watermark that no run has counted (visible only after their hour was read); the run
        recomputes them. Empty when healing is off or every hour agrees."""
        s = self.settings
        if s.heal_lookback_hours <= 0:
            return []
        t0 = time.monotonic()
        first = ledger.hour_of(watermark - timedelta(hours=s.heal_lookback_hours))
        fdb = s.ferretdb_postgresql_url.get_secret_value() if s.ferretdb_postgresql_url else None
        count = ledger.raw_store_counter(s.mongodb_uri, s.mongodb_database, s.mongodb_collection, fdb)
        report = await ledger.reconcile(conn, count, s.product_view_types, first, ledger.hour_of(watermark), watermark)
        self.timings["heal_check_seconds"] = round(time.monotonic() - t0, 3)
        late = [h for h in report.hours if h.status == ledger.LATE]
        missing = [h.ingest_hour for h in report.hours if h.status == ledger.MISSING]
        if missing:
            log.warning("run %s: counted documents are gone from the raw store in hours %s (not healed)", self.run_id, missing)
        if late:
            log.warning("run %s: late-visible documents in hours %s: healing", self.run_id, [h.as_dict() for h in late])
        return ledger.late_dates(late)


async def mark_failed(settings: EtlSettings, run_id: str, error: str, owner_token: str | None = None) -> None:
    """The run ends ``failed`` with ``error``. A run that was already marked failed (reaped) by
    someone else while this process still owned it gets ``error`` in front of the earlier one,
    so it says why this process stopped too (e.g. its refused commit)."""
    conn = await asyncpg.connect(settings.postgres_dsn.get_secret_value())
    try:
        await conn.execute(
            f"""UPDATE {quote_ident(settings.pg_schema)}.etl_runs
                SET error = left(CASE WHEN status = 'failed' AND coalesce(error, '') <> '' THEN $2 || E'\nearlier: ' || error
                                      ELSE $2 END, 8000),
                    status = 'failed', phase = NULL, finished_at = coalesce(finished_at, now())
                WHERE run_id = $1 AND (status IN ('queued', 'running') OR (status = 'failed' AND owner_token = $3))""",
            run_id,
            error[:4000],
            owner_token,
        )
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m etl_api.job", description="Run one ETL run (the API launches this).")
    parser.add_argument("--run-id", required=True)
    args = parser.parse_args(argv)
    settings = EtlSettings()  # type: ignore[call-arg]
    setup_logging("etl-job", settings.log_level, settings.log_format, fields={"hop": "etl", "run_id": args.run_id})
    logging.getLogger("py4j").setLevel(logging.WARNING)
    job = Job(settings, args.run_id)
    try:
        asyncio.run(job.run())
    except RunNotClaimableError as exc:
        log.error("%s", exc)
        return 2
    except BaseException as exc:
        log.error("run %s failed: %s", args.run_id, exc, exc_info=True)  # the traceback: a field in json, lines in text
        # lost ownership / heartbeat: the message says it all; anything else: the exception's type too
        error = str(exc) if isinstance(exc, OwnershipLostError | HeartbeatError) else f"{type(exc).__name__}: {exc}"
        with contextlib.suppress(Exception):
            asyncio.run(mark_failed(settings, args.run_id, error, job.owner_token))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
