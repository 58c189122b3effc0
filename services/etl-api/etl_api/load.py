"""Load: the star schema written in ONE PostgreSQL transaction per run.

Inside the transaction (holding the per-schema ETL advisory lock):

1. staging temp tables (``ON COMMIT DROP``) filled by binary COPY, streamed in chunks;
2. dimension upserts ``INSERT … ON CONFLICT (natural key) DO UPDATE``: a new member gets
   ``max(key) + row_number() OVER (ORDER BY natural key)``, an existing one keeps its key
   forever; attributes are overwritten only by non-NULL values (type 1), ``created_date`` is the
   earliest date seen; the serial sequence is then moved past the max key;
3. ``dim_date`` rows for dates outside the pre-built calendar;
4. the facts. A *replaced* date (every date in full mode; a range run's; a recomputed one:
   Spark read all its events) is deleted and re-inserted from the staged aggregates with
   ``fact_key = date_key * 10^9 + rank within the date``, what a rebuild writes. A *merged* date
   (an incremental run or a micro-batch: Spark read only its new events) is written grain by
   grain: the stored rows of the touched grains (found through the grain index, kept by
   :data:`FACT_KEEP_OLD_SQL`) are combined with the staged aggregates per grain (every stored
   aggregate is mergeable) and upserted; a stored grain keeps its key, a new one is numbered
   after its date's highest key in grain order, so a merge costs what the batch holds, not what
   the date holds. The measures equal a rebuild's; the keys are surrogate, deterministic for a
   given sequence of runs. The derived measures (average, duration) are computed by
   :func:`fact_insert_sql` in both cases, in one place;
5. reconciliation (``sum(view_count)`` of the replaced dates and merged grains after − that of
   the merged grains before = valid views read);
6. the **ownership guard** (:func:`check_ownership`, also run cheaply right after the advisory
   lock, so a run that lost its window stops before staging anything): it locks the load
   generation row, the watermark row and the run's own ``etl_runs`` row (``SELECT … FOR
   UPDATE``) and refuses to commit — :class:`OwnershipLostError`, the transaction rolls back —
   unless the run is still ``running``, still carries the owner token its process wrote when it
   claimed it, the watermark is the one the run started from and no other run's load committed
   since it started (``etl_load_generation``, the guard of range runs, which do not move the
   watermark). The locks are taken last, so heartbeats and the reaper wait for them only
   for the few statements up to COMMIT; a reaper that marks the run failed meanwhile waits for
   the commit and then finds the run finished;
7. the watermark, the load generation, ``etl_date_loads`` (with the ``ingested_high`` each
   written date now covers) and the run's ``succeeded`` row; then COMMIT.

A crash anywhere before COMMIT leaves every table as it was: that, plus deterministic keys, is
what makes a re-run after a crash identical to one clean run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import asyncpg
import orjson

from etl_api.ledger import LedgerWrite, write_ledger
from etl_api.ownership import Ownership, OwnershipLostError, check_ownership, lost_ownership_message
from etl_api.schema import FACT_GRAIN, lock_id, quote_ident
from shared.errors import PipelineError

log = logging.getLogger(__name__)

FACT_KEY_DATE_FACTOR = 1_000_000_000


@dataclass(frozen=True)
class DimSpec:
    table: str
    key: str
    natural: str
    attrs: tuple[str, ...]
    types: tuple[str, ...]  # SQL types of (natural, *attrs, created_date)
    sourced: bool  # has attributes_source: attributes overwritten only by newer evidence


DIMENSIONS = (
    DimSpec("dim_product", "product_key", "product_id", ("product_name", "product_slug", "category"), ("text",) * 4 + ("date",), True),
    DimSpec(
        "dim_country", "country_key", "store_id", ("site_domain", "country_code", "country_name", "region"), ("text",) * 5 + ("date",), True
    ),
    DimSpec("dim_referrer", "referrer_key", "referrer_url", ("referrer_domain", "referrer_type"), ("text",) * 3 + ("date",), False),
    DimSpec("dim_device", "device_key", "device_id", ("device_type", "browser_info", "browser", "os"), ("text",) * 5 + ("date",), True),
)
DIM_BY_TABLE = {d.table: d for d in DIMENSIONS}

FACT_STAGE_COLUMNS = (
    ("date_key", "integer"),
    ("product_id", "text"),
    ("store_id", "text"),
    ("referrer_url", "text"),
    ("device_id", "text"),
    ("view_count", "integer"),
    ("unique_visitors", "integer"),
    ("first_ms", "bigint"),
    ("last_ms", "bigint"),
    ("sum_ms", "bigint"),
)


class ReconciliationError(PipelineError, RuntimeError):
    """What was written does not add up to what was read: the transaction is rolled back."""


def stage_columns(spec: DimSpec) -> list[str]:
    return [spec.natural, *spec.attrs, *(["attributes_source"] if spec.sourced else []), "created_date"]


def _stage_types(spec: DimSpec) -> list[str]:
    return [*spec.types[:-1], *(["text"] if spec.sourced else []), spec.types[-1]]


def upsert_sql(spec: DimSpec) -> str:
    t, k, n = spec.table, spec.key, spec.natural
    cols = stage_columns(spec)
    if spec.sourced:
        newer = "EXCLUDED.attributes_source > coalesce(d.attributes_source, '')"
        new = {a: f"CASE WHEN {newer} THEN coalesce(EXCLUDED.{a}, d.{a}) ELSE d.{a} END" for a in spec.attrs}
        new["attributes_source"] = "greatest(d.attributes_source, EXCLUDED.attributes_source)"
    else:
        new = {a: f"coalesce(EXCLUDED.{a}, d.{a})" for a in spec.attrs}
    new["created_date"] = "least(d.created_date, EXCLUDED.created_date)"
    sets = ", ".join(f"{a} = {expr}" for a, expr in new.items())
    old_values = ", ".join(f"d.{a}" for a in new)
    new_values = ", ".join(new.values())
    return f"""
        INSERT INTO {t} AS d ({k}, {", ".join(cols)})
        SELECT coalesce(e.{k}, m.max_key + row_number() OVER (PARTITION BY e.{k} IS NULL ORDER BY s.{n})),
               {", ".join(f"s.{c}" for c in cols)}
        FROM stg_{t} s
        LEFT JOIN {t} e ON e.{n} = s.{n}
        CROSS JOIN (SELECT coalesce(max({k}), 0) AS max_key FROM {t}) m
        ORDER BY 1
        ON CONFLICT ({n}) DO UPDATE SET {sets}
        WHERE ({old_values}) IS DISTINCT FROM ({new_values})
        RETURNING (xmax = 0) AS inserted
    """


# The staged aggregates with surrogate keys (unknown natural keys → the key-0 members).
_FACT_STAGED = """
    SELECT s.date_key, coalesce(p.product_key, 0) AS product_key, coalesce(c.country_key, 0) AS country_key,
           coalesce(r.referrer_key, 0) AS referrer_key, coalesce(v.device_key, 0) AS device_key,
           s.view_count, s.unique_visitors, s.first_ms, s.last_ms, s.sum_ms
    FROM stg_fact s
    LEFT JOIN dim_product p ON p.product_id = s.product_id
    LEFT JOIN dim_country c ON c.store_id = s.store_id
    LEFT JOIN dim_referrer r ON r.referrer_url = s.referrer_url
    LEFT JOIN dim_device v ON v.device_id = s.device_id
"""

# A merged date's new aggregates (the staged rows of the merged dates, with surrogate keys).
FACT_NEW_SQL = f"""
    CREATE TEMP TABLE fact_new ON COMMIT DROP AS
    SELECT * FROM ({_FACT_STAGED}) s WHERE s.date_key = ANY($1::int[])
"""

# The stored rows of exactly the grains a merge touches, as aggregates with their keys, found
# through the grain index: the merge costs what the micro-batch holds, not what its date holds
# (the timestamps were written from whole ms, so they convert back exactly).
FACT_KEEP_OLD_SQL = """
    CREATE TEMP TABLE fact_old ON COMMIT DROP AS
    SELECT f.date_key, f.product_key, f.country_key, f.referrer_key, f.device_key, f.view_count, f.unique_visitors,
           (extract(epoch FROM f.first_view_time) * 1000)::bigint AS first_ms,
           (extract(epoch FROM f.last_view_time) * 1000)::bigint AS last_ms,
           f.view_time_sum_ms AS sum_ms, f.fact_key
    FROM fact_product_views f
    JOIN fact_new n USING (date_key, product_key, country_key, referrer_key, device_key)
"""

_GRAIN = FACT_GRAIN
_FACT_MEASURES = (
    "view_count",
    "unique_visitors",
    "view_duration_seconds",
    "first_view_time",
    "last_view_time",
    "avg_view_timestamp",
    "view_time_sum_ms",
)

# Stored + new aggregates, one row per touched grain (every aggregate is mergeable), with the
# stored row's key (NULL: a new grain).
_FACT_MERGED = f"""
    SELECT m.*, o.fact_key AS old_key FROM (
        SELECT {_GRAIN},
               sum(view_count)::int AS view_count, max(unique_visitors) AS unique_visitors,
               min(first_ms) AS first_ms, max(last_ms) AS last_ms, sum(sum_ms)::bigint AS sum_ms
        FROM (SELECT * FROM fact_new UNION ALL SELECT {_GRAIN}, view_count, unique_visitors, first_ms, last_ms, sum_ms FROM fact_old) u
        GROUP BY {_GRAIN}
    ) m LEFT JOIN fact_old o USING ({_GRAIN})
"""

# The highest fact_key of each merged date (its primary-key range), so new grains go after it.
_FACT_TOP = f"""
    SELECT d AS date_key,
           coalesce((SELECT max(fact_key) FROM fact_product_views
                     WHERE fact_key > d::bigint * {FACT_KEY_DATE_FACTOR} AND fact_key < (d::bigint + 1) * {FACT_KEY_DATE_FACTOR}),
                    d::bigint * {FACT_KEY_DATE_FACTOR}) AS top
    FROM unnest($2::int[]) AS d
"""


def fact_insert_sql(merge: bool) -> str:
    """The facts' INSERT: a replaced date's rows from the staged aggregates of the dates ``$2``
    (``fact_key`` = date_key * 10^9 + rank of the grain in the date, what a rebuild writes); with
    ``merge``, the touched grains of the merged dates ``$2`` from :data:`_FACT_MERGED`, upserted:
    a stored grain keeps its key, a new one is numbered after its date's highest key in grain
    order (deterministic: a re-run after a crash writes the same keys).

    The derived measures are computed here only, for rebuilt and merged rows alike: average =
    ``(sum_ms / view_count) / 1000`` in IEEE double, duration = whole seconds from first to last
    (non-negative, so integer division floors)."""
    order = "ORDER BY k.product_key, k.country_key, k.referrer_key, k.device_key"
    rank = f"row_number() OVER (PARTITION BY k.date_key{', k.old_key IS NULL' if merge else ''} {order})"
    key = f"coalesce(k.old_key, t.top + {rank})" if merge else f"k.date_key::bigint * {FACT_KEY_DATE_FACTOR} + {rank}"
    if merge:
        source = f"({_FACT_MERGED}) k JOIN ({_FACT_TOP}) t USING (date_key)"
    else:
        source = f"({_FACT_STAGED}) k WHERE k.date_key = ANY($2::int[])"
    measures = _FACT_MEASURES
    upsert = ""
    if merge:
        sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in (*measures, "batch_id"))
        upsert = f"ON CONFLICT ({_GRAIN}) DO UPDATE SET {sets}, processed_at = DEFAULT"
    return f"""
    INSERT INTO fact_product_views AS f (fact_key, {_GRAIN}, {", ".join(measures)}, data_source, batch_id)
    SELECT {key},
           k.date_key, k.product_key, k.country_key, k.referrer_key, k.device_key,
           k.view_count, k.unique_visitors, ((k.last_ms - k.first_ms) / 1000)::int,
           TIMESTAMP 'epoch' + k.first_ms * INTERVAL '1 millisecond',
           TIMESTAMP 'epoch' + k.last_ms * INTERVAL '1 millisecond',
           (k.sum_ms::float8 / k.view_count::float8) / 1000.0::float8,
           k.sum_ms, 'kafka_mongodb', $1
    FROM {source}
    ORDER BY 1
    {upsert}
"""


DIM_DATE_SQL = """
    INSERT INTO dim_date (date_key, date, year, month, day, day_of_week, week_of_year, quarter, is_weekend, month_name, created_at)
    SELECT to_char(d, 'YYYYMMDD')::int, d, extract(year FROM d)::int, extract(month FROM d)::int, extract(day FROM d)::int,
           extract(isodow FROM d)::int, extract(week FROM d)::int, extract(quarter FROM d)::int,
           extract(isodow FROM d) >= 6, trim(to_char(d, 'Month')), d::timestamp
    FROM unnest($1::date[]) AS u(d)
    ON CONFLICT (date_key) DO NOTHING
"""


def date_key(d: date) -> int:
    return d.year * 10000 + d.month * 100 + d.day


@dataclass
class LoadInput:
    """What a run hands to :func:`load_star`; row streams are chunks of tuples in stage-column order."""

    run_id: str
    mode: str  # incremental | full | range (recorded in etl_load_generation)
    ownership: Ownership  # checked before COMMIT (see check_ownership)
    replace_all_facts: bool
    touched_dates: Sequence[date]  # dates whose facts this run writes
    dims: dict[str, AsyncIterator[list[tuple[Any, ...]]]]
    facts: AsyncIterator[list[tuple[Any, ...]]]
    valid_views: int
    watermark: datetime | None  # set the incremental watermark to this (None: leave it)
    ingested_high: datetime  # the run's window high: what the written dates now cover (etl_date_loads)
    run_fields: dict[str, Any]  # extra etl_runs fields stored with the success (timings, reconciliation, …)
    # fault injection, tests only: sleep this long inside the open load transaction, after every
    # write and before the ownership check (so a test can kill the job or reap the run meanwhile)
    fault_pause_seconds: float = 0.0
    # touched dates whose existing facts are merged with the staged ones (the run read only their
    # new events); the other touched dates are replaced. Empty unless incremental.
    merge_dates: Sequence[date] = ()
    # the hour ledger's change (etl_api.ledger), written with the facts; None: leave it
    ledger: LedgerWrite | None = None


async def load_star(conn: asyncpg.Connection, schema: str, data: LoadInput) -> dict[str, dict[str, int]]:
    """Write dims + facts + bookkeeping in one transaction; returns counts per table."""
    counts: dict[str, dict[str, int]] = {}
    started = time.monotonic()
    async with conn.transaction():
        await conn.execute(f"SET LOCAL search_path TO {quote_ident(schema)}")
        await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_id("load", schema))
        t_guard = time.monotonic()
        await check_ownership(conn, data.run_id, data.ownership, lock=False)  # fail fast, before any work
        guard_seconds = time.monotonic() - t_guard
        for spec in DIMENSIONS:
            cols = stage_columns(spec)
            defs = ", ".join(f"{c} {t}" for c, t in zip(cols, _stage_types(spec), strict=True))
            await conn.execute(f"CREATE TEMP TABLE stg_{spec.table} ({defs}) ON COMMIT DROP")
            staged = 0
            async for chunk in data.dims[spec.table]:
                await conn.copy_records_to_table(f"stg_{spec.table}", records=chunk, columns=cols)
                staged += len(chunk)
            rows = await conn.fetch(upsert_sql(spec))
            inserted = sum(1 for r in rows if r["inserted"])
            await conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{spec.table}', '{spec.key}'), "
                f"greatest((SELECT max({spec.key}) FROM {spec.table}), 1))"
            )
            counts[spec.table] = {"staged": staged, "inserted": inserted, "updated": len(rows) - inserted}

        added_dates = await conn.execute(DIM_DATE_SQL, list(data.touched_dates))
        counts["dim_date"] = {"inserted": int(added_dates.split()[-1])}

        counts["fact_product_views"], written, before = await _write_facts(conn, data)

        if data.fault_pause_seconds > 0:  # crash/ownership tests only: everything written, nothing committed
            log.warning("fault injection: pausing %.0fs inside the open load transaction", data.fault_pause_seconds)
            await asyncio.sleep(data.fault_pause_seconds)

        t_guard = time.monotonic()
        await check_ownership(conn, data.run_id, data.ownership, lock=True)  # rows locked until COMMIT
        await conn.execute(
            "UPDATE etl_load_generation SET generation = generation + 1, run_id = $1, mode = $2, committed_at = now() WHERE id = 1",
            data.run_id,
            data.mode,
        )
        guard_seconds += time.monotonic() - t_guard

        if data.watermark is not None:
            await conn.execute(
                """INSERT INTO etl_watermark (name, ingested_high, run_id, updated_at) VALUES ('events', $1, $2, now())
                   ON CONFLICT (name) DO UPDATE SET ingested_high = EXCLUDED.ingested_high, run_id = EXCLUDED.run_id, updated_at = now()""",
                data.watermark,
                data.run_id,
            )
        if data.replace_all_facts:
            await conn.execute("DELETE FROM etl_date_loads")
        await _record_date_loads(conn, data)
        if data.ledger is not None:
            counts["etl_hour_reads"] = {"written": await write_ledger(conn, data.run_id, data.ledger)}
        fields = {**data.run_fields, "counts": counts}
        fields["timings"] = {
            **(fields.get("timings") or {}),
            "load_seconds": round(time.monotonic() - started, 3),
            "ownership_check_seconds": round(guard_seconds, 4),  # both checks + the generation row
        }
        reconciliation = dict(fields.get("reconciliation") or {})
        reconciliation["view_count_written"] = int(written)
        reconciliation["view_count_before"] = int(before)  # of the merged grains, before this run
        reconciliation["merged_dates"] = [d.isoformat() for d in sorted(set(data.merge_dates))]
        fields["reconciliation"] = reconciliation
        done = await conn.execute(
            """UPDATE etl_runs SET status = 'succeeded', phase = NULL, finished_at = now(), heartbeat_at = now(),
                   counts = $2::jsonb, timings = $3::jsonb, reconciliation = $4::jsonb, touched_dates = $5::jsonb, error = NULL
               WHERE run_id = $1 AND status = 'running' AND owner_token = $6""",
            data.run_id,
            orjson.dumps(fields["counts"]).decode(),
            orjson.dumps(fields.get("timings") or {}).decode(),
            orjson.dumps(fields["reconciliation"]).decode(),
            orjson.dumps([d.isoformat() for d in sorted(data.touched_dates)]).decode(),
            data.ownership.owner_token,
        )
        if done != "UPDATE 1":  # cannot happen while the row is locked; never commit without it
            raise OwnershipLostError(lost_ownership_message(["the run's row was not updated to succeeded"]))
    return counts


async def _write_facts(conn: asyncpg.Connection, data: LoadInput) -> tuple[dict[str, int], int, int]:
    """Steps 4-5 of :func:`load_star`: the staged facts written, replaced dates in full and merged
    dates grain by grain; returns the counts, ``sum(view_count)`` of the written rows after and of
    the merged grains before, checked against the valid views read."""
    fact_defs = ", ".join(f"{c} {t}" for c, t in FACT_STAGE_COLUMNS)
    await conn.execute(f"CREATE TEMP TABLE stg_fact ({fact_defs}) ON COMMIT DROP")
    staged = 0
    async for chunk in data.facts:
        await conn.copy_records_to_table("stg_fact", records=chunk, columns=[c for c, _ in FACT_STAGE_COLUMNS])
        staged += len(chunk)
    keys = [date_key(d) for d in data.touched_dates]
    merge_keys = sorted({date_key(d) for d in data.merge_dates})
    if not set(merge_keys) <= set(keys) or (merge_keys and data.replace_all_facts):
        raise ValueError("merge dates must be touched dates of a run that does not replace all facts")
    replace_keys = [k for k in keys if k not in set(merge_keys)]
    before = written = merged = 0
    if merge_keys:
        await conn.execute(FACT_NEW_SQL, merge_keys)
        await conn.execute(FACT_KEEP_OLD_SQL)
        legacy = await conn.fetchval("SELECT count(*) FROM fact_old WHERE sum_ms IS NULL")
        if legacy:  # the job recomputes such dates instead (cannot be merged exactly)
            raise ReconciliationError(f"{legacy} fact rows of the merged dates have no view_time_sum_ms")
        before = await conn.fetchval("SELECT coalesce(sum(view_count), 0) FROM fact_old")
        merged = int((await conn.execute(fact_insert_sql(True), data.run_id, merge_keys)).split()[-1])
        written += await conn.fetchval(f"SELECT coalesce(sum(f.view_count), 0) FROM fact_product_views f JOIN fact_new n USING ({_GRAIN})")
    if data.replace_all_facts:
        deleted = await conn.execute("DELETE FROM fact_product_views")
    else:
        deleted = await conn.execute("DELETE FROM fact_product_views WHERE date_key = ANY($1::int[])", replace_keys)
    inserted = int((await conn.execute(fact_insert_sql(False), data.run_id, replace_keys)).split()[-1])
    written += await conn.fetchval(
        "SELECT coalesce(sum(view_count), 0) FROM fact_product_views WHERE date_key = ANY($1::int[])", replace_keys
    )
    if data.replace_all_facts:
        written_all = await conn.fetchval("SELECT coalesce(sum(view_count), 0) FROM fact_product_views")
        if written_all != written:
            raise ReconciliationError(f"facts outside the touched dates after a full rebuild: {written_all} != {written}")
    if written - before != data.valid_views:
        raise ReconciliationError(
            f"sum(view_count) written {written} - before {before} (merged grains) != valid product views read {data.valid_views}"
        )
    counts = {"staged": staged, "deleted": int(deleted.split()[-1]), "inserted": inserted, "merged": merged}
    return counts, int(written), int(before)


async def _record_date_loads(conn: asyncpg.Connection, data: LoadInput) -> None:
    """``etl_date_loads`` of every touched date: its fact rows and views counted for a replaced
    date (or one without a row yet), moved by what the merge added for a merged date."""
    merged = {date_key(d) for d in data.merge_dates}
    counted = [d for d in data.touched_dates if date_key(d) not in merged]
    if merged:
        done = await conn.fetch(
            """UPDATE etl_date_loads l SET run_id = $2, loaded_at = now(), ingested_high = $3,
                   fact_rows = l.fact_rows + a.added_rows, view_count = l.view_count + a.added_views
               FROM (SELECT to_date(n.date_key::text, 'YYYYMMDD') AS d, sum(n.view_count) AS added_views,
                            count(*) FILTER (WHERE o.fact_key IS NULL) AS added_rows
                     FROM fact_new n LEFT JOIN fact_old o USING (date_key, product_key, country_key, referrer_key, device_key)
                     GROUP BY 1) a
               WHERE l.event_date = a.d AND l.event_date = ANY($1::date[])
               RETURNING l.event_date""",
            [d for d in data.touched_dates if date_key(d) in merged],
            data.run_id,
            data.ingested_high,
        )
        updated = {r["event_date"] for r in done}
        counted += [d for d in data.touched_dates if date_key(d) in merged and d not in updated]
    await conn.execute(
        """INSERT INTO etl_date_loads (event_date, run_id, fact_rows, view_count, loaded_at, ingested_high)
           SELECT d, $2, count(f.fact_key), coalesce(sum(f.view_count), 0), now(), $3
           FROM unnest($1::date[]) AS u(d)
           LEFT JOIN fact_product_views f ON f.date_key = to_char(d, 'YYYYMMDD')::int
           GROUP BY d
           ON CONFLICT (event_date) DO UPDATE SET run_id = EXCLUDED.run_id, fact_rows = EXCLUDED.fact_rows,
               view_count = EXCLUDED.view_count, loaded_at = EXCLUDED.loaded_at, ingested_high = EXCLUDED.ingested_high""",
        counted,
        data.run_id,
        data.ingested_high,
    )
