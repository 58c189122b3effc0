# ruff: noqa: E501
"""A run commits only while it still owns its window (issue 15), on real components.

- Two API instances (processes) on one PostgreSQL schema: run A, launched by the first, pauses
  inside its open load transaction (``ETL_FAULT_PAUSE_IN_LOAD_SECONDS``; its heartbeat interval is
  long, so it is silent meanwhile); the second instance, whose reaper allows 3 s of silence, marks
  it failed; run B starts on the second instance and succeeds (its load waits for A's
  transaction). A's commit is refused by the load's guard: A stays ``failed`` with the reason,
  and the star schema equals the plain-Python computation over the events and, checksum for
  checksum, one clean run in another schema. Meanwhile the job's environment has no
  ``ETL_API_TOKEN``, and anonymous ``GET /runs`` shows no error details, host, pid or owner.
- The load guard on PostgreSQL without Spark: a load committed by another run (a range run, which
  does not move the watermark) during the pause makes the commit refused, nothing written; an
  owned load commits and counts the generation.
- The heartbeat ends the job: when its run was reaped (at once), and when it cannot be written
  for half the reaper's timeout; the run work is cancelled and the run ends ``failed`` saying so.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from etl_api import ownership as owned_run
from etl_api.job import Job
from etl_api.load import LoadInput, load_star
from etl_api.ownership import HeartbeatError, OwnershipLostError, RunOwner, mark_failed, read_ownership
from etl_api.schema import apply_ddl, table_checksums
from etl_api.settings import EtlSettings

from tests.integration.etl.conftest import TOKEN
from tests.integration.etl.helpers import expected_star, make_events
from tests.integration.etl.test_crash_and_api import wait_for_fault_pause
from tests.integration.etl.test_star_schema import assert_star_equals, insert, run_ok, star_rows, wait_run

# Long enough for the second instance to start and reap A before A's check (its reaper allows 3 s
# of silence; measured: the reap 3-4 s after the pause began, at load averages of 13-21 on the
# 2 cores) and for B, started at once after the reap, to reach its load while A's transaction is
# still open (B's read and transform: ~20 s; its load then waits for A's refusal). Was 90 s.
PAUSE_S = 40


async def poll(fn: Any, what: str, timeout: float = 120, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await fn()
        if value:
            return value
        await asyncio.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def job_environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


async def test_reaped_run_cannot_commit_and_the_star_equals_one_clean_run(
    make_service, mongo_collection, pg, unique_name, tmp_path
) -> None:
    docs = make_events(random.Random(15), 300, [date(2020, 8, 1), date(2020, 8, 2)], datetime.now(UTC))
    insert(mongo_collection, docs)
    schema, clean_schema = unique_name.lower(), f"{unique_name.lower()}_clean"
    await asyncio.sleep(1.2)  # past the 1 s settle margin

    # instance 1 launches A: A pauses inside its load; it heartbeats only when it changes phase
    first = make_service(schema, ETL_FAULT_PAUSE_IN_LOAD_SECONDS=str(PAUSE_S), ETL_HEARTBEAT_SECONDS="600")
    async with first.client() as client, first.client(token=None) as anon:
        r = await client.post("/runs", json={"mode": "incremental"})
        assert r.status_code == 202, r.text
        run_a = r.json()["run_id"]
        await wait_for_fault_pause(tmp_path / "runs", run_a)
        paused = (await client.get(f"/runs/{run_a}")).json()
        assert paused["status"] == "running" and paused["phase"] == "load" and paused["detail"] is True
        assert paused["owner_token"].split(":")[1] == str(paused["pid"])
        pid_a = paused["pid"]
        # the job process never inherits the API's bearer token (the API's own environment has it)
        environ = job_environ(pid_a)
        assert "POSTGRES_DSN" in environ and environ["ETL_PG_SCHEMA"] == schema
        assert not [k for k in environ if k.upper() == "ETL_API_TOKEN"] and TOKEN not in environ.values()
        public = (await anon.get(f"/runs/{run_a}")).json()
        assert public["detail"] is False and public["host"] is None and public["pid"] is None and public["owner_token"] is None

    # instance 2 (a reaper allowing 3 s of silence) marks A failed while A's transaction is open
    second = make_service(schema, ETL_HEARTBEAT_TIMEOUT_SECONDS="3", ETL_HEARTBEAT_SECONDS="1")
    async with second.client() as client:

        async def a_reaped() -> dict[str, Any] | None:
            body = (await client.get(f"/runs/{run_a}")).json()
            return body if body["status"] == "failed" else None

        reaped = await poll(a_reaped, "run A reaped", timeout=60)
        assert reaped["error"].startswith("orphaned: no heartbeat for"), reaped["error"]
        assert os.path.exists(f"/proc/{pid_a}"), "A must still be paused in its load when reaped"

        # B starts from the same watermark (A committed nothing) and succeeds after A's refusal
        r = await client.post("/runs", json={"mode": "incremental"})
        assert r.status_code == 202, r.text
        # meanwhile, one clean run in another schema over the same events (it shares nothing with A
        # or B: running it now instead of after them saves its whole duration); compared below
        clean = await asyncio.to_thread(make_service, clean_schema)
        async with clean.client() as clean_client:
            clean_run = asyncio.create_task(run_ok(clean_client))
            try:
                run_b = await wait_run(client, r.json()["run_id"], timeout=PAUSE_S + 240)
                assert run_b["status"] == "succeeded", run_b["error"]

                async def a_refused() -> dict[str, Any] | None:
                    body = (await client.get(f"/runs/{run_a}")).json()
                    return body if "lost ownership" in (body["error"] or "") else None

                a_final = await poll(a_refused, "run A's refused commit", timeout=PAUSE_S + 60)
                await clean_run
            finally:
                clean_run.cancel()

    assert a_final["status"] == "failed"
    first_line, _, earlier = a_final["error"].partition("\n")
    assert first_line.startswith("lost ownership: run was reaped at "), a_final["error"]
    assert "(orphaned: no heartbeat for" in first_line and first_line.endswith("commit refused, nothing of this run was written")
    assert earlier.startswith("earlier: orphaned: no heartbeat for")
    await poll(lambda: asyncio.sleep(0, not os.path.exists(f"/proc/{pid_a}")), "A's job process to exit", timeout=30)

    # A's window was loaded exactly once, by B: the plain-Python star schema, and one clean run's checksums
    assert run_b["window_low"] is None and run_b["reconciliation"]["valid_views"] == expected_star(docs)["valid"]
    assert_star_equals(await star_rows(pg, schema), expected_star(docs), {run_b["run_id"]})
    generation = await pg.fetchrow(f'SELECT generation, run_id::text AS run_id FROM "{schema}".etl_load_generation')
    assert (generation["generation"], generation["run_id"]) == (1, run_b["run_id"])
    assert await table_checksums(pg, schema) == await table_checksums(pg, clean_schema)

    # anonymous GET /runs: statuses and a fixed-form summary, never a log tail or the full error
    await pg.execute(
        f"""INSERT INTO "{schema}".etl_runs (run_id, mode, status, error, host, pid, owner_token)
            VALUES ('00000000-0000-0000-0000-0000000000aa', 'full', 'failed',
                    E'job process exited with code -9\\nTraceback: SECRET-LOG-LINE postgresql://u:pw@db', 'h', 1, 'h:1:00')"""
    )
    async with second.client(token=None) as anon, second.client() as client, second.client(token="wrong") as wrong:
        listed = await anon.get("/runs")
        assert listed.status_code == 200
        assert "SECRET-LOG-LINE" not in listed.text and "Traceback" not in listed.text and "earlier:" not in listed.text
        by_id = {r["run_id"]: r for r in listed.json()}
        assert by_id[run_a]["error"] == by_id[run_a]["error_summary"] == "lost ownership: commit refused (details with the bearer token)"
        assert by_id["00000000-0000-0000-0000-0000000000aa"]["error"] == "job process exited with code -9 (details with the bearer token)"
        assert all(r["host"] is None and r["pid"] is None and r["owner_token"] is None and not r["detail"] for r in by_id.values())
        single = await anon.get("/runs/00000000-0000-0000-0000-0000000000aa")
        assert "SECRET-LOG-LINE" not in single.text
        full = (await client.get("/runs")).json()
        assert any("SECRET-LOG-LINE" in (r["error"] or "") for r in full) and all(r["detail"] for r in full)
        assert (await wrong.get("/runs")).status_code == 401


# ---- the load guard and the heartbeat on PostgreSQL, without Spark


@pytest.fixture
async def run_schema(pg: asyncpg.Connection, schemas: list[str], unique_name: str) -> str:
    schema = unique_name.lower()
    schemas.append(schema)
    await apply_ddl(pg, schema)
    return schema


async def claim(pg: asyncpg.Connection, schema: str, mode: str = "range", token: str = "test:1:0011223344556677") -> str:
    run_id = str(uuid.uuid4())
    await pg.execute(
        f"""INSERT INTO "{schema}".etl_runs (run_id, mode, status, started_at, heartbeat_at, owner_token)
            VALUES ($1, $2, 'running', now(), now(), $3)""",
        run_id,
        mode,
        token,
    )
    return run_id


async def nothing() -> AsyncIterator[list[tuple[Any, ...]]]:
    return
    yield []


def empty_load(run_id: str, ownership: Any, pause: float = 0.0) -> LoadInput:
    dims = {t: nothing() for t in ("dim_product", "dim_country", "dim_referrer", "dim_device")}
    return LoadInput(
        run_id=run_id,
        mode="range",
        ownership=ownership,
        replace_all_facts=False,
        touched_dates=[date(2020, 8, 1)],
        dims=dims,
        facts=nothing(),
        valid_views=0,
        watermark=None,
        ingested_high=datetime(2026, 12, 2, tzinfo=UTC),
        run_fields={},
        fault_pause_seconds=pause,
    )


async def test_load_guard_refuses_a_commit_after_another_runs_load(postgres_dsn, pg, run_schema) -> None:
    run_id = await claim(pg, run_schema)
    token = await pg.fetchval(f'SELECT owner_token FROM "{run_schema}".etl_runs WHERE run_id = $1', run_id)
    conn = await asyncpg.connect(postgres_dsn)
    try:
        await conn.execute(f'SET search_path TO "{run_schema}"')
        ownership = await read_ownership(conn, token)
        assert (ownership.watermark, ownership.generation) == (None, 0)
        load = asyncio.create_task(load_star(conn, run_schema, empty_load(run_id, ownership, pause=3)))
        await asyncio.sleep(1.5)  # inside the pause: another run's range load commits (it does not move the watermark)
        other = "bbbbbbbb-0000-0000-0000-000000000002"
        await pg.execute(
            f"UPDATE \"{run_schema}\".etl_load_generation SET generation = generation + 1, run_id = $1, mode = 'range', committed_at = now()",
            other,
        )
        with pytest.raises(OwnershipLostError) as err:
            await load
        assert str(err.value).startswith(f"lost ownership: run {other} (range) at ")
        assert "committed a load since this run started (load generation 0 → 1)" in str(err.value)
        # nothing of the refused load is visible
        assert await pg.fetchval(f'SELECT count(*) FROM "{run_schema}".etl_date_loads') == 0
        assert await pg.fetchval(f'SELECT status FROM "{run_schema}".etl_runs WHERE run_id = $1', run_id) == "running"

        # an owned run with an unchanged window commits, and counts the generation
        await pg.execute(f"UPDATE \"{run_schema}\".etl_runs SET status = 'failed' WHERE run_id = $1", run_id)
        run2 = await claim(pg, run_schema, token="test:2:8899aabbccddeeff")
        ownership2 = await read_ownership(conn, "test:2:8899aabbccddeeff")
        await load_star(conn, run_schema, empty_load(run2, ownership2))
        row = await pg.fetchrow(f'SELECT generation, run_id::text AS run_id, mode FROM "{run_schema}".etl_load_generation')
        assert tuple(row.values()) == (2, run2, "range")
        assert await pg.fetchval(f'SELECT status FROM "{run_schema}".etl_runs WHERE run_id = $1', run2) == "succeeded"
        assert (await pg.fetchval(f'SELECT timings FROM "{run_schema}".etl_runs WHERE run_id = $1', run2)).count("ownership_check_seconds")
    finally:
        await conn.close()


def job_settings(schema: str, **kw: Any) -> EtlSettings:
    return EtlSettings(pg_schema=schema, heartbeat_seconds=0.2, heartbeat_timeout_seconds=1.0, **kw)  # type: ignore[call-arg]


async def start_job(pg: asyncpg.Connection, schema: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Job, str, dict[str, bool]]:
    """A job whose run work (no Spark) sleeps until cancelled."""
    run_id = str(uuid.uuid4())
    await pg.execute(f"INSERT INTO \"{schema}\".etl_runs (run_id, mode, status) VALUES ($1, 'incremental', 'queued')", run_id)
    seen = {"cancelled": False}

    async def work(self: Job, conn: asyncpg.Connection, claim: Any) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            seen["cancelled"] = True
            raise

    monkeypatch.setattr(Job, "_run", work)
    return Job(job_settings(schema), run_id), run_id, seen


async def test_heartbeat_ends_the_job_when_its_run_was_reaped(pg, run_schema, monkeypatch) -> None:
    job, run_id, seen = await start_job(pg, run_schema, monkeypatch)
    task = asyncio.create_task(job.run())

    async def running() -> bool:
        return await pg.fetchval(f'SELECT status FROM "{run_schema}".etl_runs WHERE run_id = $1', run_id) == "running"

    await poll(running, "the job's claim", timeout=10, every=0.05)
    await pg.execute(
        f"UPDATE \"{run_schema}\".etl_runs SET status = 'failed', finished_at = now(), error = 'orphaned: no heartbeat for 9s' WHERE run_id = $1",
        run_id,
    )
    started = time.monotonic()
    with pytest.raises(OwnershipLostError) as err:
        await asyncio.wait_for(task, timeout=10)
    assert time.monotonic() - started < 2  # within a heartbeat interval or so
    assert seen["cancelled"]
    message = str(err.value)
    assert message.startswith("lost ownership: run was reaped at ") and message.endswith("(orphaned: no heartbeat for 9s); the job stopped")
    # what main() then records: the job's reason first, the reaper's after it; still failed
    await mark_failed(job.settings, run_id, message, job.owner_token)
    row = await pg.fetchrow(f'SELECT status, error FROM "{run_schema}".etl_runs WHERE run_id = $1', run_id)
    assert row["status"] == "failed" and row["error"] == f"{message}\nearlier: orphaned: no heartbeat for 9s"


async def test_heartbeat_that_cannot_be_written_ends_the_job(pg, run_schema, monkeypatch) -> None:
    job, run_id, seen = await start_job(pg, run_schema, monkeypatch)
    connect = RunOwner.connect
    calls = {"n": 0}

    async def flaky_connect(self: RunOwner) -> asyncpg.Connection:
        calls["n"] += 1
        if calls["n"] > 1:  # the claim's connection works; the heartbeat's never does (PostgreSQL unreachable)
            raise ConnectionRefusedError(111, "Connection refused")
        return await connect(self)

    monkeypatch.setattr(RunOwner, "connect", flaky_connect)
    started = time.monotonic()
    with pytest.raises(HeartbeatError) as err:
        await asyncio.wait_for(job.run(), timeout=10)
    assert 0.4 < time.monotonic() - started < 5  # the budget: max(timeout / 2, interval) = 0.5 s
    assert seen["cancelled"] and calls["n"] >= 3
    assert str(err.value).startswith("heartbeat could not be written for ")
    assert "ConnectionRefusedError" in str(err.value) and owned_run.JOB_STOPS in str(err.value)
    await mark_failed(job.settings, run_id, str(err.value), job.owner_token)
    row = await pg.fetchrow(f'SELECT status, error FROM "{run_schema}".etl_runs WHERE run_id = $1', run_id)
    assert row["status"] == "failed" and row["error"] == str(err.value)
