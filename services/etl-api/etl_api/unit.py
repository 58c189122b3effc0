"""One owned unit of work: a planned run (:mod:`etl_api.plan`) extracted, transformed and loaded
on a Spark session the caller owns. A one-off job runs one unit on a session it starts and
stops; the continuous worker runs one unit per micro-batch on its warm session.

Steps, each timed in ``UnitContext.timings``:

1. **extract**: the planned read tasks into a cached DataFrame; the heal check's dates (when the
   plan asks for it) and the dates whose facts cannot be merged exactly are re-read whole;
2. **transform**: clean, enrich, classify; the skip counts and the hour ledger's rows; the
   dimension and fact frames **computed and cached before the load** (the load transaction holds
   the per-schema lock: no Spark work may run inside it);
3. **load**: :func:`etl_api.load.load_star`, one transaction behind the ownership guard.

Whatever happens, every DataFrame the unit cached is released and a session setting it changed
is restored (:meth:`UnitContext.release`): a warm session runs unit after unit with flat memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, cast

import asyncpg
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.storagelevel import StorageLevel

from etl_api import extract, ledger, transform
from etl_api.load import DIMENSIONS, FACT_STAGE_COLUMNS, LoadInput, load_star, stage_columns
from etl_api.ownership import Ownership
from etl_api.plan import RunPlan
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
from etl_api.settings import EtlSettings

log = logging.getLogger("etl_api.job")

PhaseHook = Callable[[str], Awaitable[None]]
# a fine micro-batch of at most this many events holds its dimension and fact rows in the driver
# (tens of MB) instead of caching them in Spark and streaming them back: five Spark jobs fewer
COLLECT_MAX_EVENTS = 200_000


@dataclass
class UnitContext:
    """Everything one unit needs and records: per unit, never shared between two."""

    settings: EtlSettings
    spark: SparkSession
    run_id: str
    ownership: Ownership
    enter_phase: PhaseHook
    connect: Callable[[], Awaitable[asyncpg.Connection]]
    timings: dict[str, Any] = field(default_factory=dict)
    heal_hours: float | None = None  # the heal check's lookback (None: ETL_HEAL_LOOKBACK_HOURS)
    cached: list[DataFrame] = field(default_factory=list)
    restore_conf: dict[str, str] = field(default_factory=dict)

    def cache(self, df: DataFrame) -> DataFrame:
        out = df.persist(StorageLevel.MEMORY_AND_DISK)
        self.cached.append(out)
        return out

    def set_conf(self, key: str, value: str) -> None:
        if key not in self.restore_conf:
            self.restore_conf[key] = str(self.spark.conf.get(key))
        self.spark.conf.set(key, value)

    def release(self) -> None:
        for df in self.cached:
            with contextlib.suppress(Exception):
                df.unpersist()
        self.cached.clear()
        for key, value in self.restore_conf.items():
            with contextlib.suppress(Exception):
                self.spark.conf.set(key, value)
        self.restore_conf.clear()


@dataclass
class Extracted:
    events: DataFrame
    new_events: int
    events_read: int
    touched: list[date]
    merge_dates: list[date]
    recomputed: list[date]
    heal: list[date]


Rows = DataFrame | list[Any]  # a cached frame, or its rows collected in the driver


@dataclass
class Transformed:
    dims: dict[str, Rows]
    facts: Rows
    valid: int
    skips: dict[str, int]
    ledger_rows: list[tuple[Any, ...]]


async def run_unit(ctx: UnitContext, conn: asyncpg.Connection, plan: RunPlan) -> dict[str, dict[str, int]]:
    """Extract, transform and load ``plan`` (see the module); returns the load's counts per table."""
    try:
        t0 = time.monotonic()
        got = await extract_unit(ctx, conn, plan)
        ctx.timings["extract_seconds"] = round(time.monotonic() - t0, 3)
        log.info(
            "run %s: %s mode, %d new events, %d events read for %d dates",
            ctx.run_id,
            plan.mode,
            got.new_events,
            got.events_read,
            len(got.touched),
        )
        await ctx.enter_phase("transform")
        t1 = time.monotonic()
        done = await transform_unit(ctx, got.events, collect=plan.fine and got.events_read <= COLLECT_MAX_EVENTS)
        ctx.timings["transform_seconds"] = round(time.monotonic() - t1, 3)
        await ctx.enter_phase("load")
        ctx.timings["total_seconds_before_load"] = round(time.monotonic() - t0, 3)
        return await load_unit(ctx, plan, got, done)
    finally:
        ctx.release()


async def _heal_dates(ctx: UnitContext, conn: asyncpg.Connection, watermark: datetime) -> list[date]:
    """The event dates of documents ingested in the last ``heal_hours`` up to the watermark
    that no run has counted (visible only after their hour was read): recomputed whole."""
    s = ctx.settings
    hours = s.heal_lookback_hours if ctx.heal_hours is None else min(ctx.heal_hours, s.heal_lookback_hours)
    if hours <= 0:
        return []
    t0 = time.monotonic()
    first = ledger.hour_of(watermark - timedelta(hours=hours))
    fdb = s.ferretdb_postgresql_url.get_secret_value() if s.ferretdb_postgresql_url else None
    count = ledger.raw_store_counter(s.mongodb_uri, s.mongodb_database, s.mongodb_collection, fdb)
    report = await ledger.reconcile(conn, count, s.product_view_types, first, ledger.hour_of(watermark), watermark)
    ctx.timings["heal_check_seconds"] = round(time.monotonic() - t0, 3)
    late = [h for h in report.hours if h.status == ledger.LATE]
    missing = [h.ingest_hour for h in report.hours if h.status == ledger.MISSING]
    if missing:
        log.warning("run %s: counted documents are gone from the raw store in hours %s (not healed)", ctx.run_id, missing)
    if late:
        log.warning("run %s: late-visible documents in hours %s: healing", ctx.run_id, [h.as_dict() for h in late])
    return ledger.late_dates(late)


async def extract_unit(ctx: UnitContext, conn: asyncpg.Connection, plan: RunPlan) -> Extracted:
    s, spark, types = ctx.settings, ctx.spark, ctx.settings.product_view_types
    heal = await _heal_dates(ctx, conn, plan.low) if plan.heal_check and plan.low is not None else []
    partitions = 0
    if plan.replace_all:  # a full read: bound the rows per partition, whatever the collection's size
        partitions = read_partitions(await asyncio.to_thread(estimated_documents, s), s.read_partition_rows)
        ctx.timings["read_partitions"] = max(partitions, len(plan.tasks))
        # the aggregates' shuffles too: adaptive execution merges small partitions but never
        # splits one, and the load fetches the facts into the driver a partition at a time
        ctx.timings["shuffle_partitions"] = shuffle_partitions(s.spark_shuffle_partitions, partitions)
        ctx.set_conf("spark.sql.shuffle.partitions", str(ctx.timings["shuffle_partitions"]))
    events = ctx.cache(transform.clean_events(read_events(spark, s, plan.tasks, partitions)))
    implausible = transform.implausible_event_time(s.event_time_floor_ms, int(s.event_time_max_ahead_s * 1000))
    events_read, dates_read = await asyncio.to_thread(count_by_date, events, implausible)  # one pass, fills the cache
    new_events = 0 if plan.mode == "range" else events_read
    touched = list(plan.range_dates) if plan.range_dates else sorted(set(dates_read) | set(heal))
    merge_dates: list[date] = []
    recomputed: list[date] = []
    if plan.merge and touched:
        # legacy rows (no view_time_sum_ms) and late documents' dates: read all their events, replace
        recomputed = sorted(set(await unmergeable_dates(conn, touched)) | set(heal))
        merge_dates = [d for d in touched if d not in set(recomputed)]
        if recomputed:
            log.info("run %s: %d touched dates recomputed from all their events (healed: %s)", ctx.run_id, len(recomputed), heal)
            whole = transform.clean_events(read_events(spark, s, extract.plan_date_tasks(recomputed, plan.high, types, s.read_parts)))
            mixed = ctx.cache(events.where(~F.col("event_date").isin(recomputed)).unionByName(whole))
            events_read, _ = await asyncio.to_thread(count_by_date, mixed)
            events = mixed
    return Extracted(events, new_events, events_read, touched, merge_dates, recomputed, heal)


async def transform_unit(ctx: UnitContext, events: DataFrame, collect: bool = False) -> Transformed:
    """Classify, count and build the dimension and fact frames, all computed here, outside the
    load transaction that holds the per-schema lock. The counts and the five frames are Spark
    jobs submitted together (Spark runs concurrent jobs of one session side by side: a small
    micro-batch's jobs are mostly scheduling and shuffle latency). ``collect``: the frames are
    small enough to hold in the driver (a fine micro-batch): collected, not cached."""
    s = ctx.settings
    classified = ctx.cache(
        transform.classify_events(
            transform.enrich_events(events, s.internal_domains),
            s.product_view_types,
            s.exclude_bots,
            time_floor_ms=s.event_time_floor_ms,
            max_ahead_ms=int(s.event_time_max_ahead_s * 1000),
        )
    )
    views = transform.valid_views(classified)
    frames = {
        "dim_product": transform.build_dim_product(views),
        "dim_country": transform.build_dim_country(views),
        "dim_referrer": transform.build_dim_referrer(views),
        "dim_device": transform.build_dim_device(views),
        "facts": transform.build_facts(views),
    }

    def materialize(df: DataFrame) -> Rows:
        if collect:
            return df.collect()
        cached = ctx.cache(df)
        cached.count()
        return cached

    counted, *built = await asyncio.gather(
        asyncio.to_thread(lambda: transform.run_counts(classified).collect()),
        *(asyncio.to_thread(materialize, df) for df in frames.values()),
    )
    skips, ledger_rows = transform.split_run_counts(cast(list[Any], counted))
    valid = int(skips.pop(None, 0))
    if sum(r[3] for r in ledger_rows) != valid or sum(r[2] for r in ledger_rows) != valid + sum(skips.values()):
        raise ledger.LedgerMismatchError(f"hour ledger rows {ledger_rows[:5]}… do not add up to {valid} valid, {skips} skipped")
    done = dict(zip(frames, built, strict=True))
    facts = done.pop("facts")
    return Transformed(done, facts, valid, {str(k): v for k, v in skips.items()}, list(ledger_rows))


async def load_unit(ctx: UnitContext, plan: RunPlan, got: Extracted, done: Transformed) -> dict[str, dict[str, int]]:
    s = ctx.settings
    reconciliation: dict[str, Any] = {
        "events_new": got.new_events,
        "events_read": got.events_read,
        "valid_views": done.valid,
        "skipped": dict(sorted(done.skips.items())),
        "skipped_total": sum(done.skips.values()),
        "recomputed_dates": [d.isoformat() for d in got.recomputed],
        "healed_dates": [d.isoformat() for d in got.heal],
    }
    spec_cols = {d.table: stage_columns(d) for d in DIMENSIONS}
    fact_cols = [c for c, _ in FACT_STAGE_COLUMNS]
    size = s.load_batch_rows

    def rows_of(rows: Rows, cols: list[str]) -> Iterator[Any]:
        if isinstance(rows, list):
            return (tuple(r[c] for c in cols) for r in rows)
        return rows.select(*cols).toLocalIterator(prefetchPartitions=True)

    data = LoadInput(
        run_id=ctx.run_id,
        mode=plan.mode,
        ownership=ctx.ownership,
        replace_all_facts=plan.replace_all,
        touched_dates=got.touched,
        dims={t: _chunks(rows_of(df, spec_cols[t]), size, tuple) for t, df in done.dims.items()},
        facts=_chunks(rows_of(done.facts, fact_cols), size, tuple),
        valid_views=done.valid,
        watermark=plan.high if plan.moves_watermark else None,
        ingested_high=plan.high,
        merge_dates=got.merge_dates,
        run_fields={"timings": ctx.timings, "reconciliation": reconciliation},
        fault_pause_seconds=s.fault_pause_in_load_seconds,
        ledger=ledger.LedgerWrite(
            rows=done.ledger_rows,
            replace_all=plan.replace_all,
            replace_dates=[d.isoformat() for d in (got.touched if plan.mode == "range" else got.recomputed)],
            covers_from=plan.ledger_covers_from,
        ),
    )
    ctx.timings["driver_python_peak_rss_mb"] = _rss_peak_mb()
    with contextlib.suppress(Exception):
        ctx.timings["driver_jvm_peak_rss_mb"] = _rss_peak_mb(ctx.spark.sparkContext._gateway.proc.pid)  # type: ignore[union-attr]
    load_conn = await ctx.connect()
    try:
        counts = await load_star(load_conn, s.pg_schema, data)
    finally:
        await load_conn.close()
    log.info("run %s succeeded: %s", ctx.run_id, counts)
    return counts
