"""GET /reconciliation reads the watermark and the hour ledger in one snapshot: a micro-batch that
commits while the raw store is being counted (the ledger grows past the watermark read first)
must not make the watermark's hour look ``missing``. The API runs in-process (TestClient) so the
raw store's count can be replaced by one that commits such a micro-batch in the middle."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg
from etl_api import ledger
from etl_api.app import create_app
from etl_api.settings import EtlSettings
from fastapi.testclient import TestClient

HOUR = "2026-12-06T10"
W1 = datetime(2026, 12, 6, 10, 30, tzinfo=UTC)
W2 = datetime(2026, 12, 6, 10, 31, tzinfo=UTC)


async def seed(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        run = str(uuid.uuid4())
        await conn.execute(f'SET search_path TO "{schema}"')
        await conn.execute("INSERT INTO etl_watermark (name, ingested_high, run_id, updated_at) VALUES ('events', $1, $2, now())", W1, run)
        await conn.execute("INSERT INTO etl_ledger_state (id, covers_from, run_id) VALUES (1, $1, $2)", ledger.BEGINNING, run)
        await conn.execute(
            "INSERT INTO etl_hour_reads (ingest_hour, event_date, events, valid, run_id) VALUES ($1, '2026-12-06', 5, 5, $2)", HOUR, run
        )
    finally:
        await conn.close()


async def commit_micro_batch(dsn: str, schema: str) -> None:
    """What a micro-batch's load commits: 3 more documents of the hour counted, watermark moved."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'SET search_path TO "{schema}"')
        async with conn.transaction():
            await conn.execute("UPDATE etl_hour_reads SET events = events + 3, valid = valid + 3 WHERE ingest_hour = $1", HOUR)
            await conn.execute("UPDATE etl_watermark SET ingested_high = $1 WHERE name = 'events'", W2)
    finally:
        await conn.close()


def test_a_micro_batch_committing_during_the_count_does_not_look_missing(postgres_dsn, schemas, unique_name, monkeypatch) -> None:
    schema = unique_name.lower()
    schemas.append(schema)
    settings = EtlSettings(postgres_dsn=postgres_dsn, pg_schema=schema, api_token="t", reaper_interval_seconds=3600)  # type: ignore[call-arg]
    seen: list[datetime] = []

    def counter(*_: object) -> ledger.RawCounter:
        async def count(types: Sequence[str], hours: Sequence[str], bound: datetime) -> dict[str, dict[str, int]]:
            seen.append(bound)
            await commit_micro_batch(postgres_dsn, schema)  # lands between the watermark read and the ledger read
            return {HOUR: {"2026-12-06": 5}}  # the raw store's documents ingested up to the bound (W1)

        return count

    monkeypatch.setattr(ledger, "raw_store_counter", counter)
    with TestClient(create_app(settings)) as client:
        for _ in range(100):
            if client.get("/ready").status_code == 200:
                break
            asyncio.run(asyncio.sleep(0.1))
        asyncio.run(seed(postgres_dsn, schema))
        body = client.get("/reconciliation", params={"from": HOUR, "to": HOUR}).json()
    assert seen == [W1]
    assert body["ok"] is True, body
    assert [(h["ingest_hour"], h["status"], h["mongodb"], h["accounted"]) for h in body["hours"]] == [(HOUR, "ok", 5, 5)]
