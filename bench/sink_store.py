"""The store side of ``bench/sink_vs_connector.py``: the benchmark's database on MongoDB or FerretDB
(which ids a collection holds, counts, indexes, drops), the ``insert_many`` ceiling, and what
FerretDB's PostgreSQL did during a phase (its counters, and the backend's CPU per document)."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from etl_api.ferretdb import collection_table
from pymongo import AsyncMongoClient
from sink.documents import IngestStamp, document_of
from sink.mongo import INDEXES

from infra.stack import ferretdb_backend, ferretdb_postgresql_url

DATABASE = "bench_sink"


class PresentIds:
    """Which of some ``_id`` values a collection holds, found without scanning it.

    FerretDB 1.24 on PostgreSQL turns ``find_one({"_id": x})`` into ``_jsonb -> '_id' @> x``, a
    sequential scan of the whole table (its ``explain`` says so), which its unique ``_id`` index
    cannot serve. Polling the last ids that way (6 ids, 4 times a second) made PostgreSQL read the
    growing collection over and over during the sink's and the connector's runs, not the
    ceiling's: it was most of the "3x PostgreSQL CPU per document" of session 3. On FerretDB's
    PostgreSQL backend the ids are asked of its table by that index (``_jsonb -> '_id' = ANY``);
    elsewhere (MongoDB, where ``_id`` lookups are indexed) with ``find``."""

    def __init__(self, uri: str, collection: str) -> None:
        self.client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
        self.coll = self.client[DATABASE][collection]
        self.collection = collection
        self.pg: asyncpg.Connection | None = None
        self.table: str | None = None

    async def start(self) -> None:
        if ferretdb_backend() == "postgresql":
            self.pg = await asyncpg.connect(ferretdb_postgresql_url(dict(os.environ)))

    async def present(self, ids: list[str]) -> set[str]:
        if self.pg is None:
            return {d["_id"] for d in await self.coll.find({"_id": {"$in": ids}}, {"_id": 1}).to_list(None)}
        if self.table is None:
            self.table = await collection_table(self.pg, DATABASE, self.collection)
            if self.table is None:
                return set()
        rows = await self.pg.fetch(
            f"""SELECT _jsonb ->> '_id' AS id FROM "{DATABASE}"."{self.table}" WHERE _jsonb -> '_id' = ANY($1::jsonb[])""",
            [orjson.dumps(i).decode() for i in ids],
        )
        return {r["id"] for r in rows}

    async def close(self) -> None:
        await self.client.close()
        if self.pg is not None:
            await self.pg.close()


async def count(uri: str, collection: str) -> int:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    try:
        return await client[DATABASE][collection].estimated_document_count()  # FerretDB: an exact count
    finally:
        await client.close()


async def create_indexes(uri: str, *collections: str) -> None:
    """The sink's two ETL indexes, one per command (FerretDB 1.24 panics on two existing ones at once).
    Every run writes into an indexed collection: index upkeep is a large part of FerretDB's cost."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    try:
        for c in collections:
            for index in INDEXES:
                await client[DATABASE][c].create_indexes([index])
    finally:
        await client.close()


async def ferretdb_version(uri: str) -> str | None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    try:
        version: str | None = (await client.admin.command("buildInfo")).get("ferretdbVersion")
        return version
    finally:
        await client.close()


async def drop(uri: str, *collections: str) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    try:
        for c in collections:
            await client[DATABASE].drop_collection(c)
    finally:
        await client.close()


async def run_ceiling(
    uri: str, collection: str, values: list[bytes], batch: int, concurrency: int = 1, max_seconds: float = 0
) -> tuple[float, int]:
    """Seconds to insert the sink's documents of ``values`` from memory (building not timed), with
    ``concurrency`` insert_many calls of ``batch`` documents in flight at a time, and how many were
    inserted: all, or fewer when ``max_seconds`` (> 0) of insert time ran out (no batch is started
    after that; the rate is then over what was done)."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    coll = client[DATABASE][collection]
    elapsed = 0.0
    done = 0
    try:
        chunk = 100_000  # documents built per chunk, to bound the benchmark's own memory
        for start in range(0, len(values), chunk):
            if max_seconds and elapsed >= max_seconds:
                break
            stamp = IngestStamp.at(datetime.now(UTC))
            docs = [document_of(v, stamp, 16 << 20) for v in values[start : start + chunk]]
            batches = [docs[i : i + batch] for i in range(0, len(docs), batch)]
            t0 = time.monotonic()

            async def worker(mine: list[list[dict[str, Any]]], stop_at: float) -> int:
                n = 0
                for b in mine:
                    if time.monotonic() >= stop_at:
                        break
                    await coll.insert_many(b, ordered=False)
                    n += len(b)
                return n

            stop_at = t0 + max_seconds - elapsed if max_seconds else float("inf")
            done += sum(await asyncio.gather(*(worker(batches[w::concurrency], stop_at) for w in range(concurrency))))
            elapsed += time.monotonic() - t0
    finally:
        await client.close()
    return elapsed, done


PG_COUNTERS = """
SELECT d.xact_commit, d.xact_rollback, d.tup_inserted, d.blks_read, d.blks_hit,
       w.wal_records, w.wal_fpi, w.wal_bytes::bigint, b.checkpoints_timed + b.checkpoints_req AS checkpoints,
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker') AS autovacuum_now
FROM pg_stat_database d, pg_stat_wal w, pg_stat_bgwriter b WHERE d.datname = current_database()
"""


async def pg_counters() -> dict[str, int]:
    """FerretDB's PostgreSQL database counters (pg_stat_database, pg_stat_wal, checkpoints), after
    a 1.5 s pause so the backends have flushed their statistics; empty when unreachable."""
    await asyncio.sleep(1.5)
    try:
        conn = await asyncpg.connect(ferretdb_postgresql_url(dict(os.environ)))
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"    (no PostgreSQL counters: {exc})", flush=True)
        return {}
    try:
        row = await conn.fetchrow(PG_COUNTERS)
        return dict(row) if row else {}
    finally:
        await conn.close()


def pg_line(before: dict[str, int], after: dict[str, int], documents: int) -> str:
    """What PostgreSQL did during a phase, per document where it is a rate."""
    if not before or not after:
        return "PostgreSQL counters: n/a"
    d = {k: after[k] - before[k] for k in before if k != "autovacuum_now"}
    per = max(1, documents)
    return (
        f"PostgreSQL: {d['xact_commit']:,} commits ({d['xact_commit'] / per * 1000:.1f} per 1 000 docs), "
        f"{d['xact_rollback']:,} rollbacks, {d['tup_inserted'] / per:.2f} rows inserted per doc, "
        f"WAL {d['wal_bytes'] / per:,.0f} B/doc ({d['wal_fpi']:,} full-page images), {d['blks_read']:,} blocks read, "
        f"{d['checkpoints']} checkpoints, autovacuum workers at end {after['autovacuum_now']}"
    )


def backend_line(seconds: float, documents: int) -> str:
    return f"FerretDB + PostgreSQL CPU: {seconds:.1f}s = {seconds / max(1, documents) * 1e6:.0f} µs per document"
