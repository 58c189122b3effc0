"""The soak's checker: after the traffic stops and the pipeline drains, every store is compared with
what the generator produced (its manifest, :class:`bench.soak.traffic.Expected`), read with plain
clients — Kafka, PostgreSQL, FerretDB's own tables — never through the code under test.

Invariants, each a :class:`Finding` in the report:

1. every valid event is in MongoDB exactly once, and nothing else is (``lost``, ``unexpected``);
2. the local topic (``read_committed``) holds every valid event exactly once (``duplicated``:
   copies beyond the first, in the topic or in the store);
3. every bad record is in the dead-letter topic exactly once, from the bridge, with a reason;
4. the star schema's ``sum(view_count)`` per (date, product id) equals the generator's count;
5. ``GET /reconciliation`` and ``GET /reconciliation/kafka`` say ``ok``.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import eventgen
import orjson
from aiokafka import AIOKafkaConsumer
from pymongo import AsyncMongoClient

from bench.soak.services import Pipeline
from bench.soak.traffic import Expected
from infra.stack import ferretdb_backend, ferretdb_postgresql_url
from shared.dlq import HEADER_ERROR_MESSAGE, HEADER_SOURCE_OFFSET, HEADER_SOURCE_PARTITION, HEADER_STAGE, read_dead_letter_headers
from shared.kafka import KafkaConnection, topic_partitions


@dataclass
class Finding:
    name: str
    ok: bool
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Verdict:
    findings: list[Finding] = field(default_factory=list)
    lost: int = 0
    duplicated: int = 0
    star_exact: bool = False
    reconciled: bool = False

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.findings)


async def read_committed(conn: KafkaConnection, topic: str, *, values: bool) -> list[tuple[Any, list[tuple[str, bytes]]]]:
    """Every record of ``topic`` a read_committed consumer sees: (value or None, headers)."""
    consumer = AIOKafkaConsumer(
        **conn.client_kwargs(), enable_auto_commit=False, isolation_level="read_committed", max_partition_fetch_bytes=4 << 20
    )
    await consumer.start()
    try:
        parts = await topic_partitions(consumer, topic)
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        out: list[tuple[Any, list[tuple[str, bytes]]]] = []
        deadline = time.monotonic() + 1800
        while [tp for tp in parts if await consumer.position(tp) < ends[tp]] and time.monotonic() < deadline:
            for msgs in (await consumer.getmany(*parts, timeout_ms=1000, max_records=10_000)).values():
                out.extend((m.value if values else None, list(m.headers)) for m in msgs)
        return out
    finally:
        await consumer.stop()


async def stored_ids(pipeline: Pipeline) -> Counter[str]:
    """The ``_id`` of every stored document: FerretDB's PostgreSQL table read directly (its
    ``_jsonb ->> '_id'``), or, on another backend, ``find({}, {_id: 1})``."""
    env, names = pipeline.stack_env, pipeline.names
    if ferretdb_backend() == "postgresql":
        conn = await asyncpg.connect(ferretdb_postgresql_url(env))
        try:
            table = await conn.fetchval(
                f"SELECT _jsonb ->> 'table' FROM \"{names.database}\"._ferretdb_database_metadata WHERE _jsonb ->> '_id' = $1",
                names.collection,
            )
            if table is None:
                return Counter()
            rows = await conn.fetch(f'SELECT _jsonb ->> \'_id\' AS id FROM "{names.database}"."{table}"')
            return Counter(r["id"] for r in rows)
        finally:
            await conn.close()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(env["MONGODB_URI"])
    try:
        return Counter([str(d["_id"]) async for d in client[names.database][names.collection].find({}, {"_id": 1})])
    finally:
        await client.close()


async def star_views(dsn: str, schema: str) -> Counter[tuple[str, str]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            f'SELECT d.date::text AS day, p.product_id, sum(f.view_count)::bigint AS views FROM "{schema}".fact_product_views f '
            f'JOIN "{schema}".dim_date d USING (date_key) JOIN "{schema}".dim_product p USING (product_key) GROUP BY 1, 2'
        )
    except asyncpg.UndefinedTableError:
        return Counter()
    finally:
        await conn.close()
    return Counter({(r["day"], r["product_id"]): int(r["views"]) for r in rows})


def diff(expected: Counter[Any], got: Counter[Any], limit: int = 10) -> dict[str, Any]:
    missing = expected - got
    extra = got - expected
    return {
        "missing": sum(missing.values()),
        "extra": sum(extra.values()),
        "examples_missing": [list(k) if isinstance(k, tuple) else k for k in list(missing)[:limit]],
        "examples_extra": [list(k) if isinstance(k, tuple) else k for k in list(extra)[:limit]],
    }


async def check(pipeline: Pipeline, manifest: eventgen.Manifest, expected: Expected, local: KafkaConnection) -> Verdict:
    verdict = Verdict()
    names = pipeline.names
    valid = Counter(manifest.valid_event_ids())

    # 1. MongoDB: every valid event exactly once, nothing else.
    stored = await stored_ids(pipeline)
    lost_ids = valid - stored
    verdict.lost = sum(lost_ids.values())
    store_dups = sum(n - 1 for n in stored.values() if n > 1)
    d = diff(valid, stored)
    verdict.findings.append(
        Finding(
            "mongodb: every valid event exactly once",
            d["missing"] == 0 and d["extra"] == 0 and store_dups == 0,
            {**d, "documents": sum(stored.values()), "valid": len(valid)},
        )
    )

    # 2. The local topic, read_committed: every valid event exactly once.
    local_records = await read_committed(local, names.local_topic, values=True)
    local_ids = Counter(str(orjson.loads(v)["event_id"]) for v, _ in local_records)
    topic_dups = sum(n - 1 for n in local_ids.values() if n > 1)
    d = diff(valid, local_ids)
    verdict.findings.append(
        Finding("local topic: every valid event exactly once", d["missing"] == 0 and d["extra"] == 0, {**d, "records": len(local_records)})
    )
    verdict.duplicated = topic_dups + store_dups

    # 3. The dead-letter topic: every bad record exactly once, from the bridge, with its reason.
    letters = [read_dead_letter_headers(h) for _, h in await read_committed(local, names.dlq_topic, values=False)]
    coords = Counter(
        (int(h[HEADER_SOURCE_PARTITION]), int(h[HEADER_SOURCE_OFFSET])) for h in letters if h.get(HEADER_STAGE, "").startswith("bridge")
    )
    bad = Counter(dict.fromkeys(manifest.bad_coordinates(), 1))
    others = Counter(h.get(HEADER_STAGE, "?") for h in letters if not h.get(HEADER_STAGE, "").startswith("bridge"))
    reasonless = sum(1 for h in letters if not h.get(HEADER_ERROR_MESSAGE))
    d = diff(bad, coords)
    verdict.findings.append(
        Finding(
            "dead letters: every bad record exactly once, with its reason",
            d["missing"] == 0 and d["extra"] == 0 and not others and reasonless == 0,
            {
                **d,
                "letters": len(letters),
                "bad_records": len(bad),
                "other_stages": dict(others),
                "without_reason": reasonless,
                "by_kind": dict(expected.bad),
            },
        )
    )

    # 4. The star schema, per date and product.
    star = await star_views(pipeline.stack_env["POSTGRES_DSN"], names.tag)
    d = diff(expected.views, star)
    verdict.star_exact = d["missing"] == 0 and d["extra"] == 0
    verdict.findings.append(
        Finding(
            "star schema: views per date and product",
            verdict.star_exact,
            {**d, "views": expected.total_views, "star_views": sum(star.values())},
        )
    )

    # 5. The pipeline's own reconciliations.
    verdict.reconciled = True
    async with pipeline.client() as client:
        for path in ("/reconciliation", "/reconciliation/kafka"):
            resp = await pipeline.services["etl-api"].get(client, path, timeout=300)
            body = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else resp.text
            ok = resp.status_code == 200 and isinstance(body, dict) and body.get("ok") is True
            verdict.reconciled &= ok
            verdict.findings.append(Finding(f"GET {path}: ok", ok, {"status": resp.status_code, "body": summarize(body)}))
    return verdict


def summarize(body: Any) -> Any:
    """A reconciliation answer without its per-hour or per-partition lists unless they disagree."""
    if not isinstance(body, dict):
        return str(body)[:500]
    return {k: v for k, v in body.items() if not isinstance(v, list) or k.startswith("disagreeing")}
