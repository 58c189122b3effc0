"""Continuous mode through real processes: two API instances on one schema run one worker; the
star schema follows inserted events in micro-batches; a range run and an incremental run
requested meanwhile count nothing twice; the worker killed -9 inside a micro-batch's open load
transaction is relaunched, its run reaped, and the star still equals an independent computation
and, natural key for natural key, a clean full run; a document made visible late (stamped below
the watermark) is counted exactly once by the relaunched worker's heal check; DELETE /continuous
stops the worker."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import httpx
from etl_api.schema import table_checksums

from tests.integration.etl.conftest import java_children_rss_mb, workers_of
from tests.integration.etl.helpers import Doc, expected_star, make_events
from tests.integration.etl.test_star_schema import assert_star_equals, insert, run_ok, star_rows, wait_run

WORKER_ENV = {
    "ETL_CONTINUOUS_INTERVAL_S": "1",
    "ETL_HEARTBEAT_SECONDS": "1",
    "ETL_HEARTBEAT_TIMEOUT_SECONDS": "20",
}


async def continuous_runs(pg: asyncpg.Connection, schema: str) -> list[asyncpg.Record]:
    return await pg.fetch(f"SELECT run_id::text AS run_id, status, phase, pid, error FROM \"{schema}\".etl_runs WHERE mode = 'continuous'")


async def wait_star(pg: asyncpg.Connection, schema: str, docs: list[Doc], timeout: float = 120) -> None:
    """Until the star schema equals the independent computation of ``docs`` (exactly, every table)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        runs = {r["run_id"] for r in await pg.fetch(f'SELECT run_id::text AS run_id FROM "{schema}".etl_runs')}
        try:
            assert_star_equals(await star_rows(pg, schema), expected_star(docs), runs)
            return
        except AssertionError as exc:
            last = exc
        await asyncio.sleep(0.5)
    raise AssertionError(f"the star schema did not reach the expected state in {timeout}s: {last}")


async def status(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.get("/continuous")
    assert r.status_code == 200, r.text
    return r.json()


async def test_continuous_mode_follows_events_exactly_through_a_range_run_a_kill_and_a_late_document(
    make_service, mongo_collection, pg, unique_name
) -> None:
    d1, d2, d3 = date(2020, 8, 1), date(2020, 8, 2), date(2020, 8, 3)
    schema, clean_schema = unique_name.lower(), f"{unique_name.lower()}_clean"
    batch1 = make_events(random.Random(51), 150, [d1, d2], datetime.now(UTC) - timedelta(seconds=5))
    insert(mongo_collection, batch1)
    a = make_service(schema, **WORKER_ENV, ETL_FAULT_PAUSE_IN_LOAD_SECONDS="2")
    b = make_service(schema, **WORKER_ENV, ETL_FAULT_PAUSE_IN_LOAD_SECONDS="2")
    async with a.client() as ca, b.client() as cb:
        assert (await ca.get("/continuous")).json()["desired"] is False
        r = await ca.put("/continuous")
        assert r.status_code == 200, r.text
        assert (await cb.put("/continuous")).status_code == 200  # idempotent, from the other instance
        assert (await ca.put("/continuous", headers={"Authorization": "Bearer wrong"})).status_code == 401

        await wait_star(pg, schema, batch1)
        st = await status(cb)
        assert st["desired"] and st["alive"] and st["batches"] >= 1 and st["last_batches"][0]["fine"] is False  # first: a full read
        assert len(workers_of(schema)) == 1  # two API instances, one worker
        # its driver JVM holds its whole 1 GiB heap from the start (ETL_CONTINUOUS_RESERVE_HEAP)
        assert st["last_batches"][0]["driver_jvm"]["heap_committed_mb"] == 1024.0, st["last_batches"][0]
        assert [rss >= 1024 for rss in java_children_rss_mb(workers_of(schema)[0])] == [True]

        # new events while the worker runs: counted by the next micro-batches, read second by second
        batch2 = make_events(random.Random(52), 60, [d1, d3], datetime.now(UTC), devices=40)
        insert(mongo_collection, batch2)
        await wait_star(pg, schema, batch1 + batch2)
        st = await status(ca)
        assert any(b["fine"] and b["events_read"] > 0 for b in st["last_batches"]), st["last_batches"]
        assert st["behind_seconds"] is not None and st["behind_seconds"] < 30

        # a range run and an incremental run requested while the worker runs: each waits its turn
        # (409 while a micro-batch holds the run slot) and nothing is counted twice or skipped
        extra = make_events(random.Random(55), 30, [d1], datetime.now(UTC), devices=20)
        insert(mongo_collection, extra)
        for body in ({"mode": "range", "date_from": d1.isoformat(), "date_to": d1.isoformat()}, {"mode": "incremental"}):
            for _ in range(120):
                r = await ca.post("/runs", json=body)
                if r.status_code == 202:
                    break
                assert r.status_code == 409, r.text
                await asyncio.sleep(0.25)
            assert r.status_code == 202, r.text
            run = await wait_run(ca, r.json()["run_id"])
            assert run["status"] == "succeeded", run["error"]
        await wait_star(pg, schema, batch1 + batch2 + extra)

        # a document made visible late: stamped (ingested_at) below the watermark, as a write
        # attempt that outlived its window would be. Only a heal check finds it.
        late = make_events(random.Random(53), 1, [d2], datetime.now(UTC) - timedelta(minutes=3))
        insert(mongo_collection, late)

        # kill -9 the worker inside a micro-batch's open load transaction
        batch3 = make_events(random.Random(54), 40, [d3], datetime.now(UTC), devices=30)
        insert(mongo_collection, batch3)
        killed = None
        for _ in range(400):
            running = [r for r in await continuous_runs(pg, schema) if r["status"] == "running" and r["phase"] == "load"]
            if running:
                killed = running[0]
                os.kill(killed["pid"], signal.SIGKILL)
                break
            await asyncio.sleep(0.05)
        assert killed is not None, "no micro-batch reached its load"
        # relaunched by a supervisor (the pid is gone), the killed run reaped, the rest counted once
        everything = batch1 + batch2 + extra + late + batch3
        await wait_star(pg, schema, everything, timeout=180)
        runs = {r["run_id"]: r for r in await continuous_runs(pg, schema)}
        assert runs[killed["run_id"]]["status"] == "failed"
        assert "gone" in runs[killed["run_id"]]["error"] or "exited" in runs[killed["run_id"]]["error"]
        assert workers_of(schema) and killed["pid"] not in workers_of(schema)
        st = await status(ca)
        assert any(b["healed"] for b in st["last_batches"])

        # off: the worker finishes and exits; the row says so
        r = await cb.delete("/continuous")
        assert r.status_code == 200 and r.json()["desired"] is False
        for _ in range(100):
            if not workers_of(schema):
                break
            await asyncio.sleep(0.2)
        assert not workers_of(schema)
        assert (await status(ca))["alive"] is False

    # the same content as one clean full run over the same documents (surrogate keys are given
    # in order of first load, so they follow the history; every natural key and measure is equal)
    clean = make_service(clean_schema)
    async with clean.client() as client:
        await run_ok(client, {"mode": "full"})
    assert natural_content(await star_rows(pg, schema)) == natural_content(await star_rows(pg, clean_schema))
    checksums, clean_checksums = await table_checksums(pg, schema), await table_checksums(pg, clean_schema)
    assert checksums["dim_date"] == clean_checksums["dim_date"]


SURROGATE = {"product_key", "country_key", "referrer_key", "device_key", "fact_key", "batch_id"}


def natural_content(rows: dict[str, list[asyncpg.Record]]) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows without surrogate keys and run ids, sorted: what an analyst reads."""
    return {t: sorted(tuple((k, v) for k, v in r.items() if k not in SURROGATE) for r in recs) for t, recs in rows.items()}
