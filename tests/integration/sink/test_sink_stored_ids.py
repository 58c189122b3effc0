"""On FerretDB-on-PostgreSQL the sink asks which ``_id`` s of a batch are stored before it inserts
(``sink.ferretdb.StoredIds``): FerretDB 1.24 inserts a chunk that holds one duplicate document by
document, each in its own transaction, and a restarted sink's batches are mostly duplicates (the
hour soak of 2026-12-07: ~108 000 records committed in 35 minutes at 1 000 events/s, the sink
re-reading abandoned batches after each rebalance). Real FerretDB and PostgreSQL of the stack."""

from __future__ import annotations

import asyncio
import contextlib
import os
from datetime import UTC, datetime
from typing import Any

import pytest
from bson.raw_bson import RawBSONDocument
from eventgen.samples import bridged_events as make_events
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo import AsyncMongoClient, MongoClient
from pymongo.errors import BulkWriteError
from sink.documents import IngestStamp, build_document
from sink.ferretdb import StoredIds
from sink.mongo import InsertOutcome, MongoWriter
from sink.settings import SinkSettings
from sink.writes import WallClock, write_documents

from infra.stack import ferretdb_postgresql_url
from tests.integration.sink.helpers import TEST_DATABASE
from tests.support.bson_values import KEY, VALUES

pytestmark = pytest.mark.timeout(120)


def writer_for(mongodb_uri: str, collection: str, *, ask_first: bool) -> MongoWriter:
    url = ferretdb_postgresql_url(dict(os.environ)) if ask_first else None
    return MongoWriter(
        SinkSettings(mongodb_uri=mongodb_uri, mongodb_database=TEST_DATABASE, mongodb_collection=collection, ferretdb_postgresql_url=url)
    )


async def test_stored_documents_are_duplicates_without_being_sent_and_the_outcome_is_the_plain_inserts(
    mongodb_uri: str, unique_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    stamp = IngestStamp.at(datetime.now(UTC))
    docs = [build_document(e, stamp) for e in make_events(60, seed=28)]
    first, second = docs[:30], docs[15:45] + docs[45:60]  # second: 15 stored (its indices 0..14), 30 new
    outcomes: dict[bool, InsertOutcome] = {}
    sent: dict[bool, list[list[Any]]] = {}
    for ask_first in (True, False):
        collection = f"{unique_name}_{'asked' if ask_first else 'plain'}"
        writer = writer_for(mongodb_uri, collection, ask_first=ask_first)
        await writer.prepare()
        try:
            assert (writer.stored_ids is not None) is ask_first
            assert (await writer.insert([dict(d) for d in first])).inserted == 30
            real = writer.collection.insert_many
            sent[ask_first] = []

            async def spy(batch: list[dict[str, Any]], real: Any = real, log: list[list[Any]] = sent[ask_first], **kw: Any) -> Any:
                log.append([d["_id"] for d in batch])
                return await real(batch, **kw)

            monkeypatch.setattr(writer.collection, "insert_many", spy)
            outcomes[ask_first] = await writer.insert([dict(d) for d in second])
            client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri)
            try:
                stored = sorted(d["_id"] for d in await client[TEST_DATABASE][collection].find({}, {"_id": 1}).to_list())
                await client[TEST_DATABASE].drop_collection(collection)
            finally:
                await client.close()
            assert stored == sorted(d["_id"] for d in docs)
        finally:
            await writer.close()
    new_ids = [d["_id"] for d in docs[30:60]]
    assert sent[True] == [new_ids]  # asked first: only the new documents went to insert_many
    assert sent[False] == [[d["_id"] for d in second]]  # FerretDB alone: all of them, one by one inside
    for outcome in outcomes.values():
        assert (outcome.inserted, outcome.duplicates, outcome.retry, outcome.resend) == (30, list(range(15)), [], [])
        assert (outcome.refused, outcome.uncertain) == ({}, {})


# ---- the duplicate check's stored copies, read from FerretDB's table: byte for byte FerretDB's

DOCUMENTS = st.lists(st.dictionaries(KEY, VALUES, max_size=6), min_size=1, max_size=10)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(bodies=DOCUMENTS)
def test_stored_copies_read_from_the_table_are_ferretdbs_bytes(mongodb_uri: str, unique_name: str, bodies: list[dict[str, Any]]) -> None:
    docs = [{"_id": f"e{i}", **{k: v for k, v in body.items() if k != "_id"}} for i, body in enumerate(bodies)]
    client: MongoClient[Any] = MongoClient(mongodb_uri, document_class=RawBSONDocument)
    collection = client[TEST_DATABASE][unique_name]
    try:
        collection.delete_many({})
        with contextlib.suppress(BulkWriteError):  # what FerretDB refuses (e.g. nested arrays) is not stored
            collection.insert_many(docs, ordered=False)
        through_ferretdb = {d["_id"]: bytes(d.raw) for d in collection.find({})}

        async def read() -> dict[str, RawBSONDocument] | None:
            reader = StoredIds(ferretdb_postgresql_url(dict(os.environ)), TEST_DATABASE, unique_name)
            try:
                return await reader.documents([d["_id"] for d in docs] + ["absent"])
            finally:
                await reader.close()

        from_table = asyncio.run(read())
        assert from_table is not None
        # every stored document comes back, as the same bytes FerretDB sends (types, order, nesting)
        assert {i: bytes(d.raw) for i, d in from_table.items()} == through_ferretdb
    finally:
        collection.drop()
        client.close()


async def test_a_batch_of_equal_duplicates_is_judged_from_the_table_and_a_conflict_still_through_ferretdb(
    mongodb_uri: str, unique_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    stamp = IngestStamp.at(datetime.now(UTC))
    docs = [build_document(e, stamp) for e in make_events(40, seed=29)]
    writer = writer_for(mongodb_uri, unique_name, ask_first=True)
    await writer.prepare()
    try:
        assert (await writer.insert([dict(d) for d in docs])).inserted == 40
        through_server: list[list[Any]] = []
        real = writer._stored_through_server

        async def spy(ids: Any, bound_s: Any) -> Any:
            through_server.append(list(ids))
            return await real(ids, bound_s)

        monkeypatch.setattr(writer, "_stored_through_server", spy)
        again = [dict(d, ingested_at="2030-01-01T00:00:00.000Z") for d in docs]  # a redelivery: delivery fields differ
        changed = dict(docs[7], product_id="something else")  # the same _id with other content: a conflict
        again[7] = changed
        result = await write_documents(writer, again, attempts=WallClock())
        assert sorted(result.duplicates) == [i for i in range(40) if i != 7]
        assert list(result.conflicts) == [7] and result.inserted == []
        assert through_server == [[docs[7]["_id"]]]  # only the differing one was read through FerretDB
    finally:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri)
        await client[TEST_DATABASE].drop_collection(unique_name)
        await client.close()
        await writer.close()
