"""Reading raw documents straight from FerretDB's PostgreSQL table (the local stand-in only).

FerretDB 1.24 serves a ``find`` by reading the table's ``jsonb`` rows, converting each to BSON
and sending it over the wire, where PyMongo decodes it again. ``bench/ferretdb_read.py`` reads
the same 16 998 new documents both ways, second by second as the continuous worker does: 2 810
documents/s through FerretDB, 12 133/s from its table decoded here (4.3x on a quiet machine;
about 11x while the pipeline's own traffic loads it). Under 2 000 events/s of traffic that
conversion was the continuous worker's bound.

So with ``ETL_FERRETDB_POSTGRESQL_URL`` set, a read task runs the **same equality conditions
FerretDB itself pushes down** (``_jsonb -> 'f' @> v``: MongoDB's equality for the scalars and
arrays a raw document can hold, served by the GIN indexes of :mod:`etl_api.ferretdb`) and
decodes FerretDB's storage format (its "sjson": every document carries its own type schema
under ``$s``; :mod:`shared.ferretdb_sjson`) into the values PyMongo would have returned: ``str``, ``int``, ``float``,
``bool``, ``None``, naive UTC ``datetime``, ``ObjectId``, ``bytes``/``Binary``, ``Regex``,
``Timestamp``, ``dict`` and ``list``. The rows are then built by the same
:func:`etl_api.extract.document_to_row` and filtered by the same
:func:`etl_api.extract.keep_document`, so both reads give the same rows (a property test
inserts generated documents through FerretDB and compares them).

A document whose stored form this module does not know (a type FerretDB may add later) is read
through FerretDB instead, by its ``_id``: slower, never wrong. With MongoDB none of this
applies: leave ``ETL_FERRETDB_POSTGRESQL_URL`` unset.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Generator, Iterable, Iterator
from typing import Any

from etl_api.extract import READ_PROJECTION, ReadTask, document_to_row, keep_document, parse_utc, task_queries
from shared.ferretdb_sjson import BsonTypes, UnknownStoredType, decode_document, stored_id


def _pymongo_types() -> BsonTypes:
    """PyMongo's default decoding: what a ``find`` through FerretDB returns (a regex's flags as an int)."""
    from bson import Binary, Int64, ObjectId, Regex, Timestamp
    from bson.datetime_ms import DatetimeMS

    return BsonTypes(
        object_id=ObjectId,
        binary=Binary,
        regex=lambda pattern, options: Regex(pattern, int(Regex(pattern, options).flags)),
        timestamp=Timestamp,
        int64=Int64,
        date_ms=DatetimeMS,
    )


_FIELD = re.compile(r"^[a-z_][a-z0-9_]*$")
# only what a row needs is decoded (READ_PROJECTION, as the FerretDB read asks for)
_READ_FIELDS = frozenset({"_id", *READ_PROJECTION})


def where_clause(query: dict[str, Any], first_param: int = 1) -> tuple[str, list[str]]:
    """FerretDB's own pushdown of an equality filter: ``(_jsonb -> 'f') @> $n::jsonb`` per field
    (the field names are ours, checked; the values are parameters)."""
    parts, params = [], []
    for i, (name, value) in enumerate(sorted(query.items()), start=first_param):
        if not _FIELD.match(name):
            raise ValueError(f"not a plain field name: {name!r}")
        parts.append(f"(_jsonb -> '{name}') @> ${i}::jsonb")
        params.append(json.dumps(value))
    return (" AND ".join(parts) or "TRUE"), params


class _Reader:
    """One PostgreSQL connection on a private event loop: the executor's code is synchronous."""

    def __init__(self, postgresql_url: str, database: str, collection: str) -> None:
        self.url, self.database, self.collection = postgresql_url, database, collection
        self.loop = asyncio.new_event_loop()
        self.conn: Any = None

    def __enter__(self) -> _Reader:
        import asyncpg

        self.conn = self.loop.run_until_complete(asyncpg.connect(self.url, timeout=30))
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.conn is not None:
                self.loop.run_until_complete(self.conn.close())
        finally:
            self.loop.close()

    def table(self) -> str | None:
        from shared.ferretdb import collection_table, quote

        name = self.loop.run_until_complete(collection_table(self.conn, self.database, self.collection))
        return None if name is None else f"{quote(self.database)}.{quote(name)}"

    def texts(self, table: str, query: dict[str, Any], batch_size: int) -> Iterator[str]:
        """The stored documents matching ``query``, through a server-side cursor."""
        where, params = where_clause(query)
        run = self.loop.run_until_complete
        tx = self.conn.transaction(readonly=True)
        run(tx.start())
        try:
            cursor = run(self.conn.cursor(f"SELECT _jsonb::text FROM {table} WHERE {where}", *params))
            while rows := run(cursor.fetch(batch_size)):
                for row in rows:
                    yield row[0]
        finally:
            run(tx.rollback())


def read_tasks_sql(
    tasks: Iterable[ReadTask], postgresql_url: str, mongodb_uri: str, database: str, collection: str, batch_size: int = 2000
) -> Generator[tuple[str | None, ...], None, None]:
    """:func:`etl_api.extract.read_task` for each task, read from FerretDB's table on one
    connection (runs on a Spark executor, one task per partition; or in the driver for the
    continuous worker's probe, :func:`any_document_sql`)."""
    fallback: Any = None
    types = _pymongo_types()
    try:
        with _Reader(postgresql_url, database, collection) as reader:
            table = reader.table()
            if table is None:
                return
            for task in tasks:
                after = parse_utc(task.ingested_after) if task.ingested_after else None
                until = parse_utc(task.ingested_until) if task.ingested_until else None
                covered = {d: parse_utc(at) for d, at in task.covered_until.items()}
                for query in task_queries(task):
                    for text in reader.texts(table, query, batch_size):
                        try:
                            doc = decode_document(text, types, _READ_FIELDS)
                        except UnknownStoredType:
                            fallback = fallback or _ferretdb_client(mongodb_uri)
                            doc = fallback[database][collection].find_one({"_id": stored_id(text, types)}, READ_PROJECTION)
                            if doc is None:  # deleted since: as a FerretDB read after the delete
                                continue
                        if keep_document(doc, task, after, until, covered):
                            yield document_to_row(doc)
    finally:
        if fallback is not None:
            fallback.close()


def any_document_sql(tasks: Iterable[ReadTask], postgresql_url: str, mongodb_uri: str, database: str, collection: str) -> bool:
    """:func:`etl_api.extract.any_document`, read from FerretDB's table (first match wins)."""
    with contextlib.closing(read_tasks_sql(tasks, postgresql_url, mongodb_uri, database, collection, batch_size=200)) as rows:
        return next(rows, None) is not None


def _ferretdb_client(mongodb_uri: str) -> Any:
    from pymongo import MongoClient

    return MongoClient(mongodb_uri, serverSelectionTimeoutMS=30_000)
