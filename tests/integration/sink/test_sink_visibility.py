"""The sink's visibility lease against the real local stack (contract: shared/visibility.py).

A running ``python -m sink`` publishes its lease document in ``sink_visibility`` before it writes,
moves ``visible_through`` forward while records flow, and deletes the document on SIGTERM. The
promise itself is checked from outside, as a reader would: whatever was stored with
``ingested_at`` at or before a published ``visible_through`` when the lease was read is all that
will ever be stored at or before it.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from eventgen.samples import bridged_events as make_events
from pymongo import AsyncMongoClient

from shared.kafka import KafkaConnection
from shared.visibility import COLLECTION, ONE_MS, Lease, iso_ms, lease_id, parse_lease
from tests.integration.sink.conftest import SinkNames
from tests.integration.sink.helpers import TEST_DATABASE, SinkProcess, check_documents, encode, produce, stored_documents, wait_until

StartSink = Callable[[str, dict[str, str]], SinkProcess]


def caught_up(sink: SinkProcess) -> bool:
    status, body = sink.json("/lag")
    return bool(status == 200 and body["caught_up"])


@pytest.mark.timeout(120)
async def test_a_running_sink_publishes_a_lease_that_advances_holds_and_is_deleted_on_sigterm(
    names: SinkNames, local_kafka: KafkaConnection, mongodb_uri: str, sinks: StartSink
) -> None:
    events = make_events(6000, seed=31)
    # Big batches (an insert_many of 2000 documents takes a few hundred ms on FerretDB) and a lease
    # published every 0.2 s: many publications fall while an attempt is in flight.
    knobs = {"SINK_VISIBILITY_INTERVAL_S": "0.2", "SINK_VISIBILITY_LEASE_S": "5", "SINK_MAX_BATCH_EVENTS": "2000"}
    sink: SinkProcess = sinks("sink", names.env(**knobs))
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri, serverSelectionTimeoutMS=5000)
    leases = client[TEST_DATABASE][COLLECTION]
    events_collection = client[TEST_DATABASE][names.collection]

    async def lease_doc() -> dict[str, Any] | None:
        found = [d async for d in leases.find({"collection": names.collection})]
        assert len(found) <= 1, found
        return found[0] if found else None

    async def lease_doc_past(stamp: str) -> Lease | None:
        lease = parse_lease(await lease_doc() or {})
        return lease if iso_ms(lease.visible_through) >= stamp else None

    try:
        doc = await wait_until("the lease document", lease_doc, 60)
        assert sink.proc is not None
        instance = doc["instance"]
        assert re.fullmatch(rf"{re.escape(socket.gethostname())}:{sink.proc.pid}:[0-9a-f]{{8}}", instance), instance
        assert doc["_id"] == lease_id(names.collection, instance)
        assert set(doc) == {"_id", "collection", "instance", "visible_through", "published_at", "lease_s", "attempt_timeout_s"}
        assert (doc["lease_s"], doc["attempt_timeout_s"]) == (5.0, 60.0)
        await wait_until("/ready", lambda: sink.get("/ready")[0] == 200, 60)

        # While records flow: sample (the lease, then every stored stamp) as a reader would.
        samples: list[tuple[Lease, list[str]]] = []
        stream = asyncio.create_task(produce(local_kafka, names.topic, encode(events), per_transaction=500, rate=3000))
        while not stream.done() or not caught_up(sink) or len(samples) < 5:
            lease = parse_lease(await lease_doc() or {})
            stamps = [d["ingested_at"] async for d in events_collection.find({}, {"ingested_at": 1})]
            samples.append((lease, stamps))
            await asyncio.sleep(0.02)
        await stream
        # Once caught up, a publication passes every stamp (no attempt left to hold it back).
        stored = await stored_documents(mongodb_uri, names.collection)
        last = max(d["ingested_at"] for d in stored.values())
        final_lease = await wait_until("a bound past every stamp", lambda: lease_doc_past(last), 30)
        samples.append((final_lease, [d["ingested_at"] for d in stored.values()]))

        # visible_through and published_at advance, visible_through stays below its publication
        # and never further below it than the oldest attempt that may still land allows (an
        # attempt without an answer counts for its timeout + 1 s).
        throughs = [lease.visible_through for lease, _ in samples]
        published = [lease.published_at for lease, _ in samples]
        assert throughs == sorted(throughs) and throughs[-1] > throughs[0], throughs
        assert published == sorted(published) and all(t <= p - ONE_MS for t, p in zip(throughs, published, strict=True))
        assert all(p - t < timedelta(seconds=60 + 1 + 1) for t, p in zip(throughs, published, strict=True)), samples
        # The promise: nothing stamped at or before a published bound appeared after it was read.
        check_documents(stored, events)  # every document whole, ingest_second == ingested_at[:19]
        final = sorted(d["ingested_at"] for d in stored.values())
        for lease, stamps in samples:
            bound = iso_ms(lease.visible_through)
            assert sorted(s for s in stamps if s <= bound) == [s for s in final if s <= bound], bound
        assert any(stamps for _, stamps in samples[:-1])  # the samples saw documents land

        m = sink.metrics()
        assert m["sink_visibility_publication_failures_total"] == 0
        assert 0 < m["sink_visibility_lag_seconds"] < 10
        assert 'sink_write_retries_total{reason="visibility_lease"}' not in m
        assert m["sink_written_documents_total"] == 6000

        rc, took = sink.terminate()
        assert rc == 0 and took < 10, (rc, took, sink.log_tail())
        assert await lease_doc() is None, sink.log_tail()
        assert f"visibility lease {doc['_id']} deleted" in sink.log_tail(60)
    finally:
        await leases.delete_many({"collection": names.collection})
        await client.close()
