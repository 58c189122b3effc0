"""Benchmark (not a test): what the hour ledger and ``GET /reconciliation`` cost at scale.

Usage::

    .venv/bin/python -m bench.reconciliation_cost --events 1000000 [--hours 24] [--keep]

1. Seeds ``--events`` sink documents (``sink.documents.build_document``) into MongoDB/FerretDB,
   stamped as ingested over ``--hours`` hours ending 2 hours ago (one hour's traffic per
   ``ingest_hour``), with the ETL's GIN read index on FerretDB-PostgreSQL.
2. The ledger the ETL would have written, counted **independently** by SQL straight on
   FerretDB's PostgreSQL table (``GROUP BY ingest_hour, event_date`` over the JSONB) — also the
   ceiling: the same count without the MongoDB wire protocol.
3. ``write_ledger`` of those rows in one transaction (what a run's load adds), timed.
4. ``ledger.reconcile`` over the whole span (what ``GET /reconciliation?hours=N`` and an
   incremental run's heal check with that lookback do), timed; it must report every hour ``ok``
   with the seeded product-view count.
5. The store side of ``GET /reconciliation/kafka`` (``hops.documents_by_source``: documents per
   remote partition), by SQL on FerretDB's table and through the wire protocol, timed; both must
   find every seeded document (``eventgen.samples.star_events`` are all from ``product_views``/0).

Prints one Markdown table row; the collection and schema are dropped at the end unless --keep.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from etl_api import hops, ledger
from etl_api.ferretdb import collection_table, ensure_read_indexes
from etl_api.schema import apply_ddl
from pymongo import MongoClient

from bench.etl_full_vs_incremental import DATES, insert_events, past_stamps
from bench.probes import load_stack_env, loadavg
from infra.stack import ferretdb_postgresql_url

TYPES = ("view_product_detail",)


async def independent_ledger(ferret_pg: str, db: str, coll: str) -> tuple[list[tuple[str, str, int, int]], float]:
    conn = await asyncpg.connect(ferret_pg)
    try:
        table = await collection_table(conn, db, coll)
        assert table is not None
        t = time.monotonic()
        rows = await conn.fetch(
            f"""SELECT _jsonb ->> 'ingest_hour' AS h, coalesce(_jsonb ->> 'event_date', '') AS d, count(*) AS n
                FROM "{db}"."{table}" WHERE _jsonb ->> 'collection' = ANY($1::text[]) GROUP BY 1, 2""",
            list(TYPES),
        )
        return [(r["h"], r["d"], int(r["n"]), int(r["n"])) for r in rows], time.monotonic() - t
    finally:
        await conn.close()


async def measure(args: argparse.Namespace, db: str, coll_name: str, ferret_pg: str, end: datetime) -> dict[str, Any]:
    rows, sql_seconds = await independent_ledger(ferret_pg, db, coll_name)
    dsn = os.environ["POSTGRES_DSN"]
    schema = f"bench_rec_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        await apply_ddl(conn, schema)
        await conn.execute(f'SET search_path TO "{schema}"')
        run_id = str(uuid.uuid4())
        t = time.monotonic()
        async with conn.transaction():
            await ledger.write_ledger(conn, run_id, ledger.LedgerWrite(rows=rows, replace_all=True))
        write_seconds = time.monotonic() - t
        await conn.execute("INSERT INTO etl_watermark (name, ingested_high, run_id) VALUES ('events', $1, $2)", end, run_id)
        count = ledger.raw_store_counter(os.environ["MONGODB_URI"], db, coll_name, None if args.wire_only else ferret_pg)
        first = ledger.hour_of(end - timedelta(hours=args.hours + 2))
        load = loadavg()
        report = await ledger.reconcile(conn, count, TYPES, first, ledger.hour_of(end), end)
        body = report.as_dict()
        assert body["ok"] is True, body["disagreeing_hours"]
        seeded_views = sum(r[2] for r in rows)
        assert sum(h["mongodb"] or 0 for h in body["hours"]) == seeded_views
        t = time.monotonic()
        seeded = {("product_views", 0): args.events}
        assert await hops.documents_by_source(os.environ["MONGODB_URI"], db, coll_name, ferret_pg) == seeded
        hops_sql_seconds = time.monotonic() - t
        t = time.monotonic()
        assert await hops.documents_by_source(os.environ["MONGODB_URI"], db, coll_name, None) == seeded
        hops_wire_seconds = time.monotonic() - t
        return {
            "rows": len(rows),
            "views": seeded_views,
            "hours": len(body["hours"]),
            "sql_seconds": sql_seconds,
            "write_seconds": write_seconds,
            "reconcile_seconds": report.seconds,
            "hops_sql_seconds": hops_sql_seconds,
            "hops_wire_seconds": hops_wire_seconds,
            "load": f"{load} → {loadavg()}",
        }
    finally:
        if not args.keep:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--in-flight", type=int, default=4)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument(
        "--wire-only", action="store_true", help="count every hour through the MongoDB wire protocol (aggregations), not FerretDB's table"
    )
    args = parser.parse_args()
    load_stack_env()
    ferret_pg = ferretdb_postgresql_url(dict(os.environ))
    db, name = "etl_bench", f"rec_{uuid.uuid4().hex[:8]}"
    client: MongoClient[dict[str, Any]] = MongoClient(os.environ["MONGODB_URI"])
    coll = client[db][name]
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    try:
        seed_s = insert_events(
            coll, args.events, DATES, past_stamps(end, args.hours), seed=args.events, batch=args.batch, in_flight=args.in_flight
        )
        t = time.monotonic()
        asyncio.run(ensure_read_indexes(ferret_pg, db, name))
        index_s = time.monotonic() - t
        r = asyncio.run(measure(args, db, name, ferret_pg, end))
        print(f"seeded {args.events:,} documents in {seed_s:.0f} s ({args.events / seed_s:,.0f}/s), read index {index_s:.0f} s")
        print(
            "| documents | product views | hours | ledger rows | ledger write (s) | GET /reconciliation (s) | SQL on FerretDB's table (s) "
            "| /reconciliation/kafka store count, SQL (s) | same, wire protocol (s) | load |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        print(
            f"| {args.events:,} | {r['views']:,} | {r['hours']} | {r['rows']} | {r['write_seconds']:.3f} | {r['reconcile_seconds']:.1f} | "
            f"{r['sql_seconds']:.1f} | {r['hops_sql_seconds']:.1f} | {r['hops_wire_seconds']:.1f} | {r['load']} |",
            flush=True,
        )
    finally:
        if not args.keep:
            coll.drop()


if __name__ == "__main__":
    main()
