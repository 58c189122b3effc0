"""Indexes of our own on a FerretDB-on-PostgreSQL collection's table (the local stand-in only).

FerretDB 1.24 pushes a plain equality filter ``{f: v}`` down to PostgreSQL as jsonb containment,
``_jsonb -> 'f' @> v``, and pushes nothing else down (not ``$in``, not ``$or``). The btree
indexes it builds for ``createIndexes`` (its unique ``_id_`` included) cannot serve ``@>``: every
such query is a sequential scan of the collection's table, whose cost grows with the collection.
A **GIN** index over the same expressions serves ``@>`` (a ``Bitmap Index Scan``). The services
that query a FerretDB collection on a hot path add theirs here, directly in FerretDB's
PostgreSQL database: the sink for ``_id`` (its duplicate check), the ETL for its read slices.

FerretDB ignores indexes it did not create (it neither lists nor drops them; dropping the
collection drops the table and its indexes with it). Built ``CONCURRENTLY`` (writers keep
writing) and idempotently: an invalid index left by an interrupted build is dropped and rebuilt,
and two processes building the same index at once both end with it valid.
With MongoDB none of this applies: leave the services' ``*_FERRETDB_POSTGRESQL_URL`` unset.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Protocol

# SQLSTATEs of "that index name is taken" (unique_violation on pg_class, duplicate_table): what a
# concurrent CREATE INDEX of the same name raises.
_NAME_TAKEN = frozenset({"23505", "42P07"})


class Connection(Protocol):
    """What these helpers need of an ``asyncpg.Connection`` (asyncpg is not imported here: the
    bridge's image, which ships ``shared``, does not install it)."""

    async def fetchval(self, query: str, *args: Any) -> Any: ...
    async def fetch(self, query: str, *args: Any) -> list[Any]: ...
    async def execute(self, query: str, *args: Any) -> str: ...


def quote(name: str) -> str:
    """A PostgreSQL identifier, quoted."""
    return '"' + name.replace('"', '""') + '"'


def index_name(prefix: str, schema: str, table: str, definition: object) -> str:
    """``prefix`` + 16 hex digits: short and stable (PostgreSQL truncates identifiers at 63
    bytes); a new definition gets a new name, and ``prefix`` (ending in ``_``) finds the old ones."""
    return prefix + hashlib.sha256(f"{schema}.{table}:{definition}".encode()).hexdigest()[:16]


async def collection_table(conn: Connection, database: str, collection: str) -> str | None:
    """The PostgreSQL table FerretDB stores ``database.collection`` in, or None when it does not exist yet."""
    exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{quote(database)}._ferretdb_database_metadata")
    if not exists:
        return None
    table: str | None = await conn.fetchval(
        f"SELECT _jsonb ->> 'table' FROM {quote(database)}._ferretdb_database_metadata WHERE _jsonb ->> '_id' = $1",
        collection,
    )
    return table


async def _valid(conn: Connection, schema: str, name: str) -> bool | None:
    """True: the index exists and is valid; False: an interrupted build left it invalid; None: absent."""
    valid: bool | None = await conn.fetchval(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2",
        schema,
        name,
    )
    return valid


async def ensure_gin_index(conn: Connection, schema: str, table: str, name: str, expressions: Sequence[str]) -> bool:
    """Makes ``USING gin (expressions)`` exist and be valid on ``schema.table`` as ``name``, and
    drops the table's other indexes whose name starts like ``name`` up to its last ``_``
    (earlier definitions: see :func:`index_name`). Returns whether this call built it."""
    definition = f"USING gin ({', '.join(expressions)})"
    prefix = name.rsplit("_", 1)[0] + "_"
    valid = await _valid(conn, schema, name)
    if valid is False:  # an interrupted CONCURRENTLY build leaves an invalid index behind
        await conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {quote(schema)}.{quote(name)}")
    built = False
    if valid is not True:
        try:
            await conn.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {quote(name)} ON {quote(schema)}.{quote(table)} {definition}")
            built = True
        except Exception as exc:
            # Another process created the same name between our check and our CREATE: its build
            # finished (CREATE INDEX CONCURRENTLY waits for it) or failed, which the check tells.
            if getattr(exc, "sqlstate", None) not in _NAME_TAKEN or await _valid(conn, schema, name) is not True:
                raise
        await conn.execute(f"ANALYZE {quote(schema)}.{quote(table)}")
    escaped = prefix.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%")
    stale = await conn.fetch(
        "SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND tablename = $2 AND indexname LIKE $3 AND indexname <> $4",
        schema,
        table,
        escaped + "%",
        name,
    )
    for row in stale:
        await conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {quote(schema)}.{quote(row['indexname'])}")
    return built


async def ensure_collection_index(conn: Connection, database: str, collection: str, prefix: str, expressions: Sequence[str]) -> str | None:
    """:func:`ensure_gin_index` on the table of ``database.collection``, named by
    :func:`index_name`; returns the index's name, or None when FerretDB has no table for the
    collection (not created yet, or ``conn`` is not FerretDB's database)."""
    table = await collection_table(conn, database, collection)
    if table is None:
        return None
    name = index_name(prefix, database, table, expressions)
    await ensure_gin_index(conn, database, table, name, expressions)
    return name
