"""On FerretDB-on-PostgreSQL the sink asks which ``_id`` s of a batch are stored before it inserts
(``sink.ferretdb.StoredIds``): FerretDB 1.24 inserts a chunk that holds one duplicate document by
document, each in its own transaction, and a restarted sink's batches are mostly duplicates (the
hour soak of 2026-12-07: ~108 000 records committed in 35 minutes at 1 000 events/s, the sink
re-reading abandoned batches after each rebalance). Real FerretDB and PostgreSQL of the stack."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import pytest
from eventgen.samples import bridged_events as make_events
from pymongo import AsyncMongoClient
from sink.documents import IngestStamp, build_document
from sink.mongo import InsertOutcome, MongoWriter
from sink.settings import SinkSettings

from infra.stack import ferretdb_postgresql_url
from tests.integration.sink.helpers import TEST_DATABASE

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
