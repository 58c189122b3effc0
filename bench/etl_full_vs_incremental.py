# ruff: noqa: E501
"""Benchmark (not a test): a full ETL run vs an incremental run after +1 % new events.

Usage::

    .venv/bin/python bench/etl_full_vs_incremental.py --events 200000 [--read-parts 4] [--keep]

Loads N sink-shaped events into a fresh MongoDB collection (ingested a few minutes ago, over
30 event dates), runs ``python -m etl_api.job`` (the same process the API launches) in full
mode into a fresh PostgreSQL schema, adds 1 % new events (half on an old date, half on a new
date), runs it in incremental mode, and prints events/s, the extract / transform / load split
and the driver's peak RSS (Python driver and its Spark JVM, from /proc VmHWM) per run.

Named peer, measured in the same run: the seed's way of reading, the whole collection pulled
into the driver (``list(collection.find())``), with its time and the Python process's RSS
growth — what our partitioned read avoids.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import sys
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "services" / "etl-api")]

import asyncpg  # noqa: E402
from etl_api.schema import apply_ddl  # noqa: E402
from pymongo import MongoClient  # noqa: E402

from tests.conftest import STACK_ENV  # noqa: E402
from tests.integration.etl.helpers import make_events  # noqa: E402


def load_stack_env() -> None:
    if STACK_ENV.exists():
        for line in STACK_ENV.read_text().splitlines():
            if line and not line.startswith("#") and "=" in line:
                k, v = line.split("=", 1)
                os.environ.setdefault(k, v)


def insert_events(coll: Any, n: int, dates: list[date], ingested_at: datetime, seed: int) -> float:
    t = time.monotonic()
    rng = random.Random(seed)
    batch = 20_000
    done = 0
    while done < n:
        k = min(batch, n - done)
        docs = make_events(rng, k, dates, ingested_at, devices=5000)
        coll.insert_many([d.doc for d in docs], ordered=False)
        done += k
    return time.monotonic() - t


async def run_job(dsn: str, schema: str, mode: str, env: dict[str, str]) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        run_id = str(uuid.uuid4())
        await conn.execute(f"INSERT INTO \"{schema}\".etl_runs (run_id, mode, status) VALUES ($1, $2, 'queued')", run_id, mode)
        t = time.monotonic()
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "etl_api.job", "--run-id", run_id, env=env, cwd=str(REPO))
        code = await proc.wait()
        wall = time.monotonic() - t
        row = await conn.fetchrow(f'SELECT status, timings, reconciliation, error FROM "{schema}".etl_runs WHERE run_id = $1', run_id)
        if code != 0 or row["status"] != "succeeded":
            raise SystemExit(f"{mode} run failed ({code}): {row['error']}")
        import json

        return {"wall": wall, "timings": json.loads(row["timings"]), "rec": json.loads(row["reconciliation"])}
    finally:
        await conn.close()


def peer_driver_read(coll: Any) -> tuple[float, float, int]:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.monotonic()
    docs = list(coll.find({"collection": "view_product_detail"}))
    elapsed = time.monotonic() - t
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return elapsed, after - before, len(docs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--read-parts", default="4")
    parser.add_argument("--keep", action="store_true", help="keep the collection and schema")
    parser.add_argument("--no-peer", action="store_true")
    args = parser.parse_args()
    load_stack_env()
    dsn = os.environ["POSTGRES_DSN"]
    tag = f"bench_etl_{uuid.uuid4().hex[:6]}"
    db = "etl_bench"
    client: MongoClient[dict[str, Any]] = MongoClient(os.environ.get("MONGODB_URI", "mongodb://127.0.0.1:27017/"))
    coll = client[db][tag]
    env = {
        **os.environ,
        "ETL_PG_SCHEMA": tag,
        "MONGODB_DATABASE": db,
        "MONGODB_COLLECTION": tag,
        "ETL_SETTLE_SECONDS": "1",
        "ETL_READ_PARTS": args.read_parts,
        "ETL_SPARK_SHUFFLE_PARTITIONS": "4",
    }

    async def ddl() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await apply_ddl(conn, tag)
        finally:
            await conn.close()

    async def drop() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{tag}" CASCADE')
        finally:
            await conn.close()

    try:
        asyncio.run(ddl())
        dates = [date(2020, 5, 1) + timedelta(days=i) for i in range(30)]
        t_ins = insert_events(coll, args.events, dates, datetime.now(UTC) - timedelta(minutes=5), seed=1)
        print(f"inserted {args.events} events in {t_ins:.1f}s", flush=True)
        time.sleep(1.5)
        full = asyncio.run(run_job(dsn, tag, "full", env))
        extra = max(1, args.events // 100)
        insert_events(coll, extra // 2, [dates[3]], datetime.now(UTC), seed=2)
        insert_events(coll, extra - extra // 2, [date(2020, 5, 31)], datetime.now(UTC), seed=3)
        time.sleep(1.5)
        incr = asyncio.run(run_job(dsn, tag, "incremental", env))
        peer = None if args.no_peer else peer_driver_read(coll)
    finally:
        if not args.keep:
            coll.drop()
            asyncio.run(drop())

    def row(name: str, r: dict[str, Any]) -> str:
        t, rec = r["timings"], r["rec"]
        return (
            f"| {name} | {rec['events_new']} | {rec['events_read']} | {r['wall']:.1f} | {rec['events_read'] / r['wall']:.0f} | "
            f"{t.get('spark_start_seconds', 0):.1f} | {t['extract_seconds']:.1f} | {t['transform_seconds']:.1f} | {t['load_seconds']:.1f} | "
            f"{t.get('driver_python_peak_rss_mb')} | {t.get('driver_jvm_peak_rss_mb')} |"
        )

    print(f"\nETL benchmark: {args.events} events (+{extra} new), read_parts={args.read_parts}, {os.cpu_count()} cores")
    print(
        "| run | new events | events read | wall s | events/s | spark start s | extract s | transform s | load s | driver py RSS MB | driver JVM RSS MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print(row("full", full))
    print(row("incremental (+1 %)", incr))
    print(f"\nincremental / full wall time: {incr['wall'] / full['wall']:.1%}")
    if peer:
        print(f"peer (seed: whole collection into the driver): {peer[2]} docs in {peer[0]:.1f}s, driver RSS +{peer[1]:.0f} MB")


if __name__ == "__main__":
    main()
