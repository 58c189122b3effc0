"""Cross-hop reconciliation of the raw store against the star schema (issue 15), on the real
FerretDB: a document that becomes visible after the incremental run that read its hour is
reported by ``GET /reconciliation`` (its hour ``late``, with the exact difference per date) and
healed by the next incremental run; afterwards the star equals an independent computation over
every document, and the report agrees. A document deleted from the raw store after it was counted
is reported ``missing`` and never healed.

How a document becomes late-visible: while a run executes, the test holds a ``SHARE`` lock on the
collection's PostgreSQL table (FerretDB's backing store), which blocks inserts but not reads; an
insert of documents already stamped (``ingested_at``) before the run's window high waits behind it
and lands after the run committed — as an insert the sink gave up on lands late on FerretDB,
which ignores ``maxTimeMS`` on inserts."""

from __future__ import annotations

import asyncio
import os
import random
import threading
from collections import Counter
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
from etl_api import ferretdb

from tests.integration.etl.helpers import expected_star, is_valid_view, make_events
from tests.integration.etl.test_star_schema import assert_star_equals, insert, run_ok, star_rows
from tests.support.exclusive import async_exclusive_section

V = "view_product_detail"


def hour_of(doc: dict[str, Any]) -> str:
    return doc["ingest_hour"]


async def report(client: Any, **params: str) -> dict[str, Any]:
    r = await client.get("/reconciliation", params=params)
    assert r.status_code == 200, r.text
    return r.json()


# Holds a lock on a table of FerretDB's database for a whole run: the insert queued behind it keeps a
# snapshot open, and every CREATE INDEX CONCURRENTLY in that database (sinks and ETL runs starting) waits.
# That part (run2) runs alone (an exclusive section); run1, run3 and the reports beside other tests.
async def test_late_visible_documents_are_reported_then_healed(make_service, mongo_collection, pg, postgres_dsn, unique_name) -> None:
    d1, d2, d3 = date(2021, 3, 1), date(2021, 3, 2), date(2021, 3, 3)
    batch1 = make_events(random.Random(51), 200, [d1, d2], datetime.now(UTC))
    insert(mongo_collection, batch1)
    schema = unique_name.lower()
    svc = make_service(schema)
    await asyncio.sleep(1.2)
    async with svc.client() as client:
        run1 = await run_ok(client)  # the first run reads everything: the ledger covers every hour
        rep1 = await report(client)
        assert rep1["ok"] is True and rep1["disagreeing_hours"] == [], rep1
        assert rep1["ledger_covers_from"] == "1970-01-01T00:00:00+00:00"
        by_hour = Counter(hour_of(d.doc) for d in batch1 if d.doc["collection"] == V)
        checked = {h["ingest_hour"]: h for h in rep1["hours"] if h["mongodb"] is not None}
        assert {h: c["mongodb"] for h, c in checked.items() if c["mongodb"]} == dict(by_hour)
        assert all(c["accounted"] == c["mongodb"] and c["status"] == "ok" for c in checked.values())

        # documents stamped now (after run1's window), whose insert waits behind a lock until run2 committed
        late = make_events(random.Random(52), 60, [d1, d3], datetime.now(UTC), devices=30)
        ferretdb_url = postgres_dsn.rsplit("/", 1)[0] + "/ferretdb"
        # the read index every incremental run ensures: built now, as a CONCURRENTLY build would wait for the lock
        assert await ferretdb.ensure_read_indexes(ferretdb_url, mongo_collection.database.name, mongo_collection.name)
        # the lock stalls every CREATE INDEX CONCURRENTLY in FerretDB's database: this part runs alone
        async with async_exclusive_section():
            fdb = await asyncpg.connect(ferretdb_url)
            inserted = threading.Event()
            lock = fdb.transaction()
            try:
                table = await ferretdb.collection_table(fdb, mongo_collection.database.name, mongo_collection.name)
                assert table is not None
                await lock.start()
                await fdb.execute(f'LOCK TABLE "{mongo_collection.database.name}"."{table}" IN SHARE MODE')
                writer = threading.Thread(target=lambda: (insert(mongo_collection, late), inserted.set()), daemon=True)
                writer.start()
                await asyncio.sleep(1.5)  # past the settle margin (1 s): the stamps are inside run2's window
                run2 = await run_ok(client)
                assert not inserted.is_set(), "the insert was not held back: the test proves nothing"
                assert run2["reconciliation"]["events_read"] == 0 and run2["reconciliation"]["healed_dates"] == []
                assert datetime.fromisoformat(run2["window_high"]) > max(datetime.fromisoformat(d.doc["ingested_at"]) for d in late)
            finally:
                await fdb.close()  # ends the lock's transaction: the held-back insert lands now
            await asyncio.to_thread(inserted.wait, 60)
            assert inserted.is_set()

        # the report names the hour, with the exact difference per event date (independent counts)
        rep2 = await report(client)
        late_views = [d for d in late if d.doc["collection"] == V]
        late_hours = sorted({hour_of(d.doc) for d in late_views})
        assert rep2["ok"] is False and rep2["disagreeing_hours"] == late_hours, rep2
        for h in rep2["hours"]:
            if h["ingest_hour"] in late_hours:
                per_date = Counter(d.doc["event_date"] for d in late_views if hour_of(d.doc) == h["ingest_hour"])
                assert h["status"] == "late"
                assert {x["event_date"]: x["difference"] for x in h["dates"]} == dict(per_date)
                assert h["difference"] == sum(per_date.values())

        # the next incremental run heals it: the late documents' dates are recomputed from all their events
        run3 = await run_ok(client)
        assert run3["reconciliation"]["healed_dates"] == sorted({d.doc["event_date"] for d in late_views})
        rep3 = await report(client)
        assert rep3["ok"] is True and rep3["disagreeing_hours"] == [], rep3

    rows = await star_rows(pg, schema)
    every = batch1 + late
    assert_star_equals(rows, expected_star(every), {run1["run_id"], run3["run_id"]})
    valid_in_mongo = sum(1 for doc in mongo_collection.find({}) if is_valid_view(doc))
    assert sum(r["view_count"] for r in rows["facts"]) == valid_in_mongo == expected_star(every)["valid"]


async def test_a_deleted_document_is_reported_missing_and_never_healed(make_service, mongo_collection, unique_name) -> None:
    batch = make_events(random.Random(61), 80, [date(2021, 4, 1)], datetime.now(UTC))
    insert(mongo_collection, batch)
    svc = make_service(unique_name.lower())
    await asyncio.sleep(1.2)
    async with svc.client() as client:
        await run_ok(client)
        gone = next(d.doc for d in batch if d.doc["collection"] == V)
        n = sum(
            1
            for d in batch
            if d.doc["collection"] == V and (d.doc["ingest_hour"], d.doc["event_date"]) == (gone["ingest_hour"], gone["event_date"])
        )
        assert mongo_collection.delete_one({"_id": gone["_id"]}).deleted_count == 1
        rep = await report(client)
        assert rep["disagreeing_hours"] == [gone["ingest_hour"]]
        (hour,) = [h for h in rep["hours"] if h["ingest_hour"] == gone["ingest_hour"]]
        assert hour["status"] == "missing" and hour["dates"] == [
            {"event_date": gone["event_date"], "mongodb": n - 1, "accounted": n, "difference": -1}
        ]
        await asyncio.sleep(1.2)
        run = await run_ok(client)
        assert run["reconciliation"]["healed_dates"] == []
        assert (await report(client))["disagreeing_hours"] == [gone["ingest_hour"]]
        # a span is checked: bad parameters are refused with the reason
        r = await client.get("/reconciliation", params={"from": "yesterday"})
        assert r.status_code == 422 and "from" in r.text
        r = await client.get("/reconciliation", params={"from": "2021-01-02T00", "to": "2021-01-01T00"})
        assert r.status_code == 422


async def test_both_raw_store_counts_equal_an_independent_count(mongo_collection, postgres_dsn) -> None:
    """The two ways the report counts the raw store — MongoDB's wire protocol, and SQL on FerretDB's
    own table for whole hours — give the same per-(hour, date) counts as plain Python over the
    documents, for hours before the bound and for the hour holding it (only documents at or before it)."""
    from datetime import timedelta

    from etl_api import ledger

    now = datetime.now(UTC)
    bound = now - timedelta(minutes=1)
    docs = []
    for k, at in enumerate((now - timedelta(hours=3), now - timedelta(hours=2), bound - timedelta(seconds=5), now)):
        docs += make_events(random.Random(70 + k), 40, [date(2021, 5, 1), date(2021, 5, 2)], at)
    insert(mongo_collection, docs)
    ferretdb_url = postgres_dsn.rsplit("/", 1)[0] + "/ferretdb"
    assert await ferretdb.ensure_read_indexes(ferretdb_url, mongo_collection.database.name, mongo_collection.name)
    hours = sorted({d.doc["ingest_hour"] for d in docs} | {ledger.hour_of(now + timedelta(hours=1))})
    expected: dict[str, Counter] = {}
    for d in docs:
        if d.doc["collection"] == V and datetime.fromisoformat(d.doc["ingested_at"]) <= bound:
            expected.setdefault(d.doc["ingest_hour"], Counter())[d.doc["event_date"]] += 1
    for h in hours:
        if ledger.hour_start(h) <= bound:
            expected.setdefault(h, Counter())
    want = {h: dict(c) for h, c in expected.items()}
    name, db = mongo_collection.name, mongo_collection.database.name
    wire = ledger.raw_store_counter(os.environ["MONGODB_URI"], db, name)
    sql = ledger.raw_store_counter(os.environ["MONGODB_URI"], db, name, ferretdb_url)
    assert await wire((V,), hours, bound) == want
    assert await sql((V,), hours, bound) == want
    whole = [h for h in hours if ledger.hour_start(h) + timedelta(hours=1) <= bound]
    assert len(whole) >= 2 and await ledger.count_ferretdb_hours(ferretdb_url, db, name, (V,), whole) == {h: want[h] for h in whole}


async def test_documents_by_remote_partition_both_ways_equal_an_independent_count(mongo_collection, postgres_dsn) -> None:
    """GET /reconciliation/kafka's store count (etl_api.hops.documents_by_source), by the wire
    protocol and by SQL on FerretDB's table, equals plain Python; documents without usable source
    coordinates (no topic, a text or boolean partition) are counted under no partition."""
    from etl_api import hops

    rng = random.Random(81)
    docs: list[dict] = []
    for i in range(600):
        doc = {"_id": f"e{i}", "source_topic": rng.choice(["a", "b.c"]), "source_partition": rng.randrange(4), "source_offset": i}
        kind = rng.randrange(20)
        if kind == 0:
            del doc["source_topic"]
        elif kind == 1:
            doc["source_partition"] = str(doc["source_partition"])
        elif kind == 2:
            doc["source_partition"] = True
        docs.append(doc)
    mongo_collection.insert_many(docs)
    want = Counter(
        (d["source_topic"], d["source_partition"])
        for d in docs
        if "source_topic" in d and type(d["source_partition"]) is int  # bool is not a partition
    )
    ferretdb_url = postgres_dsn.rsplit("/", 1)[0] + "/ferretdb"
    name, db = mongo_collection.name, mongo_collection.database.name
    assert await hops.documents_by_source(os.environ["MONGODB_URI"], db, name, None) == dict(want)
    assert await hops.documents_by_source(os.environ["MONGODB_URI"], db, name, ferretdb_url) == dict(want)
    assert await hops._ferretdb_documents_by_source(ferretdb_url, db, name) == dict(want)  # the SQL path itself, not a fallback
