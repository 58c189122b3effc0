"""The ``_id`` lookup index on FerretDB-on-PostgreSQL (the local stand-in), built by the sink.

The duplicate check (:meth:`sink.mongo.MongoWriter.stored`) reads stored documents by ``_id``,
one equality filter per id: the one shape both stores serve from an index. MongoDB serves it from
its ``_id`` index. FerretDB 1.24 pushes it down as ``_jsonb -> '_id' @> '"…"'``, which its own
unique btree ``_id_`` index cannot serve: without this GIN index every lookup is a sequential
scan of the collection (0.43 s per id at 177 k documents, growing with the collection), and
``$in``, which FerretDB does not push down at all, is a scan inside FerretDB (79 s for one id).

``SINK_FERRETDB_POSTGRESQL_URL`` names FerretDB's PostgreSQL database; the sink creates the
collection if needed (FerretDB makes its table then) and the index (:mod:`shared.ferretdb`) at
start, before it consumes. Unset on MongoDB.
"""

from __future__ import annotations

import asyncpg

from shared.ferretdb import ensure_collection_index, index_name

# jsonb_path_ops: serves @> only, the one operator FerretDB uses for equality; smaller and faster
# to maintain than the default jsonb_ops.
ID_INDEX_EXPRESSIONS = ("(_jsonb -> '_id') jsonb_path_ops",)


def id_index_name(schema: str, table: str) -> str:
    return index_name("sink_id_", schema, table, ID_INDEX_EXPRESSIONS)


async def ensure_id_index(postgresql_url: str, database: str, collection: str) -> str | None:
    """Creates the GIN ``_id`` index when missing; returns its name, or None when FerretDB has no
    table for the collection (the caller creates the collection first)."""
    conn = await asyncpg.connect(postgresql_url, timeout=30)
    try:
        return await ensure_collection_index(conn, database, collection, "sink_id_", ID_INDEX_EXPRESSIONS)
    finally:
        await conn.close()
