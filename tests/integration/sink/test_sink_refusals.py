"""The store refuses a document vs the store is down (issue 14), against the real FerretDB 1.24.2
on PostgreSQL.

- a NUL in a string value (valid JSON, valid for MongoDB) makes FerretDB on PostgreSQL refuse the
  whole ``insert_many`` (code 1, SQLSTATE 22P05): the sink bisects, dead-letters exactly that
  record (stage ``sink.write``, the server's code and message), writes the rest, moves on;
- the same ``event_id`` with other content is dead-lettered (``sink.conflict``), the stored one
  kept; the same event redelivered (only delivery fields differ) is a silent duplicate;
- FerretDB, or its PostgreSQL, going away in the middle of a bisection is an outage: waited
  for, never a reason to refuse or conflict a valid event.

Expected values come from the events themselves (``helpers.expected_document``), not from the
code under test.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from eventgen.samples import bridged_events as make_events
from pymongo import AsyncMongoClient
from pymongo.errors import OperationFailure
from sink.documents import IngestStamp, build_document
from sink.ledger import SinkLedger
from sink.mongo import InsertOutcome, MongoUnavailableError, MongoWriter
from sink.settings import SinkSettings
from sink.writes import write_documents

from shared.dlq import read_dead_letter_headers
from shared.errors import is_retriable
from shared.hops import SINK_LEDGER_COLLECTION, SinkTally
from shared.kafka import KafkaConnection
from tests.integration.sink.conftest import SinkNames
from tests.integration.sink.helpers import (
    ISO_MS,
    TEST_DATABASE,
    SinkProcess,
    check_documents,
    committed_offsets,
    encode,
    expected_document,
    produce,
    read_topic,
    stored_documents,
    wait_until,
)
from tests.support.ferretdb import ProxiedPgFerretDB

StartSink = Callable[[str, dict[str, str]], SinkProcess]


def caught_up(sink: SinkProcess) -> bool:
    status, body = sink.json("/lag")
    return status == 200 and body["caught_up"]


async def wait_caught_up(sink: SinkProcess, timeout: float) -> None:
    try:
        await wait_until("the sink to catch up (/lag)", lambda: sink.alive() and caught_up(sink), timeout)
    except AssertionError:
        print(sink.log_tail(80))
        raise


async def end_offsets(conn: KafkaConnection, topic: str) -> dict[int, int]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(**conn.client_kwargs(), isolation_level="read_committed")
    await consumer.start()
    try:
        await consumer.topics()
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        return {tp.partition: o for tp, o in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()


@pytest.mark.timeout(240)
async def test_a_nul_record_between_valid_ones_is_dead_lettered_and_the_sink_keeps_going(
    names: SinkNames, local_kafka: KafkaConnection, mongodb_uri: str, sinks: StartSink
) -> None:
    events = make_events(1500, seed=14)
    nul_events = [dict(events[400], key_search="bague\x00fiançailles"), dict(events[1100], email_address="\x00")]
    nul_ids = {e["event_id"] for e in nul_events}
    valid = [e for e in events if e["event_id"] not in nul_ids]
    stream = [nul_events[0] if e["event_id"] == events[400]["event_id"] else e for e in events]
    stream = [nul_events[1] if e["event_id"] == events[1100]["event_id"] else e for e in stream]
    values = encode(stream)
    assert b"\\u0000" in values[400] and b"\\u0000" in values[1100]  # what a JSON producer sends

    sink = sinks("sink", names.env(SINK_MAX_BATCH_EVENTS="500"))
    await wait_until("/ready", lambda: sink.get("/ready")[0] == 200, 90)
    await produce(local_kafka, names.topic, values)
    await wait_caught_up(sink, 150)

    check_documents(await stored_documents(mongodb_uri, names.collection), valid)
    dead = await read_topic(local_kafka, names.dlq, expected=2)
    assert len(dead) == 2
    by_value = {r.value: r for r in dead}
    assert set(by_value) == {values[400], values[1100]}  # the original bytes
    for record in dead:
        h = read_dead_letter_headers(record.headers)
        assert h["dlq.stage"] == "sink.write"
        assert h["dlq.error.class"] == "InternalError"
        assert h["dlq.error.code"] == "1"  # FerretDB's code for PostgreSQL's error
        assert h["dlq.error.message"].startswith("code 1 (InternalError): ")
        assert "unsupported Unicode escape sequence (SQLSTATE 22P05)" in h["dlq.error.message"]
        assert h["dlq.source.topic"] == names.topic
    m = sink.metrics()
    assert m["sink_consumed_records_total"] == 1500
    assert m["sink_written_documents_total"] == 1498
    assert m["sink_duplicate_documents_total"] == 0
    assert m['pipeline_dead_lettered_records_total{hop="sink",stage="sink.write"}'] == 2
    assert m.get("sink_conflicting_duplicate_documents_total", 0) == 0
    assert sink.get("/ready")[0] == 200
    # Offsets committed to the end: nothing is read again.
    assert await committed_offsets(local_kafka, names.topic, names.group) == await end_offsets(local_kafka, names.topic)
    rc, took = sink.terminate()
    assert rc == 0 and took < 10


@pytest.mark.timeout(240)
async def test_a_conflicting_duplicate_is_dead_lettered_and_an_identical_redelivery_is_not(
    names: SinkNames, local_kafka: KafkaConnection, mongodb_uri: str, sinks: StartSink
) -> None:
    events = make_events(300, seed=15)
    sink = sinks("sink", names.env())
    await wait_until("/ready", lambda: sink.get("/ready")[0] == 200, 90)
    await produce(local_kafka, names.topic, encode(events))
    await wait_caught_up(sink, 120)
    before = await stored_documents(mongodb_uri, names.collection)
    check_documents(before, events)

    # Same event again, copied by another bridge run: only the delivery fields differ.
    same = dict(events[10], source_partition=2, source_offset=987_654, bridged_at="2026-12-02T10:00:00.000Z")
    # Same event_id, other content: an int where a string was, and a changed value.
    other = dict(events[20], product_id=int(events[20]["product_id"]), store_id="999", bridged_at="2026-12-02T10:00:00.000Z")
    # Type-exact: 1 (int) was stored where the new one says 1.0 (double), deep inside.
    assert events[34]["cart_products"][0]["product_id"] == 1
    retyped = dict(events[34], cart_products=[{"product_id": 1.0, "amount": 2, "price": "296.00", "currency": "CHF", "option": []}])
    redelivered = [same, other, retyped]
    await produce(local_kafka, names.topic, encode(redelivered))
    await wait_caught_up(sink, 120)

    after = await stored_documents(mongodb_uri, names.collection)
    assert after == before  # the stored ones kept, byte for byte in content and stamp
    dead = await read_topic(local_kafka, names.dlq, expected=2)
    conflicting = [other, retyped]
    assert sorted(r.value for r in dead) == sorted(encode(conflicting))
    for record in dead:
        h = read_dead_letter_headers(record.headers)
        assert (h["dlq.stage"], h["dlq.error.class"]) == ("sink.conflict", "ConflictingDuplicate")
        event_id = orjson.loads(record.value)["event_id"]
        assert f"(ingested_at {before[event_id]['ingested_at']})" in h["dlq.error.message"]
        assert "the stored one is kept" in h["dlq.error.message"]
        assert "dlq.error.code" not in h
    m = sink.metrics()
    assert m["sink_duplicate_documents_total"] == 1
    assert m["sink_conflicting_duplicate_documents_total"] == len(conflicting)
    assert m['pipeline_dead_lettered_records_total{hop="sink",stage="sink.conflict"}'] == len(conflicting)
    assert m["sink_written_documents_total"] == 300


# ---------------------------------------------------------------------- outage during a bisection


@pytest.fixture
async def pg_ferretdb(tmp_path: Path, postgres_dsn: str) -> AsyncIterator[ProxiedPgFerretDB]:
    db = ProxiedPgFerretDB(tmp_path, postgres_dsn)
    db.start_proxy()
    db.start_ferretdb()
    yield db
    if db.proxy is None:
        db.start_proxy()
    if db.ferretdb is None:
        db.start_ferretdb()
    db.stop()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("what_goes_down", ["ferretdb", "postgresql"])
async def test_an_outage_during_a_bisection_refuses_only_the_bad_document(pg_ferretdb: ProxiedPgFerretDB, what_goes_down: str) -> None:
    database = f"sink_refusals_{uuid.uuid4().hex[:8]}"
    settings = SinkSettings(
        mongodb_uri=pg_ferretdb.uri, mongodb_database=database, mongodb_collection="c", mongodb_timeout_ms=2000, write_attempt_timeout_s=10
    )
    writer = MongoWriter(settings)
    await writer.prepare()
    events = make_events(2000, seed=16)
    bad = 1234
    events[bad] = dict(events[bad], key_search="a\x00b")
    stamp = IngestStamp.at(datetime.now(UTC))
    docs = [build_document(e, stamp) for e in events]

    real_insert = writer.insert
    calls: list[int] = []
    outages: list[str] = []

    async def insert(batch: list[dict[str, Any]]) -> InsertOutcome:
        calls.append(len(batch))
        if len(calls) == 4:  # inside the bisection (2000 ✗, 1000 ✓, 1000 ✗, then this one)
            if what_goes_down == "ferretdb":
                await asyncio.to_thread(pg_ferretdb.stop_ferretdb)
            else:
                await asyncio.to_thread(pg_ferretdb.stop_proxy)
        return await real_insert(batch)

    async def on_unavailable(exc: Exception) -> None:
        outages.append(f"{type(exc).__name__}: {exc}")
        if len(outages) == 3:  # down for three attempts, then back
            if what_goes_down == "ferretdb":
                await asyncio.to_thread(pg_ferretdb.start_ferretdb)
            else:
                await asyncio.to_thread(pg_ferretdb.start_proxy)
        await asyncio.sleep(0.5)

    writer.insert = insert  # type: ignore[method-assign]
    try:
        result = await write_documents(writer, docs, max_attempts=3, on_unavailable=on_unavailable)
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(pg_ferretdb.uri)
        try:
            stored = {d["_id"]: d async for d in client[database]["c"].find({})}
        finally:
            await client.drop_database(database)
            await client.close()
    finally:
        await writer.close()

    print(f"{what_goes_down} down: {len(calls)} insert_many calls, sizes {calls[:12]}…, outages: {outages}")
    assert len(outages) >= 3, outages
    assert result.conflicts == {}
    assert list(result.refused) == [bad], result.refused
    stage, error_class, message = result.refused[bad]
    assert (stage, error_class) == ("sink.write", "InternalError") and "SQLSTATE 22P05" in message
    assert sorted([*result.inserted, *result.duplicates]) == [i for i in range(2000) if i != bad]
    # Every valid event stored exactly as built, the bad one not.
    valid = [e for i, e in enumerate(events) if i != bad]
    assert sorted(stored) == sorted(e["event_id"] for e in valid)
    for e in valid:
        doc = dict(stored[e["event_id"]])
        ingested_at, hour, second = doc.pop("ingested_at"), doc.pop("ingest_hour"), doc.pop("ingest_second")
        assert ISO_MS.match(ingested_at) and hour == ingested_at[:13] and second == ingested_at[:19]
        assert doc == expected_document(e) and list(doc) == list(expected_document(e))


async def until_no_outage(call: Callable[[], Awaitable[None]], attempts: int = 20) -> None:
    for attempt in range(attempts):
        try:
            await call()
            return
        except MongoUnavailableError:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.5)


@pytest.mark.timeout(120)
async def test_the_ledger_calls_a_lost_backend_an_outage_not_a_refusal(pg_ferretdb: ProxiedPgFerretDB) -> None:
    """Found by the fault soak: while FerretDB's PostgreSQL is unreachable FerretDB answers the
    ledger's reads and updates with code 1 ("failed to connect … dial error"), which the ledger
    raised as a refusal and the sink exited. Now both are a retriable ``MongoUnavailableError``,
    and the same calls work once PostgreSQL is back."""
    database = f"sink_ledger_outage_{uuid.uuid4().hex[:8]}"
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(pg_ferretdb.uri, serverSelectionTimeoutMS=5000)
    tp = TopicPartition("t", 0)

    async def never_committed(_: TopicPartition) -> int | None:
        return None

    async def members() -> set[str]:
        return {"m1"}

    try:
        ledger = SinkLedger(client[database], "c", never_committed, members)
        ledger.forget((1, "m1"))
        await ledger.load([tp])
        tally = SinkTally()
        tally.add(("t", 0), "remote/0", "stored", 10)
        await asyncio.to_thread(pg_ferretdb.stop_proxy)
        with pytest.raises(MongoUnavailableError) as during_advance:
            await ledger.advance({tp: 10}, tally)
        ledger.forget((1, "m1"))
        with pytest.raises(MongoUnavailableError) as during_load:
            await ledger.load([tp])
        for caught in (during_advance, during_load):
            assert is_retriable(caught.value) and isinstance(caught.value.__cause__, OperationFailure), repr(caught.value)
            assert caught.value.__cause__.code == 1, caught.value.__cause__.details
        await asyncio.to_thread(pg_ferretdb.start_proxy)
        # FerretDB's pooled connections to PostgreSQL died with the proxy: the first calls after it
        # may fail with "unexpected EOF", an outage too, retried as the sink retries it.
        await until_no_outage(lambda: ledger.load([tp]))
        await until_no_outage(lambda: ledger.advance({tp: 10}, tally))
        doc = await client[database][SINK_LEDGER_COLLECTION].find_one({})
        assert doc is not None and doc["next_offset"] == 10, doc
        assert doc["counts"] == {"remote/0": {"consumed": 10, "stored": 10}}, doc
    finally:
        if pg_ferretdb.proxy is None:
            await asyncio.to_thread(pg_ferretdb.start_proxy)
        for _ in range(20):
            try:
                await client.drop_database(database)
                break
            except OperationFailure:
                await asyncio.sleep(0.5)
        await client.close()


@pytest.mark.timeout(300)
async def test_bisection_cost_on_a_5000_document_batch_with_one_bad_record(mongodb_uri: str) -> None:
    """The measurement the README quotes: insert_many round trips to find one refused document
    in a batch of 5 000, against the stack's FerretDB (PostgreSQL)."""
    collection = f"bisect_{uuid.uuid4().hex[:8]}"
    settings = SinkSettings(mongodb_uri=mongodb_uri, mongodb_database=TEST_DATABASE, mongodb_collection=collection)
    writer = MongoWriter(settings)
    await writer.prepare()
    events = make_events(5000, seed=17)
    bad = 3210
    events[bad] = dict(events[bad], key_search="\x00")
    docs = [build_document(e, IngestStamp.at(datetime.now(UTC))) for e in events]
    real_insert = writer.insert
    calls: list[int] = []

    async def insert(batch: list[dict[str, Any]]) -> InsertOutcome:
        calls.append(len(batch))
        return await real_insert(batch)

    writer.insert = insert  # type: ignore[method-assign]
    try:
        t0 = time.monotonic()
        result = await write_documents(writer, docs)
        took = time.monotonic() - t0
        clean = [build_document(e, IngestStamp.at(datetime.now(UTC))) for e in make_events(5000, seed=18)]
        writer.insert = real_insert  # type: ignore[method-assign]
        await writer.collection.database.drop_collection(collection)
        t1 = time.monotonic()
        clean_result = await write_documents(writer, clean)
        clean_took = time.monotonic() - t1
    finally:
        await writer.collection.database.drop_collection(collection)
        await writer.close()
    print(
        f"\nbisection: 5000 documents, 1 refused: {len(calls)} insert_many round trips "
        f"({sum(calls)} documents sent), {took:.2f} s; the same batch without a bad record: 1 round trip, {clean_took:.2f} s"
    )
    assert list(result.refused) == [bad] and len(result.inserted) == 4999 and len(clean_result.inserted) == 5000
    assert len(calls) <= 2 * 13 + 1  # ceil(log2(5000)) = 13 levels, at most two attempts each
