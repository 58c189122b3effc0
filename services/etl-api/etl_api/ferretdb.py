"""Read indexes for a raw store served by FerretDB 1.24 on its PostgreSQL backend.

The sink creates MongoDB indexes ``{ingest_hour: 1, part: 1}`` and ``{event_date: 1, part: 1}``
for the ETL's equality reads. On MongoDB they serve those reads. FerretDB 1.24 turns each of
them into a PostgreSQL **btree** index on ``((_jsonb -> 'ingest_hour'), (_jsonb -> 'part'))``,
but pushes an equality filter down as ``_jsonb -> 'ingest_hour' @> '"…"'`` (containment), an
operator a btree cannot serve: ``explain`` shows a ``Seq Scan`` of the whole collection for
every read task, so an incremental run costs as many full scans as it has tasks.

:func:`ensure_read_indexes` adds, directly in FerretDB's PostgreSQL database, one **GIN** index
over ``(_jsonb -> 'ingest_hour'), (_jsonb -> 'event_date'), (_jsonb -> 'part')`` on the
collection's table; GIN serves ``@>`` (and intersects the conditions of one query inside the
index), and the same reads become a ``Bitmap Index Scan`` (measured in the README and
``bench/etl_full_vs_incremental.py``). It is built ``CONCURRENTLY`` (the sink keeps writing) and
``IF NOT EXISTS`` (idempotent), found through FerretDB's own metadata table. FerretDB ignores
indexes it did not create; dropping the collection drops the table and the index with it.
Only for the FerretDB-on-PostgreSQL stand-in: with MongoDB, leave ``ETL_FERRETDB_POSTGRESQL_URL``
unset.
"""

from __future__ import annotations

import hashlib

import asyncpg

# `part` too: a task reads one (hour|date, part); without it every part's query would fetch all
# of the hour's/date's rows from the heap and drop 15 of 16 (measured: 36 k events of two dates
# read in 210 s at 1 M events).
READ_INDEX_EXPRESSIONS = ("(_jsonb -> 'ingest_hour')", "(_jsonb -> 'event_date')", "(_jsonb -> 'part')")


def quote(name: str) -> str:
    """A PostgreSQL identifier, quoted."""
    return '"' + name.replace('"', '""') + '"'


_ident = quote


def read_index_name(schema: str, table: str) -> str:
    """Short and stable (PostgreSQL truncates identifiers at 63 bytes); a new definition gets a new name."""
    return "etl_read_" + hashlib.sha256(f"{schema}.{table}:{READ_INDEX_EXPRESSIONS}".encode()).hexdigest()[:16]


async def collection_table(conn: asyncpg.Connection, database: str, collection: str) -> str | None:
    """The PostgreSQL table FerretDB stores ``database.collection`` in, or None when it does not exist yet."""
    exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{_ident(database)}._ferretdb_database_metadata")
    if not exists:
        return None
    table: str | None = await conn.fetchval(
        f"SELECT _jsonb ->> 'table' FROM {_ident(database)}._ferretdb_database_metadata WHERE _jsonb ->> '_id' = $1",
        collection,
    )
    return table


async def ensure_read_indexes(postgresql_url: str, database: str, collection: str) -> str | None:
    """Creates the GIN read index when missing; returns its name, or None when the collection has no table yet."""
    conn = await asyncpg.connect(postgresql_url)
    try:
        table = await collection_table(conn, database, collection)
        if table is None:
            return None
        name = read_index_name(database, table)
        valid = await conn.fetchval(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2",
            database,
            name,
        )
        if valid is False:  # an interrupted CONCURRENTLY build leaves an invalid index behind
            await conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {_ident(database)}.{_ident(name)}")
        if valid is not True:
            await conn.execute(
                f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {_ident(name)} ON {_ident(database)}.{_ident(table)} "
                f"USING gin ({', '.join(READ_INDEX_EXPRESSIONS)})"
            )
            await conn.execute(f"ANALYZE {_ident(database)}.{_ident(table)}")
        stale = await conn.fetch(
            "SELECT indexname FROM pg_indexes "
            "WHERE schemaname = $1 AND tablename = $2 AND indexname LIKE 'etl\\_read\\_%' AND indexname <> $3",
            database,
            table,
            name,
        )
        for row in stale:  # an earlier definition of the read index
            await conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {_ident(database)}.{_ident(row['indexname'])}")
        return name
    finally:
        await conn.close()
