"""FerretDB on PostgreSQL: the ETL's equality reads scan the whole collection with FerretDB's own
(btree) indexes, and use the GIN read index once :func:`etl_api.ferretdb.ensure_read_indexes`
has added it (asked through FerretDB's ``explain``, which reports PostgreSQL's plan)."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
from etl_api.ferretdb import collection_table, ensure_read_indexes, read_index_name
from sink.mongo import INDEXES

from tests.integration.etl.helpers import make_events


def ferretdb_pg_url(postgres_dsn: str) -> str:
    """The local stack runs FerretDB on the warehouse's PostgreSQL server, database ``ferretdb``."""
    return postgres_dsn.rsplit("/", 1)[0] + "/ferretdb"


def plan(coll: Any, query: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = coll.database.command("explain", {"find": coll.name, "filter": query})
    return out


def nodes(node: dict[str, Any]) -> list[tuple[str, str | None]]:
    """(node type, index name) of every node of a PostgreSQL plan, depth first."""
    return [(node["Node Type"], node.get("Index Name")), *(n for child in node.get("Plans", []) for n in nodes(child))]


def index_conditions(node: dict[str, Any]) -> list[str]:
    return [
        *([node["Index Cond"]] if "Index Cond" in node else []),
        *(c for child in node.get("Plans", []) for c in index_conditions(child)),
    ]


async def test_read_index_turns_the_etl_reads_into_index_scans(mongo_collection, postgres_dsn) -> None:
    for index in INDEXES:
        mongo_collection.create_indexes([index])
    rng = random.Random(5)
    dates = [date(2020, 5, 1) + timedelta(days=i) for i in range(30)]
    start = datetime(2026, 11, 20, tzinfo=UTC)
    docs = [d.doc for h in range(12) for d in make_events(rng, 800, dates, start + timedelta(hours=h), devices=200)]
    mongo_collection.insert_many(docs, ordered=False)
    by_hour = {"ingest_hour": "2026-11-20T03", "part": 5, "collection": "view_product_detail"}
    by_date = {"event_date": "2020-05-07", "part": 5, "collection": "view_product_detail"}

    for query in (by_hour, by_date):
        before = plan(mongo_collection, query)
        assert before["filterPushdown"] is True
        # FerretDB's btree cannot serve its own `@>`: a (parallel) sequential scan, no index
        assert {t for t, _ in nodes(before["queryPlanner"]["Plan"])} & {"Seq Scan", "Parallel Seq Scan"}
        assert [i for _, i in nodes(before["queryPlanner"]["Plan"]) if i] == []

    url = ferretdb_pg_url(postgres_dsn)
    name = await ensure_read_indexes(url, mongo_collection.database.name, mongo_collection.name)
    assert name is not None and name.startswith("etl_read_")
    assert await ensure_read_indexes(url, mongo_collection.database.name, mongo_collection.name) == name  # idempotent
    for query in (by_hour, by_date):
        explained = plan(mongo_collection, query)["queryPlanner"]["Plan"]
        after = nodes(explained)
        assert ("Bitmap Index Scan", name) in after and not {t for t, _ in after} & {"Seq Scan", "Parallel Seq Scan"}
        # the index narrows by the hour/date *and* the part (not only the hour/date, rechecking the part on the heap)
        (cond,) = index_conditions(explained)
        assert "'part'" in cond and ("'ingest_hour'" in cond or "'event_date'" in cond), cond
        # same documents as before, the exact ones the filter names
        expected = sorted(d["_id"] for d in docs if all(d.get(k) == v for k, v in query.items()))
        assert expected and sorted(d["_id"] for d in mongo_collection.find(query, {"_id": 1})) == expected

    conn = await asyncpg.connect(url)
    try:
        table = await collection_table(conn, mongo_collection.database.name, mongo_collection.name)
        assert table is not None and name == read_index_name(mongo_collection.database.name, table)
        defs = await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $1 AND tablename = $2", mongo_collection.database.name, table
        )
    finally:
        await conn.close()
    ours = [r["indexdef"] for r in defs if r["indexname"].startswith("etl_read_")]
    assert len(ours) == 1 and "USING gin" in ours[0] and all(f"'{f}'" in ours[0] for f in ("ingest_hour", "event_date", "part"))

    assert await ensure_read_indexes(url, mongo_collection.database.name, "no_such_collection_xyz") is None
