"""The ETL's direct read of FerretDB's PostgreSQL table (:mod:`etl_api.ferretdb_rows`) gives the
same documents and the same rows as reading through FerretDB with PyMongo, whatever the stored
values: generated documents of every BSON type FerretDB accepts, in the fields a row reads and
beside them, nested, and with ``ingested_at`` values inside, outside and unlike the window."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

from etl_api.extract import RAW_FIELDS, READ_PROJECTION, ReadTask, read_task
from etl_api.ferretdb import ensure_read_indexes
from etl_api.ferretdb_rows import any_document_sql, read_tasks_sql
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo.errors import BulkWriteError

from tests.integration.etl.test_ferretdb_read_index import ferretdb_pg_url
from tests.support.bson_values import VALUES

WINDOW_LOW = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)
SECOND = "2026-12-01T10:00:05"
INGESTED = st.one_of(
    st.integers(0, 10_000).map(lambda ms: (WINDOW_LOW + timedelta(milliseconds=ms)).isoformat()),  # inside and past the window
    st.sampled_from(["not a time", "2026-12-01T10:00:05", ""]),
    VALUES,
)


@st.composite
def documents(draw: Any) -> list[dict[str, Any]]:
    docs = []
    for i in range(draw(st.integers(1, 12))):
        doc: dict[str, Any] = {"_id": f"doc-{i}", "collection": "view_product_detail", "ingest_second": SECOND, "part": i % 16}
        doc["ingested_at"] = draw(INGESTED)
        for name in RAW_FIELDS[2:]:
            if name not in ("ingested_at", "ingest_hour") and draw(st.booleans()):
                doc[name] = draw(VALUES)
        doc.update(draw(st.dictionaries(st.sampled_from(["option", "extra", "ip"]), VALUES, max_size=2)))
        docs.append(doc)
    return docs


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(docs=documents())
def test_direct_read_equals_the_ferretdb_read(mongo_collection: Any, mongodb_uri: str, postgres_dsn: str, docs: list[Any]) -> None:
    mongo_collection.delete_many({})
    with contextlib.suppress(BulkWriteError):  # what FerretDB refuses (e.g. nested arrays) is not stored, so never read
        mongo_collection.insert_many(docs, ordered=False)
    url = ferretdb_pg_url(postgres_dsn)
    db, coll = mongo_collection.database.name, mongo_collection.name
    asyncio.run(ensure_read_indexes(url, db, coll))
    task = ReadTask(
        {"collection": "view_product_detail"},
        WINDOW_LOW.isoformat(),
        (WINDOW_LOW + timedelta(seconds=6)).isoformat(),
        seconds=("2026-12-01T10:00:04", SECOND),
    )

    through_ferretdb = sorted(read_task(task, mongodb_uri, db, coll), key=str)
    direct = sorted(read_tasks_sql([task], url, mongodb_uri, db, coll, batch_size=3), key=str)

    assert direct == through_ferretdb
    assert any_document_sql([task], url, mongodb_uri, db, coll) is bool(through_ferretdb)
    # every field decoded as PyMongo decodes it, not only the row's text
    from etl_api.ferretdb_rows import _pymongo_types, decode_document

    stored = {d["_id"]: d for d in mongo_collection.find({}, READ_PROJECTION)}
    decoded = {}
    for text in _stored_texts(url, db, coll):
        doc = decode_document(text, _pymongo_types(), frozenset({"_id", *READ_PROJECTION}))
        decoded[doc["_id"]] = doc
    assert decoded == stored


def _stored_texts(url: str, db: str, coll: str) -> list[str]:
    from etl_api.ferretdb_rows import _Reader

    with _Reader(url, db, coll) as reader:
        table = reader.table()
        assert table is not None
        return list(reader.texts(table, {}, 100))
