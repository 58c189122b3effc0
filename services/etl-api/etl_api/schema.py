"""The warehouse DDL (``sql/*.sql``) applied to a schema, and the checksum of the star schema.

:func:`apply_ddl` is safe to call from many processes at once: it holds a PostgreSQL advisory
lock (per schema) while the re-runnable files run, each file in its own transaction. A file
whose content was applied before (``etl_ddl_applied``: file name and sha256) is skipped, so an API
instance that starts while a run's load transaction is open does not queue its DDL behind that
transaction's locks (an ``ALTER TABLE`` waits for every lock on its table, and every later
statement on the table waits behind it): it becomes ready at once, and its reaper can act.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import asyncpg

from shared.postgres import failures_of

SQL_DIR = Path(__file__).resolve().parents[3] / "sql"

STAR_TABLES = ("dim_date", "dim_product", "dim_country", "dim_referrer", "dim_device", "fact_product_views")
TABLE_KEYS = {
    "dim_date": "date_key",
    "dim_product": "product_key",
    "dim_country": "country_key",
    "dim_referrer": "referrer_key",
    "dim_device": "device_key",
    "fact_product_views": "fact_key",
}
# Audit columns that record *when* or *by which run* a row was written, not what it says; a
# re-run necessarily differs in them, so the checksum leaves them out (README "Idempotency").
VOLATILE_COLUMNS = frozenset({"created_at", "processed_at", "batch_id"})
FACT_GRAIN = "date_key, product_key, country_key, referrer_key, device_key"

# what a failed call to the warehouse raises: wait and retry (shared.postgres)
POSTGRES_FAILURES = failures_of(asyncpg)


def ddl_files(sql_dir: Path = SQL_DIR) -> list[Path]:
    return sorted(sql_dir.glob("[0-9][0-9][0-9]_*.sql"))


def lock_id(purpose: str, schema: str) -> int:
    """A stable 63-bit advisory-lock id for (purpose, schema)."""
    return int.from_bytes(hashlib.blake2b(f"{purpose}:{schema}".encode(), digest_size=8).digest(), "big") >> 1


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def apply_ddl(conn: asyncpg.Connection, schema: str, sql_dir: Path = SQL_DIR) -> list[str]:
    """Create ``schema`` if missing and run every numbered file in it that was not applied with
    its current content yet; returns the files run."""
    applied = []
    q = quote_ident(schema)
    await conn.execute("SELECT pg_advisory_lock($1)", lock_id("ddl", schema))
    try:
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {q}")
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {q}.etl_ddl_applied "
            "(file TEXT PRIMARY KEY, sha256 TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        done = {r["file"]: r["sha256"] for r in await conn.fetch(f"SELECT file, sha256 FROM {q}.etl_ddl_applied")}
        for path in ddl_files(sql_dir):
            text = path.read_text()
            digest = hashlib.sha256(text.encode()).hexdigest()
            if done.get(path.name) == digest:
                continue
            async with conn.transaction():
                await conn.execute(f"SET LOCAL search_path TO {q}")
                await conn.execute(text)
                await conn.execute(
                    f"INSERT INTO {q}.etl_ddl_applied (file, sha256) VALUES ($1, $2) "
                    "ON CONFLICT (file) DO UPDATE SET sha256 = EXCLUDED.sha256, applied_at = now()",
                    path.name,
                    digest,
                )
            applied.append(path.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", lock_id("ddl", schema))
    return applied


async def table_checksums(
    conn: asyncpg.Connection, schema: str, tables: tuple[str, ...] = STAR_TABLES, fact_keys: bool = True
) -> dict[str, str]:
    """md5 of every row (all non-volatile columns, surrogate keys included) in key order, per table.

    ``fact_keys=False``: the facts without ``fact_key``, in grain order. A merged date's new
    grains are numbered after its highest key (``etl_api.load``), so a history of incremental
    runs and a rebuild from all events write the same rows under different fact keys."""
    out = {}
    for table in tables:
        cols = await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
            schema,
            table,
        )
        skip = VOLATILE_COLUMNS | ({"fact_key"} if table == "fact_product_views" and not fact_keys else set())
        names = [r["column_name"] for r in cols if r["column_name"] not in skip]
        row = "ROW(" + ", ".join(quote_ident(n) for n in names) + ")::text"
        order = quote_ident(TABLE_KEYS[table]) if "fact_key" not in skip else FACT_GRAIN
        q = (
            f"SELECT count(*) AS n, md5(coalesce(string_agg({row}, E'\\n' ORDER BY {order}), '')) AS h "
            f"FROM {quote_ident(schema)}.{quote_ident(table)}"
        )
        rec = await conn.fetchrow(q)
        out[table] = f"{rec['n']}:{rec['h']}"
    return out
