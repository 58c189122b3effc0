"""The ``_id`` lookup index on FerretDB-on-PostgreSQL (the local stand-in), built by the sink,
and the batch's stored ``_id`` s asked of FerretDB's table in one query (:class:`StoredIds`).

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

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg
import bson
from bson.datetime_ms import DatetimeMS
from bson.errors import InvalidDocument
from bson.raw_bson import RawBSONDocument

from shared.ferretdb import collection_table, ensure_collection_index, index_name, quote
from shared.ferretdb_sjson import BsonTypes, UnknownStoredType, decode_document
from shared.postgres import failures_of
from sink.compare import off_loop

log = logging.getLogger(__name__)

# what a failed call to FerretDB's PostgreSQL raises (shared.postgres)
POSTGRES_FAILURES = failures_of(asyncpg)

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


# the BSON types FerretDB itself sends: bson.encode of a decoded copy is FerretDB's bytes
EXACT_TYPES = BsonTypes(
    object_id=bson.ObjectId,
    binary=bson.Binary,
    regex=bson.Regex,
    timestamp=bson.Timestamp,
    int64=bson.Int64,
    date_ms=DatetimeMS,
)


def accepted_copies(rows: Sequence[tuple[str, str]], accept: Callable[[str, dict[str, Any]], bool] | None) -> dict[str, RawBSONDocument]:
    """``(id, _jsonb::text)`` rows decoded exactly; those ``accept`` takes (None: all) as BSON.
    CPU only (no I/O, no event loop): :meth:`StoredIds.documents` runs it in a worker thread."""
    out: dict[str, RawBSONDocument] = {}
    for _id, text in rows:
        try:
            doc = decode_document(text, EXACT_TYPES, exact=True)
            if accept is None or accept(_id, doc):
                out[_id] = RawBSONDocument(bson.encode(doc))
        except (UnknownStoredType, InvalidDocument, OverflowError, ValueError) as exc:
            log.debug("stored document %r not decoded here (%s): read through FerretDB", _id, exc)
    return out


class StoredIds:
    """Which of a batch's ``_id`` s FerretDB's table holds already, in one query.

    Why: FerretDB 1.24 inserts a chunk of an ``insert_many`` in one statement, but when any
    document of it is a duplicate it inserts **every** document of the chunk again one by one,
    each in its own transaction (``handler/msg_insert.go``), several round trips to PostgreSQL
    per document. A sink that restarts or rebalances re-reads what it had written but not
    committed, so its next batches are mostly duplicates; under load they took longer than a
    rebalance lasts, were abandoned at the next one and re-read again: the hour soak of
    2026-12-07 saw the sink commit ~108 000 records in 35 minutes at 1 000 events/s. Asked
    first, the stored documents are reported as duplicates without being sent (the caller
    compares them as for an 11000) and the rest goes to ``insert_many`` in one statement.

    The query is an equality on ``(_jsonb -> '_id')``, served by FerretDB's own unique btree
    index of the collection. Only string ids are asked (the sink's ``_id`` is the event id); an
    answer that cannot be had (PostgreSQL away, slow, no table yet) is None, and the caller
    inserts the whole batch as it would without this check.
    """

    def __init__(self, postgresql_url: str, database: str, collection: str, timeout_s: float = 5.0) -> None:
        self.url, self.database, self.collection, self.timeout_s = postgresql_url, database, collection, timeout_s
        self._pool: asyncpg.Pool | None = None
        self._table: str | None = None

    async def present(self, ids: Sequence[Any]) -> set[str] | None:
        """The string ids of ``ids`` stored in the collection; None when the table could not say."""
        rows = await self._select("_jsonb ->> '_id' AS id", ids)
        return None if rows is None else {r["id"] for r in rows}

    async def documents(
        self, ids: Sequence[Any], accept: Callable[[str, dict[str, Any]], bool] | None = None
    ) -> dict[str, RawBSONDocument] | None:
        """The stored documents of the string ids of ``ids`` that ``accept`` takes (None: all), as
        the exact BSON FerretDB would send; None when the table could not say.

        Each is decoded by :func:`shared.ferretdb_sjson.decode_document` with ``exact=True`` (a
        dict whose ``bson.encode`` is FerretDB's bytes) and handed to ``accept`` as that dict; one
        stored in a form that module does not know is left out (the caller reads it through
        FerretDB). Decoding and ``accept`` run in a worker thread (:func:`accepted_copies`): a
        redelivered batch of thousands of duplicates is a second of CPU that would otherwise hold
        the event loop, and with it the health endpoint and the consumer's heartbeats."""
        rows = await self._select("_jsonb ->> '_id' AS id, _jsonb::text AS doc", ids)
        if rows is None:
            return None
        return await off_loop(accepted_copies, [(r["id"], r["doc"]) for r in rows], accept)

    async def _select(self, columns: str, ids: Sequence[Any]) -> list[Any] | None:
        wanted = sorted({i for i in ids if type(i) is str})
        if not wanted:
            return []
        try:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(self.url, min_size=1, max_size=4, timeout=self.timeout_s)
            async with self._pool.acquire(timeout=self.timeout_s) as conn:
                if self._table is None:
                    name = await collection_table(conn, self.database, self.collection)
                    if name is None:
                        return None
                    self._table = f"{quote(self.database)}.{quote(name)}"
                rows: list[Any] = await conn.fetch(
                    f"SELECT {columns} FROM {self._table} WHERE (_jsonb -> '_id') = ANY($1::jsonb[])",
                    [json.dumps(i) for i in wanted],
                    timeout=self.timeout_s,
                )
        except POSTGRES_FAILURES as exc:
            log.debug("FerretDB's table not asked: %s: %s", type(exc).__name__, exc)
            return None
        return rows

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
