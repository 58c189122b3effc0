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
``IF NOT EXISTS`` (idempotent), found through FerretDB's own metadata table
(:mod:`shared.ferretdb`, which the sink uses for its ``_id`` index too).
Only for the FerretDB-on-PostgreSQL stand-in: with MongoDB, leave ``ETL_FERRETDB_POSTGRESQL_URL``
unset.
"""

from __future__ import annotations

import asyncpg

from shared.ferretdb import collection_table, ensure_collection_index, index_name, quote

__all__ = ["READ_INDEX_EXPRESSIONS", "collection_table", "ensure_read_indexes", "quote", "read_index_name"]

# `part` too: a task reads one (hour|date, part); without it every part's query would fetch all
# of the hour's/date's rows from the heap and drop 15 of 16 (measured: 36 k events of two dates
# read in 210 s at 1 M events).
READ_INDEX_EXPRESSIONS = ("(_jsonb -> 'ingest_hour')", "(_jsonb -> 'event_date')", "(_jsonb -> 'part')")


def read_index_name(schema: str, table: str) -> str:
    """Stable per definition (:func:`shared.ferretdb.index_name`)."""
    return index_name("etl_read_", schema, table, READ_INDEX_EXPRESSIONS)


async def ensure_read_indexes(postgresql_url: str, database: str, collection: str) -> str | None:
    """Creates the GIN read index when missing; returns its name, or None when the collection has no table yet."""
    conn = await asyncpg.connect(postgresql_url)
    try:
        return await ensure_collection_index(conn, database, collection, "etl_read_", READ_INDEX_EXPRESSIONS)
    finally:
        await conn.close()
