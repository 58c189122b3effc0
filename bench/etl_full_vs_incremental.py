# ruff: noqa: E501
"""Benchmark (not a test): a full ETL run vs an incremental run after +1 % new events.

Usage::

    .venv/bin/python bench/etl_full_vs_incremental.py --events 1000000,3000000 [--read-parts 4]
        [--batch 2000] [--in-flight 4] [--no-read-index] [--keep]

For each size (ascending), one MongoDB collection **grows** to that many events (the events of
the previous size are kept, so 1 M then 3 M seeds 3 M events in all), then:

1. ``python -m etl_api.job`` (the process the API launches) in **full** mode into a fresh
   PostgreSQL schema;
2. +1 % new events (half on an old event date, half on a new one), ingested now;
3. the same job in **incremental** mode;

and prints events/s, Spark start / extract / transform / load seconds and the driver's peak RSS
(Python driver and its Spark JVM, /proc VmHWM) per run, with the load average around each run.

Seeding is the slow part on FerretDB: the documents are the sink's own (``sink.documents.
build_document`` of ``eventgen.samples.star_events``), written with ``insert_many(ordered=
False)`` in ``--batch`` documents, ``--in-flight`` batches at once, while the next ones are
generated. The seeded events are stamped as ingested over the 3 days before the last 2 hours
(as a live sink would have: one hour's traffic per ``ingest_hour``), the new ones now; the indexes
the sink would create are created first (its ``INDEXES`` when ``SINK_READ_INDEXES`` says so: on
MongoDB, not on FerretDB). With FerretDB on PostgreSQL the
ETL's GIN read index (``etl_api/ferretdb.py``) is built once after seeding (timed and printed;
``--no-read-index`` leaves it out, to see the runs without it). Every collection and schema is
dropped at the end, also on failure or Ctrl-C (``--keep`` keeps them).

Named peer, measured in the same run: the seed's way of reading, documents pulled into the
driver (``list(collection.find())``) for the first ``--peer-events`` product views, with its
time and the Python process's RSS growth — what our partitioned read avoids.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "services" / "etl-api"), str(REPO / "services" / "sink"), str(REPO / "tools" / "eventgen")]

import asyncpg  # noqa: E402
from etl_api.ferretdb import ensure_read_indexes  # noqa: E402
from etl_api.schema import apply_ddl  # noqa: E402
from eventgen.samples import star_events  # noqa: E402
from pymongo import MongoClient  # noqa: E402
from sink.documents import IngestStamp, build_document  # noqa: E402
from sink.mongo import INDEXES, wants_read_indexes  # noqa: E402

from bench.mongo_raw_read import full_run_tasks, raw_read  # noqa: E402
from bench.probes import load_stack_env, loadavg  # noqa: E402
from infra.stack import ferretdb_postgresql_url  # noqa: E402
from shared.event import DEFAULT_PRODUCT_VIEW_TYPES  # noqa: E402

DATES = [date(2020, 5, 1) + timedelta(days=i) for i in range(30)]
NEW_DATE = date(2020, 5, 31)


def insert_events(coll: Any, n: int, dates: list[date], stamps: Iterator[datetime], seed: int, *, batch: int, in_flight: int) -> float:
    """n generated sink documents, ``in_flight`` unordered insert_many batches at a time."""
    t = time.monotonic()
    rng = random.Random(seed)
    errors: list[BaseException] = []
    lock = threading.Lock()

    def write(docs: list[dict[str, Any]]) -> None:
        try:
            coll.insert_many(docs, ordered=False)
        except BaseException as exc:
            with lock:
                errors.append(exc)

    with ThreadPoolExecutor(in_flight) as pool:
        pending: set[Future[None]] = set()
        done = 0
        while done < n:
            k = min(batch, n - done)
            stamp = next(stamps)
            docs = [build_document(e, IngestStamp.at(stamp)) for e, _, _ in star_events(rng, k, dates, stamp, devices=5000)]
            if len(pending) >= in_flight:
                _, pending = wait(pending, return_when=FIRST_COMPLETED)
            if errors:
                raise errors[0]
            pending.add(pool.submit(write, docs))
            done += k
        wait(pending)
    if errors:
        raise errors[0]
    return time.monotonic() - t


def past_stamps(end: datetime, hours: int = 72) -> Iterator[datetime]:
    """Ingestion instants spread over the ``hours`` before ``end`` (one per batch)."""
    rng = random.Random(7)
    while True:
        yield end - timedelta(seconds=rng.uniform(0, hours * 3600))


def now_stamps() -> Iterator[datetime]:
    while True:
        yield datetime.now(UTC)


async def run_job(dsn: str, schema: str, mode: str, env: dict[str, str]) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        run_id = str(uuid.uuid4())
        await conn.execute(f"INSERT INTO \"{schema}\".etl_runs (run_id, mode, status) VALUES ($1, $2, 'queued')", run_id, mode)
        load_before = loadavg()
        t = time.monotonic()
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "etl_api.job", "--run-id", run_id, env=env, cwd=str(REPO))
        code = await proc.wait()
        wall = time.monotonic() - t
        row = await conn.fetchrow(f'SELECT status, timings, reconciliation, error FROM "{schema}".etl_runs WHERE run_id = $1', run_id)
        if code != 0 or row["status"] != "succeeded":
            raise SystemExit(f"{mode} run failed ({code}): {row['error']}")
        return {
            "wall": wall,
            "timings": json.loads(row["timings"]),
            "rec": json.loads(row["reconciliation"]),
            "load": f"{load_before} → {loadavg()}",
        }
    finally:
        await conn.close()


def peer_driver_read(coll: Any, limit: int) -> tuple[float, float, int]:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.monotonic()
    # batch_size: FerretDB 1.24 answers a find with a limit in one reply of up to ``limit``
    # documents, past the 48 MB message limit (97 MB for 100 000 at 3 M), unless it is given one
    docs = list(coll.find({"collection": "view_product_detail"}).limit(limit).batch_size(10_000))
    elapsed = time.monotonic() - t
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return elapsed, after - before, len(docs)


def read_ceilings(args: argparse.Namespace, db: str, name: str) -> dict[str, tuple[float, int]]:
    """The raw reads of what a full run reads now: serial, then in ``--raw-processes`` processes."""
    uri = os.environ.get("MONGODB_URI", "mongodb://127.0.0.1:27017/")
    tasks = full_run_tasks(list(DEFAULT_PRODUCT_VIEW_TYPES), int(args.read_parts))
    out = {}
    for label, processes in (("raw read, serial", 1), (f"raw read, {args.raw_processes} processes", args.raw_processes)):
        load = loadavg()
        out[label] = raw_read(uri, db, name, tasks, processes, args.raw_batch)
        print(
            f"{label}: {out[label][1]:,} documents in {out[label][0]:.1f} s ({out[label][1] / out[label][0]:,.0f}/s), load {load} → {loadavg()}",
            flush=True,
        )
    return out


def print_ceilings(ceilings: dict[int, dict[str, tuple[float, int]]], fulls: dict[int, dict[str, Any]]) -> None:
    """The full run's extract against the raw reads of the same documents."""
    print("| events | read | documents | seconds | documents/s | full run's extract / it |")
    print("|---|---|---|---|---|---|")
    for size, reads in ceilings.items():
        full = fulls.get(size)
        if full is None:
            continue
        extract_s, read = full["timings"]["extract_seconds"], full["rec"]["events_read"]
        print(f"| {size:,} | full run's extract (Spark) | {read:,} | {extract_s:.1f} | {read / extract_s:,.0f} | |")
        for label, (seconds, docs) in reads.items():
            print(
                f"| {size:,} | {label} | {docs:,} | {seconds:.1f} | {docs / seconds:,.0f} | {(read / extract_s) / (docs / seconds):.0%} |"
            )


def row(size: int, name: str, r: dict[str, Any]) -> str:
    t, rec = r["timings"], r["rec"]
    return (
        f"| {size:,} | {name} | {rec['events_new']:,} | {rec['events_read']:,} | {r['wall']:.1f} | {rec['events_read'] / r['wall']:,.0f} | "
        f"{t.get('spark_start_seconds', 0):.1f} | {t['extract_seconds']:.1f} | {t['transform_seconds']:.1f} | {t['load_seconds']:.1f} | "
        f"{t.get('driver_python_peak_rss_mb')} | {t.get('driver_jvm_peak_rss_mb')} | {r['load']} |"
    )


def read_index_url(args: argparse.Namespace) -> str | None:
    """FerretDB's PostgreSQL database for the ETL's read index, unless --no-read-index."""
    if args.no_read_index:
        return None
    return str(args.ferretdb_pg_url or ferretdb_postgresql_url(dict(os.environ)))


def job_env(args: argparse.Namespace, db: str, collection: str, ferret_pg: str | None) -> dict[str, str]:
    """The ETL job's environment for a bench run over ``db.collection``."""
    env = {
        **os.environ,
        "MONGODB_DATABASE": db,
        "MONGODB_COLLECTION": collection,
        "ETL_SETTLE_SECONDS": "1",
        "ETL_READ_PARTS": args.read_parts,
        "ETL_SPARK_SHUFFLE_PARTITIONS": "4",
    }
    if ferret_pg:
        env["ETL_FERRETDB_POSTGRESQL_URL"] = ferret_pg
    return env


def again(args: argparse.Namespace) -> None:
    """One more incremental run after +1 % new events on a collection and schema a run kept."""
    load_stack_env()
    name, schema, size_text = args.again.split(":")
    size = int(size_text)
    dsn = os.environ["POSTGRES_DSN"]
    ferret_pg = read_index_url(args)
    db = "etl_bench"
    client: MongoClient[dict[str, Any]] = MongoClient(os.environ.get("MONGODB_URI", "mongodb://127.0.0.1:27017/"))
    coll = client[db][name]
    env = {**job_env(args, db, name, ferret_pg), "ETL_PG_SCHEMA": schema}

    async def drop() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    try:
        if ferret_pg:
            t = time.monotonic()
            index = asyncio.run(ensure_read_indexes(ferret_pg, db, name))
            print(f"read index {index} ready in {time.monotonic() - t:.0f} s, load {loadavg()}", flush=True)
        extra = max(2, size // 100)
        insert_events(coll, extra // 2, [DATES[3]], now_stamps(), seed=size + 3, batch=args.batch, in_flight=args.in_flight)
        insert_events(coll, extra - extra // 2, [NEW_DATE], now_stamps(), seed=size + 4, batch=args.batch, in_flight=args.in_flight)
        time.sleep(1.5)
        incr = asyncio.run(run_job(dsn, schema, "incremental", env))
        print(row(size, "incremental (+1 %), again", incr), flush=True)
    finally:
        if not args.keep:
            coll.drop()
            asyncio.run(drop())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", default="100000", help="comma list of sizes, ascending (the collection grows)")
    parser.add_argument("--read-parts", default="4")
    parser.add_argument("--batch", type=int, default=2000, help="documents per insert_many")
    parser.add_argument("--in-flight", type=int, default=4, help="insert_many calls at once")
    parser.add_argument("--no-read-index", action="store_true", help="no GIN read index on FerretDB-PostgreSQL")
    parser.add_argument(
        "--ferretdb-pg-url", help="FerretDB's PostgreSQL URL (default: the local stack's, POSTGRES_DSN's server, db ferretdb)"
    )
    parser.add_argument("--peer-events", type=int, default=100_000)
    parser.add_argument(
        "--raw-processes", type=int, default=os.cpu_count() or 1, help="the partitioned raw read's processes (Spark local[*]: the cores)"
    )
    parser.add_argument("--raw-batch", type=int, default=10_000, help="the raw reads' cursor batch size")
    parser.add_argument("--keep", action="store_true", help="keep the collection and schemas")
    parser.add_argument(
        "--again",
        metavar="COLLECTION:SCHEMA:SIZE",
        help="no seeding, no full run: one more +1 %% incremental run on a kept collection and schema (then dropped unless --keep)",
    )
    args = parser.parse_args()
    if args.again:
        again(args)
        return
    sizes = sorted(int(x) for x in args.events.split(","))
    load_stack_env()
    dsn = os.environ["POSTGRES_DSN"]
    ferret_pg = read_index_url(args)
    tag = f"bench_etl_{uuid.uuid4().hex[:6]}"
    db = "etl_bench"
    client: MongoClient[dict[str, Any]] = MongoClient(os.environ.get("MONGODB_URI", "mongodb://127.0.0.1:27017/"))
    coll = client[db][tag]
    schemas: list[str] = []
    base_env = job_env(args, db, tag, ferret_pg)

    async def pg(sql: str, schema: str | None = None) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            if schema:
                await apply_ddl(conn, schema)
            else:
                await conn.execute(sql)
        finally:
            await conn.close()

    results: list[tuple[int, str, dict[str, Any]]] = []
    ceilings: dict[int, dict[str, tuple[float, int]]] = {}
    notes: list[str] = []
    print(f"ETL benchmark {tag}: sizes {sizes}, read_parts={args.read_parts}, {os.cpu_count()} cores, load {loadavg()}", flush=True)
    try:
        if wants_read_indexes(os.environ.get("SINK_READ_INDEXES", "auto"), client.admin.command("buildInfo").get("ferretdbVersion")):
            for index in INDEXES:
                coll.create_indexes([index])
            notes.append("the sink's read indexes created")
        have = 0
        for size in sizes:
            t_ins = insert_events(
                coll,
                size - have,
                DATES,
                past_stamps(datetime.now(UTC) - timedelta(hours=2)),
                seed=size,
                batch=args.batch,
                in_flight=args.in_flight,
            )
            notes.append(f"seeded {size - have:,} events in {t_ins:.0f} s ({(size - have) / t_ins:,.0f} docs/s), load {loadavg()}")
            print(notes[-1], flush=True)
            have = size
            if ferret_pg:
                t = time.monotonic()
                name = asyncio.run(ensure_read_indexes(ferret_pg, db, tag))
                notes.append(f"read index {name} ready in {time.monotonic() - t:.0f} s at {size:,} events")
                print(notes[-1], flush=True)
            ceilings[size] = read_ceilings(args, coll.database.name, tag)
            schema = f"{tag}_{size}"
            schemas.append(schema)
            asyncio.run(pg("", schema))
            env = {**base_env, "ETL_PG_SCHEMA": schema}
            time.sleep(1.5)
            full = asyncio.run(run_job(dsn, schema, "full", env))
            print(row(size, "full", full), flush=True)
            extra = max(2, size // 100)
            insert_events(coll, extra // 2, [DATES[3]], now_stamps(), seed=size + 1, batch=args.batch, in_flight=args.in_flight)
            insert_events(coll, extra - extra // 2, [NEW_DATE], now_stamps(), seed=size + 2, batch=args.batch, in_flight=args.in_flight)
            have += extra
            time.sleep(1.5)
            incr = asyncio.run(run_job(dsn, schema, "incremental", env))
            print(row(size, "incremental (+1 %)", incr), flush=True)
            results += [(size, "full", full), (size, "incremental (+1 %)", incr)]
        try:
            peer = peer_driver_read(coll, args.peer_events) if args.peer_events else None
        except Exception as exc:  # the peer failing must not hide the runs' results
            notes.append(f"peer (seed: documents into the driver) failed: {type(exc).__name__}: {exc}")
            peer = None
    finally:
        if not args.keep:
            coll.drop()
            for schema in schemas:
                asyncio.run(pg(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))

    print(f"\nETL benchmark: read_parts={args.read_parts}, read index: {'yes' if ferret_pg else 'no'}, {os.cpu_count()} cores")
    print(*notes, sep="\n")
    print(
        "| events | run | new events | events read | wall s | events/s | spark start s | extract s | transform s | load s | driver py RSS MB | driver JVM RSS MB | load avg before → after |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for size, name, r in results:
        print(row(size, name, r))
    for i in range(0, len(results), 2):
        size, _, full = results[i]
        incr = results[i + 1][2]
        print(f"{size:,} events: incremental / full wall time = {incr['wall'] / full['wall']:.1%}")
    print_ceilings(ceilings, {size: r for size, name, r in results if name == "full"})
    out = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "read_parts": args.read_parts,
        "notes": notes,
        "runs": [{"events": size, "run": name, **r} for size, name, r in results],
        "ceilings": {str(size): {k: {"seconds": v[0], "documents": v[1]} for k, v in c.items()} for size, c in ceilings.items()},
    }
    (REPO / "bench" / "results" / "etl_full_vs_incremental.json").write_text(json.dumps(out, indent=2))
    if peer:
        print(f"peer (seed: documents into the driver): {peer[2]:,} docs in {peer[0]:.1f}s, driver RSS +{peer[1]:.0f} MB")


if __name__ == "__main__":
    main()
