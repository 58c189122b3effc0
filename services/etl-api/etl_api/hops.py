"""``GET /reconciliation/kafka``: the Kafka hops checked against each other per remote partition.

Three sources, each read as committed (see :mod:`shared.hops` for what is compared and why):

- the bridge's counts, from its offsets topic on the local cluster (``read_committed``);
- the sink's ledger documents (``sink_ledger``, beside the events) for the events collection;
- MongoDB's documents per ``(source_topic, source_partition)``: by SQL on FerretDB's own table
  when ``ETL_FERRETDB_POSTGRESQL_URL`` is set (one scan), else one ``$group`` over the collection.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import asyncpg
from pymongo import AsyncMongoClient

from shared.errors import BackendUnavailableError
from shared.hops import FAILING_STATUSES, SINK_LEDGER_COLLECTION, BridgeCounts, PartitionReport, reconcile_hops, sum_sink_ledgers
from shared.kafka import KafkaConnection
from shared.offsets import read_stored_states


@dataclass(frozen=True)
class HopsReport:
    partitions: list[PartitionReport]
    sink_complete: bool

    @property
    def disagreeing(self) -> list[PartitionReport]:
        return [p for p in self.partitions if p.status in FAILING_STATUSES]

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": not self.disagreeing,
            "disagreeing_partitions": [f"{p.source_topic}/{p.source_partition}" for p in self.disagreeing],
            "in_flight": sum(p.in_flight or 0 for p in self.partitions if p.status != "unledgered"),
            "sink_ledger_complete": self.sink_complete,
            "partitions": [p.as_dict() for p in self.partitions],
        }


async def bridge_counts(kafka: KafkaConnection, offsets_topic: str, topic: str | None) -> dict[tuple[str, int], BridgeCounts]:
    """Per remote partition the counts of the bridge's last committed offsets value (a value
    without counts, written before the ledger existed, reads as incomplete)."""
    try:
        states = await read_stored_states(kafka, offsets_topic)
    except BackendUnavailableError:  # the topic has no partitions: no bridge ever stored a position there
        return {}
    return {
        key: state.counts if state.counts is not None else BridgeCounts(complete=False)
        for key, state in states.items()
        if topic is None or key[0] == topic
    }


async def sink_ledgers(mongodb_uri: str, database: str, collection: str) -> list[dict[str, Any]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri, serverSelectionTimeoutMS=5000)
    try:
        return [doc async for doc in client[database][SINK_LEDGER_COLLECTION].find({"collection": collection})]
    finally:
        await client.close()


async def documents_by_source(mongodb_uri: str, database: str, collection: str, ferretdb_url: str | None) -> dict[tuple[str, int], int]:
    """Documents per ``(source_topic, source_partition)`` (documents without them are not counted)."""
    if ferretdb_url:
        counted = await _ferretdb_documents_by_source(ferretdb_url, database, collection)
        if counted is not None:
            return counted
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri, serverSelectionTimeoutMS=5000)
    try:
        pipeline = [{"$group": {"_id": {"t": "$source_topic", "p": "$source_partition"}, "n": {"$sum": 1}}}]
        cursor = await client[database][collection].aggregate(pipeline)
        return _keep_sources([(row["_id"].get("t"), row["_id"].get("p"), row["n"]) async for row in cursor])
    finally:
        await client.close()


async def _ferretdb_documents_by_source(url: str, database: str, collection: str) -> dict[tuple[str, int], int] | None:
    from etl_api.ferretdb import collection_table, quote

    conn = await asyncpg.connect(url)
    try:
        table = await collection_table(conn, database, collection)
        if table is None:
            return None
        rows = await conn.fetch(
            f"""SELECT _jsonb -> 'source_topic' AS t, _jsonb -> 'source_partition' AS p, count(*) AS n
                FROM {quote(database)}.{quote(table)} GROUP BY 1, 2"""
        )
    finally:
        await conn.close()
    return _keep_sources((json.loads(r["t"]) if r["t"] else None, json.loads(r["p"]) if r["p"] else None, r["n"]) for r in rows)


def _keep_sources(rows: Iterable[tuple[Any, Any, Any]]) -> dict[tuple[str, int], int]:
    out: dict[tuple[str, int], int] = {}
    for topic, partition, n in rows:
        if isinstance(topic, str) and isinstance(partition, int) and not isinstance(partition, bool):
            out[(topic, partition)] = out.get((topic, partition), 0) + int(n)
    return out


async def reconcile_kafka(
    kafka: KafkaConnection,
    offsets_topic: str,
    mongodb_uri: str,
    database: str,
    collection: str,
    ferretdb_url: str | None,
    topic: str | None = None,
) -> HopsReport:
    """Reads sink, store, bridge in that order (see :mod:`shared.hops`): a record moving while
    they are read can only make a later hop look *behind* (``in_flight``), never ahead."""
    sink_totals, complete = sum_sink_ledgers(await sink_ledgers(mongodb_uri, database, collection))
    documents = await documents_by_source(mongodb_uri, database, collection, ferretdb_url)
    bridge = await bridge_counts(kafka, offsets_topic, topic)
    if topic is not None:
        sink_totals = {k: v for k, v in sink_totals.items() if k[0] == topic}
        documents = {k: v for k, v in documents.items() if k[0] == topic}
    return HopsReport(reconcile_hops(bridge, sink_totals, complete, documents), complete)
