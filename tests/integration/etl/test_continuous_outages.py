"""Continuous mode through store outages, without touching the shared stack: the worker reads a
private FerretDB (SQLite, stopped and restarted at will) and reaches PostgreSQL through a TCP
relay of the test's own (killed and restarted: PostgreSQL unreachable for the API and the
worker). Started by ``ETL_CONTINUOUS=true``. Each outage: the worker waits and says why, then
resumes; events inserted before and during the outages are counted exactly once."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from pymongo import MongoClient

from tests.integration.etl.conftest import TEST_DB, workers_of
from tests.integration.etl.helpers import make_events
from tests.integration.etl.test_continuous import WORKER_ENV, status, wait_star
from tests.integration.etl.test_star_schema import insert
from tests.support.ferretdb import FERRETDB_BIN, PROXY, SqliteFerretDB, kill, wait_port
from tests.support.processes import free_port


class PgRelay:
    """A TCP relay to the stack's PostgreSQL that the test can take away."""

    def __init__(self, dsn: str) -> None:
        url = urlsplit(dsn)
        self.target = (url.hostname or "127.0.0.1", url.port or 5432)
        self.port = free_port()
        self.dsn = urlunsplit(url._replace(netloc=f"{url.username}:{url.password}@127.0.0.1:{self.port}"))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", PROXY, str(self.port), self.target[0], str(self.target[1])], start_new_session=True
        )
        wait_port(self.port)

    def stop(self) -> None:
        kill(self.proc)
        self.proc = None


async def wait_for(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got = await check()
        except (httpx.HTTPError, AssertionError):
            got = None
        if got:
            return got
        await asyncio.sleep(0.3)
    raise AssertionError(f"{what}: not within {timeout}s")


async def test_continuous_mode_waits_out_ferretdb_and_postgresql_outages_and_stays_exact(
    make_service, pg, postgres_dsn, unique_name, tmp_path: Path
) -> None:
    assert FERRETDB_BIN.exists(), f"{FERRETDB_BIN} missing: run `python -m infra.stack up`"
    ferret = SqliteFerretDB(tmp_path)
    relay = PgRelay(postgres_dsn)
    await asyncio.to_thread(ferret.start)
    relay.start()
    client: MongoClient[dict[str, Any]] = MongoClient(ferret.uri)
    coll = client[TEST_DB][unique_name]
    schema = unique_name.lower()
    d1, d2 = date(2020, 9, 1), date(2020, 9, 2)
    try:
        batch1 = make_events(random.Random(61), 120, [d1, d2], datetime.now(UTC))
        insert(coll, batch1)
        svc = make_service(
            schema,
            **WORKER_ENV,
            ETL_CONTINUOUS="true",
            MONGODB_URI=ferret.uri,
            MONGODB_COLLECTION=unique_name,
            POSTGRES_DSN=relay.dsn,
            ETL_FERRETDB_POSTGRESQL_URL="",  # SQLite backend: no PostgreSQL read index
            ETL_CONTINUOUS_BACKOFF_MAX_S="2",
        )
        async with svc.client() as api:
            await wait_star(pg, schema, batch1)
            await wait_for("ready (the worker's next heartbeat)", lambda: _ready(api), 30)

            # FerretDB down: the worker waits and says why; then it resumes
            await asyncio.to_thread(ferret.stop)
            st = await wait_for("waiting on MongoDB", lambda: _waiting(api), 60)
            assert st["alive"] and st["ready"] is False
            await asyncio.to_thread(ferret.start)
            batch2 = make_events(random.Random(62), 50, [d2], datetime.now(UTC), devices=30)
            insert(coll, batch2)
            await wait_star(pg, schema, batch1 + batch2)

            # PostgreSQL unreachable (API and worker) for 12 s while events arrive
            worker = workers_of(schema)
            relay.stop()
            batch3 = make_events(random.Random(63), 50, [d1, d2], datetime.now(UTC), devices=35)
            insert(coll, batch3)
            await asyncio.sleep(12)
            assert (await api.get("/ready")).status_code == 503
            relay.start()
            await wait_star(pg, schema, batch1 + batch2 + batch3)
            await wait_for("ready again", lambda: _ready(api), 60)
            assert workers_of(schema) == worker  # waited it out: the same worker process
        # no micro-batch left "running": a failed one was marked failed by its worker or reaped
        await svc_stopped(svc)
        stuck = await pg.fetchval(f"SELECT count(*) FROM \"{schema}\".etl_runs WHERE mode = 'continuous' AND status = 'running'")
        assert stuck == 0
    finally:
        client.close()
        relay.stop()
        await asyncio.to_thread(ferret.stop)


async def svc_stopped(svc: Any) -> None:
    """Continuous mode off and the worker gone, so no micro-batch is in flight."""
    async with svc.client() as api:
        assert (await api.delete("/continuous")).status_code == 200
    for _ in range(100):
        if not workers_of(svc.env["ETL_PG_SCHEMA"]):
            return
        await asyncio.sleep(0.2)
    raise AssertionError("the worker did not stop")


async def _waiting(api: httpx.AsyncClient) -> dict[str, Any] | None:
    st = await status(api)
    return st if st["state"] == "waiting" and st["reason"] else None


async def _ready(api: httpx.AsyncClient) -> bool:
    return bool((await status(api))["ready"])
