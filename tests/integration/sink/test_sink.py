"""The sink against the real local stack (3-broker Kafka, FerretDB): `python -m sink` as a process.

Every test has its own topic, consumer group, dead-letter topic and collection.
"""

from __future__ import annotations

import asyncio
import functools
import os
import random
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from etl_api.extract import parse_utc, plan_window_tasks, read_task
from eventgen.samples import COLLECTIONS
from eventgen.samples import bridged_events as make_events
from pymongo import AsyncMongoClient
from sink.mongo import MongoWriter
from sink.settings import SinkSettings

from infra.stack import ferretdb_postgresql_url
from shared.dlq import read_dead_letter_headers
from shared.errors import ConfigError
from shared.kafka import KafkaConnection
from tests.integration.sink.conftest import SinkNames
from tests.integration.sink.helpers import (
    TEST_DATABASE,
    SinkProcess,
    check_documents,
    committed_offsets,
    count_documents,
    drop_collection,
    encode,
    missing_report,
    produce,
    produce_plain,
    read_topic,
    reset_group_to_beginning,
    stored_documents,
    wait_until,
)
from tests.support.ferretdb import SqliteFerretDB, scan_counts, table_indexes

StartSink = Callable[[str, dict[str, str]], SinkProcess]
READ_INDEXES = {
    "_id_": [("_id", 1)],
    "ingest_hour_1_part_1": [("ingest_hour", 1), ("part", 1)],
    "event_date_1_part_1": [("event_date", 1), ("part", 1)],
    "ingest_second_1": [("ingest_second", 1)],
}


async def index_keys(mongodb_uri: str, collection: str) -> dict[str, list[tuple[str, int]]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri)
    try:
        info = await client[TEST_DATABASE][collection].index_information()
    finally:
        await client.close()
    return {name: spec["key"] for name, spec in info.items()}


@pytest.mark.timeout(60)
async def test_read_indexes_follow_the_setting_and_the_server(names: SinkNames, mongodb_uri: str) -> None:
    """auto on FerretDB: none (no query could use them); create: all three, and again on a collection
    that has them (FerretDB 1.24 panics on a createIndexes naming two existing ones); skip: none."""

    async def prepare(collection: str, read_indexes: str, **more: str) -> str:
        # by the environment's names: the connection fields are aliased (MONGODB_*)
        env = {"MONGODB_URI": mongodb_uri, "MONGODB_DATABASE": TEST_DATABASE, "MONGODB_COLLECTION": collection}
        writer = MongoWriter(SinkSettings(**env, read_indexes=read_indexes, **more))  # type: ignore[arg-type]
        assert (writer.settings.mongodb_database, writer.settings.mongodb_collection) == (TEST_DATABASE, collection)
        try:
            return await writer.prepare()
        finally:
            await writer.close()

    auto, skip, gin = f"{names.collection}_auto", f"{names.collection}_skip", f"{names.collection}_gin"
    pg_url = ferretdb_postgresql_url(dict(os.environ))
    try:
        how = await prepare(auto, "auto")
        no_gin = "_id lookups: collection scans (no SINK_FERRETDB_POSTGRESQL_URL)"
        assert how.endswith(f"FerretDB v1.24.2, read indexes not created (read_indexes=auto); {no_gin}"), how
        # With FerretDB's PostgreSQL: the collection is created (before any write) with the GIN
        # index of the _id lookups, which FerretDB does not list; a second start keeps it.
        first = await prepare(gin, "auto", ferretdb_postgresql_url=pg_url)
        found = re.fullmatch(r".*; _id lookups: GIN index (sink_id_[0-9a-f]{16}); stored _ids asked before each insert", first)
        assert found, first
        assert await prepare(gin, "auto", ferretdb_postgresql_url=pg_url) == first
        assert await index_keys(mongodb_uri, gin) == {"_id_": [("_id", 1)]}
        pg_indexes = await table_indexes(pg_url, TEST_DATABASE, gin)
        assert pg_indexes[found.group(1)] == "gin (((_jsonb -> '_id'::text)) jsonb_path_ops)"
        assert len(pg_indexes) == 2, pg_indexes  # and FerretDB's own unique _id_
        # A URL naming another PostgreSQL database than FerretDB's (here the warehouse) is a bad
        # setting, not an outage: the sink refuses to start, saying which setting and why.
        with pytest.raises(ConfigError, match=rf"SINK_FERRETDB_POSTGRESQL_URL holds no FerretDB table for {TEST_DATABASE}\.{gin}: "):
            await prepare(gin, "auto", ferretdb_postgresql_url=os.environ["POSTGRES_DSN"])
        await prepare(skip, "skip")
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri)
        try:
            for collection in (auto, skip):  # the collections exist once written to
                await client[TEST_DATABASE][collection].insert_one({"_id": "x"})
        finally:
            await client.close()
        assert await index_keys(mongodb_uri, auto) == {"_id_": [("_id", 1)]}
        assert await index_keys(mongodb_uri, skip) == {"_id_": [("_id", 1)]}
        assert (await prepare(names.collection, "create")).endswith(f"read indexes ensured (read_indexes=create); {no_gin}")
        assert await index_keys(mongodb_uri, names.collection) == READ_INDEXES
        await prepare(names.collection, "create")  # all exist: must not send them together
        assert await index_keys(mongodb_uri, names.collection) == READ_INDEXES
    finally:
        for collection in (auto, skip, gin):
            await drop_collection(mongodb_uri, collection)


FAST_GROUP = {"SINK_SESSION_TIMEOUT_MS": "6000", "SINK_HEARTBEAT_INTERVAL_MS": "1000"}


def caught_up(sink: SinkProcess) -> bool:
    status, body = sink.json("/lag")
    return status == 200 and body["caught_up"]


def counter(sink: SinkProcess, name: str) -> float:
    return sink.metrics().get(name, 0.0)


async def check_exactly_once(names: SinkNames, conn: KafkaConnection, uri: str, events: list[dict[str, Any]], *sinks: SinkProcess) -> None:
    """:func:`check_documents`, and on failure where the missing records were (:func:`missing_report`)."""
    stored = await stored_documents(uri, names.collection)
    try:
        check_documents(stored, events)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{await missing_report(conn, names, stored, sinks)}") from None


async def wait_caught_up(sink: SinkProcess, timeout: float) -> None:
    try:
        await wait_until("the sink to catch up (/lag)", lambda: sink.alive() and caught_up(sink), timeout)
    except AssertionError:
        print(sink.log_tail())
        raise


@pytest.mark.timeout(300)
async def test_every_event_exactly_once_full_documents_bad_records_dead_lettered(
    names: SinkNames, local_kafka: KafkaConnection, mongodb_uri: str, sinks: StartSink
) -> None:
    events = make_events(4000, seed=1)
    # Every 4th transaction is first produced and aborted: read_committed must hide it.
    await produce(local_kafka, names.topic, encode(events[:3000]), aborted_every=4)
    bad = [b"not json {", b"[1, 2, 3]", orjson.dumps({"event_time": "2020-06-04T10:21:27.000Z", "no": "event_id"})]
    oversized = orjson.dumps({"event_id": "huge", "event_time": "2020-06-04T10:21:27.000Z", "blob": "x" * 30_000})
    await produce_plain(local_kafka, names.topic, [*bad, oversized], headers=[("trace", b"t-1")])
    redelivered = orjson.dumps(events[7])  # the same event again, e.g. the bridge redoing a transaction

    sink = sinks("sink", names.env(SINK_MAX_DOCUMENT_BYTES="20000", SINK_MAX_BATCH_EVENTS="700"))
    await wait_until("/ready", lambda: sink.get("/ready")[0] == 200, 90)
    assert sink.json("/health") == (200, {"status": "ok", "service": "sink"})
    await produce(local_kafka, names.topic, [*encode(events[3000:]), redelivered])
    await wait_caught_up(sink, 150)

    check_documents(await stored_documents(mongodb_uri, names.collection), events)
    m = sink.metrics()
    assert m["sink_consumed_records_total"] == 4000 + 4 + 1
    assert m["sink_written_documents_total"] == 4000
    assert m["sink_duplicate_documents_total"] == 1
    assert m['pipeline_dead_lettered_records_total{hop="sink",stage="sink.decode"}'] == 1
    assert m['pipeline_dead_lettered_records_total{hop="sink",stage="sink.validate"}'] == 2
    assert m['pipeline_dead_lettered_records_total{hop="sink",stage="sink.size"}'] == 1
    assert m["sink_batch_size_records_count"] >= 6  # 4005 records, at most 700 per batch
    assert m["sink_batch_size_records_sum"] == 4005
    assert m['sink_batch_size_records_bucket{le="1000.0"}'] == m["sink_batch_size_records_count"]
    lags = {k: v for k, v in m.items() if k.startswith("sink_lag_records{")}
    assert lags and set(lags.values()) == {0.0}, lags  # per partition; the topic's total is sum() in PromQL

    # /lag: per partition, committed == end (past the last transaction marker), total 0.
    status, lag = sink.json("/lag")
    assert status == 200 and lag["total_lag"] == 0 and len(lag["partitions"]) == 6
    assert all(p["committed"] == p["end"] and p["lag"] == 0 for p in lag["partitions"])
    assert await committed_offsets(local_kafka, names.topic, names.group) == {p["partition"]: p["end"] for p in lag["partitions"]}

    # Dead letters: original bytes, original headers first, then where from and why.
    source = {r.offset: r for r in await read_topic(local_kafka, names.topic, 4005) if r.key == b"bad"}
    dead = await read_topic(local_kafka, names.dlq, 4)
    assert len(dead) == 4
    got = {}
    for r in dead:
        h = read_dead_letter_headers(r.headers)
        assert r.headers[0] == ("trace", b"t-1") and r.key == b"bad"
        assert h["dlq.source.topic"] == names.topic
        original = source[int(h["dlq.source.offset"])]
        assert (original.partition, original.value) == (int(h["dlq.source.partition"]), r.value)
        got[r.value] = (h["dlq.stage"], h["dlq.error.class"])
    assert got == {
        bad[0]: ("sink.decode", "JSONDecodeError"),
        bad[1]: ("sink.validate", "NotAnObject"),
        bad[2]: ("sink.validate", "MissingEventId"),
        oversized: ("sink.size", "DocumentTooLarge"),
    }

    # FerretDB (the stack's server): SINK_READ_INDEXES=auto leaves the ETL's read indexes out
    # (test_read_indexes_* below for the other settings)
    assert await index_keys(mongodb_uri, names.collection) == {"_id_": [("_id", 1)]}

    rc, took = sink.terminate()
    assert rc == 0 and took < 10


@pytest.mark.timeout(300)
async def test_replay_from_the_beginning_leaves_the_collection_unchanged(
    names: SinkNames, local_kafka: KafkaConnection, mongodb_uri: str, sinks: StartSink
) -> None:
    events = make_events(3000, seed=2)
    await produce(local_kafka, names.topic, encode(events))
    first = sinks("first", names.env())
    await wait_caught_up(first, 150)
    assert first.terminate()[0] == 0
    counts = functools.partial(scan_counts, ferretdb_postgresql_url(dict(os.environ)), TEST_DATABASE, names.collection, "")
    gin_counts = functools.partial(scan_counts, ferretdb_postgresql_url(dict(os.environ)), TEST_DATABASE, names.collection, "sink_id_")

    async def counts_when(ok: Callable[[tuple[int, int]], bool]) -> tuple[int, int] | None:
        now = await counts()
        return now if ok(now) else None

    before = await stored_documents(mongodb_uri, names.collection)
    check_documents(before, events)
    seq_1, idx_1 = await counts()
    _, gin_1 = await gin_counts()

    await reset_group_to_beginning(local_kafka, names.topic, names.group)
    assert sum((await committed_offsets(local_kafka, names.topic, names.group)).values()) == 0
    second = sinks("second", names.env())
    await wait_caught_up(second, 150)
    m = second.metrics()
    assert (m["sink_consumed_records_total"], m["sink_written_documents_total"], m["sink_duplicate_documents_total"]) == (3000, 0, 3000)
    assert 'sink_write_retries_total{reason="slow_query"}' not in m
    # Every stored copy was read from FerretDB's table a batch per query (sink.ferretdb.StoredIds:
    # which ids are stored, then their documents), not by a FerretDB find per document (3000 scans
    # of the sink's GIN index) nor by a scan per document (a $in, or an equality without an index).
    # On a table this small PostgreSQL may answer a batch's query with one sequential scan.
    # PostgreSQL publishes a backend's counters when it is idle, up to about 10 s late: the scans
    # of the reads and the index build before seq_1 may land after it.
    seq_2, idx_2 = await wait_until("the batches' _id reads", lambda: counts_when(lambda c: sum(c) >= seq_1 + idx_1 + 2), 30)
    assert seq_2 - seq_1 <= 12 and idx_2 - idx_1 <= 12, (seq_1, seq_2, idx_1, idx_2)  # a few per batch, not 3000
    assert (await gin_counts())[1] - gin_1 <= 12
    after = await stored_documents(mongodb_uri, names.collection)
    assert after == before  # every field, ingested_at included: a replay rewrites nothing
    assert second.terminate()[0] == 0


@pytest.mark.slow
@pytest.mark.timeout(400)
async def test_kill_9_at_random_points_during_a_stream_loses_and_duplicates_nothing(
    names: SinkNames, local_kafka: KafkaConnection, mongodb_uri: str, sinks: StartSink
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"kill points seed {seed}")
    events = make_events(15_000, seed=3)
    chunks = [events[i : i + 3000] for i in range(0, len(events), 3000)]
    # Static membership: each restarted sink takes the partitions back at once (no waiting for
    # the killed one's session to expire), so the kills come fast and in the middle of the stream.
    env = names.env(SINK_MAX_BATCH_EVENTS="1000", SINK_GROUP_INSTANCE_ID="crash-sink", **FAST_GROUP)
    produced = 0
    kills_mid_stream = 0
    for i, chunk in enumerate(chunks):
        sink = sinks(f"sink-{i}", env)
        await wait_until("partitions assigned", lambda s=sink: s.metrics().get("sink_assigned_partitions", 0) > 0, 60)
        # 500 events/s: a chunk takes ~6 s to produce, so the kill (≤ 1 s after the first write)
        # lands mid-stream. At 4000/s a sink with 4 batches in flight had often stored the whole
        # chunk before the kill; at 1000/s a restarted sink still busy with the redelivered batch
        # (its duplicates are now read back and compared) first wrote after the chunk had ended
        # (clean-clone CI, 2026-12-02: 2 of 5 kills mid-stream).
        stream = asyncio.create_task(produce(local_kafka, names.topic, encode(chunk), per_transaction=200, rate=500))
        produced += len(chunk)
        await wait_until("the sink writing", lambda s=sink: s.metrics().get("sink_written_documents_total", 0) > 0, 60)
        await asyncio.sleep(rng.uniform(0.0, 1.0))
        sink.kill()
        stored = await count_documents(mongodb_uri, names.collection)
        kills_mid_stream += stored < produced
        print(f"kill {i}: {stored} of {produced} produced events stored; producer still running: {not stream.done()}")
        await stream
    assert kills_mid_stream >= 3
    final = sinks("final", env)
    await wait_caught_up(final, 150)
    await check_exactly_once(names, local_kafka, mongodb_uri, events, final)
    assert final.terminate()[0] == 0


@pytest.mark.slow
@pytest.mark.timeout(400)
async def test_two_sinks_share_partitions_and_one_killed_mid_stream(
    names: SinkNames, local_kafka: KafkaConnection, mongodb_uri: str, sinks: StartSink
) -> None:
    events = make_events(15_000, seed=4)
    env = names.env(SINK_MAX_BATCH_EVENTS="500", **FAST_GROUP)
    a, b = sinks("a", env), sinks("b", env)

    def assigned() -> tuple[float, float]:
        return a.metrics().get("sink_assigned_partitions", 0), b.metrics().get("sink_assigned_partitions", 0)

    await wait_until("both sinks to own partitions", lambda: assigned() == (3, 3), 90)
    stream = asyncio.create_task(produce(local_kafka, names.topic, encode(events), per_transaction=200, rate=1000))
    await wait_until(
        "both sinks to write", lambda: counter(a, "sink_written_documents_total") > 0 < counter(b, "sink_written_documents_total"), 90
    )
    b.kill()
    assert await count_documents(mongodb_uri, names.collection) < len(events)  # killed mid-stream
    await wait_until("a to own every partition", lambda: counter(a, "sink_assigned_partitions") == 6, 90)
    await stream
    await wait_caught_up(a, 150)
    await check_exactly_once(names, local_kafka, mongodb_uri, events, a)
    assert a.terminate()[0] == 0


@pytest.mark.slow
@pytest.mark.timeout(400)
async def test_ferretdb_down_30s_mid_stream_sink_waits_not_ready_then_catches_up(
    names: SinkNames, local_kafka: KafkaConnection, private_ferretdb: SqliteFerretDB, sinks: StartSink
) -> None:
    events = make_events(12_000, seed=5)
    sink = sinks("sink", names.on(private_ferretdb, SINK_MAX_BATCH_EVENTS="500"))
    await wait_until("/ready", lambda: sink.get("/ready")[0] == 200, 90)
    stream = asyncio.create_task(produce(local_kafka, names.topic, encode(events), per_transaction=200, rate=300))
    await wait_until("some documents", lambda: counter(sink, "sink_written_documents_total") >= 500, 90)

    await asyncio.to_thread(private_ferretdb.stop)
    down_at = time.monotonic()
    _, body = await wait_until("/ready 503", lambda: (r := sink.json("/ready"))[0] == 503 and r, 25)
    assert body["ready"] is False and body["reason"].startswith("mongodb:")
    committed = await committed_offsets(local_kafka, names.topic, names.group)
    await asyncio.sleep(max(0.0, 30 - (time.monotonic() - down_at)))
    # Nothing was committed while MongoDB was down, and the sink kept running.
    assert await committed_offsets(local_kafka, names.topic, names.group) == committed
    assert sink.alive() and sink.get("/ready")[0] == 503
    assert counter(sink, 'sink_write_retries_total{reason="unavailable"}') > 0

    await asyncio.to_thread(private_ferretdb.start)
    await wait_until("/ready again", lambda: sink.get("/ready")[0] == 200, 90)
    await stream
    await wait_caught_up(sink, 150)
    check_documents(await stored_documents(private_ferretdb.uri, names.collection), events)
    assert sink.terminate()[0] == 0


@pytest.mark.timeout(300)
async def test_sigterm_flushes_the_open_batch_commits_and_exits_0_within_10s(
    names: SinkNames, local_kafka: KafkaConnection, mongodb_uri: str, sinks: StartSink
) -> None:
    events = make_events(500, seed=6)
    # A batch that would stay open for a minute: only SIGTERM can make it written.
    sink = sinks("sink", names.env(SINK_MAX_BATCH_WAIT_MS="60000", SINK_MAX_BATCH_EVENTS="100000"))
    await wait_until("/ready", lambda: sink.get("/ready")[0] == 200, 90)
    await produce(local_kafka, names.topic, encode(events))
    await wait_until("all records buffered", lambda: counter(sink, "sink_buffered_records") == 500, 60)
    await asyncio.sleep(1)
    assert counter(sink, "sink_written_documents_total") == 0
    assert await count_documents(mongodb_uri, names.collection) == 0
    rc, took = sink.terminate()
    assert rc == 0 and took < 10, (rc, took, sink.log_tail())
    check_documents(await stored_documents(mongodb_uri, names.collection), events)
    end = {r.partition: r.offset for r in await read_topic(local_kafka, names.topic, 500)}
    committed = await committed_offsets(local_kafka, names.topic, names.group)
    assert all(committed[p] > last for p, last in end.items())  # past each partition's last record


@pytest.mark.timeout(300)
async def test_sigterm_while_mongodb_is_down_exits_0_in_time_and_commits_nothing_unwritten(
    names: SinkNames, local_kafka: KafkaConnection, private_ferretdb: SqliteFerretDB, sinks: StartSink
) -> None:
    events = make_events(1500, seed=7)
    sink = sinks("sink", names.on(private_ferretdb))
    await produce(local_kafka, names.topic, encode(events[:1000]))
    await wait_caught_up(sink, 120)
    committed = await committed_offsets(local_kafka, names.topic, names.group)
    await asyncio.to_thread(private_ferretdb.stop)
    await produce(local_kafka, names.topic, encode(events[1000:]))
    await wait_until(
        "the new records fetched",
        lambda: (m := sink.metrics())["sink_consumed_records_total"] + m["sink_buffered_records"] == 1500
        and m["sink_written_documents_total"] == 1000,
        60,
    )
    rc, took = sink.terminate()
    assert rc == 0 and took < 10, (rc, took, sink.log_tail())
    assert await committed_offsets(local_kafka, names.topic, names.group) == committed

    await asyncio.to_thread(private_ferretdb.start)
    again = sinks("again", names.on(private_ferretdb))
    await wait_caught_up(again, 150)
    check_documents(await stored_documents(private_ferretdb.uri, names.collection), events)
    assert again.terminate()[0] == 0


@pytest.mark.timeout(300)
async def test_batch_retried_longer_than_the_etl_settle_margin_is_read_by_the_next_incremental_run(
    names: SinkNames, local_kafka: KafkaConnection, private_ferretdb: SqliteFerretDB, sinks: StartSink
) -> None:
    """The ETL reads ``watermark < ingested_at <= run start - settle`` (etl_api.job). A batch built
    while MongoDB is down and written only after longer than the settle margin must still land
    inside the *next* run's window: its ``ingested_at`` is stamped by the attempt that wrote it, not
    when the batch was built. Read here with the ETL's own planner and reader (etl_api.extract)."""
    # The sink's bound: an attempt stamps its documents when it starts and lasts at most
    # write_attempt_timeout_s (server selection included), so a document becomes visible at most
    # that long after its stamp; the ETL's settle margin must be larger.
    attempt_timeout, settle = timedelta(seconds=2), timedelta(seconds=5)
    events = make_events(1000, seed=8)
    env = names.on(private_ferretdb, SINK_MAX_BATCH_EVENTS="500", SINK_WRITE_ATTEMPT_TIMEOUT_S=str(attempt_timeout.total_seconds()))
    sink = sinks("sink", env)
    await produce(local_kafka, names.topic, encode(events[:500]))
    await wait_caught_up(sink, 120)
    visible_before = await stored_documents(private_ferretdb.uri, names.collection)
    assert set(visible_before) == {e["event_id"] for e in events[:500]}

    await asyncio.to_thread(private_ferretdb.stop)  # from here until restart nothing new is visible
    await produce(local_kafka, names.topic, encode(events[500:]))
    await wait_until(
        "the second batch built and its write retried",
        lambda: (m := sink.metrics())["sink_consumed_records_total"] == 1000
        and m.get('sink_write_retries_total{reason="unavailable"}', 0) >= 1,
        60,
    )
    built_by = datetime.now(UTC)
    await asyncio.sleep(settle.total_seconds() + 2)  # the batch is now older than the settle margin

    # Incremental run 1 starts now (before the restart): it sees exactly what was visible, i.e.
    # the first 500, and moves the watermark to its high end.
    run1_start = datetime.now(UTC)
    high1 = run1_start - settle
    assert high1 > built_by
    run1 = {d["_id"] for d in visible_before.values() if parse_utc(d["ingested_at"]) <= high1}
    assert len(run1) == 500

    await asyncio.to_thread(private_ferretdb.start)
    await wait_caught_up(sink, 120)
    stored = await stored_documents(private_ferretdb.uri, names.collection)
    check_documents(stored, events)
    # Stamped by the attempt that wrote them (which began at most attempt_timeout before run 1's
    # start, while MongoDB was still down), not when the batch was built: after run 1's high end.
    floor = run1_start - attempt_timeout - timedelta(milliseconds=1)  # stamps are truncated to ms
    late = sorted(parse_utc(d["ingested_at"]) for d in stored.values() if d["_id"] not in visible_before)
    assert len(late) == 500 and late[0] >= floor and late[0] > high1, (late[0], floor, high1, built_by)

    # Incremental run 2, once every stamp is older than its high end: (high1, high2].
    await asyncio.sleep(settle.total_seconds() + 1)
    high2 = datetime.now(UTC) - settle
    tasks = plan_window_tasks(high1, high2, COLLECTIONS)
    rows = []
    for task in tasks:
        rows.extend(await asyncio.to_thread(lambda t=task: list(read_task(t, private_ferretdb.uri, TEST_DATABASE, names.collection))))
    run2 = [row[0] for row in rows]
    assert len(run2) == len(set(run2)) == 500
    assert run1.isdisjoint(run2)
    assert run1 | set(run2) == {e["event_id"] for e in events}
    assert sink.terminate()[0] == 0
