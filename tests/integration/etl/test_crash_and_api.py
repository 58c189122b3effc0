"""Idempotency across a crash, and the API's contract.

- A run killed (kill -9 of its process group) inside its open load transaction, with the API
  killed too, leaves every table as it was; the restarted API marks the run failed; a re-run
  gives a schema whose checksum equals one clean run's (another schema, same events).
- 401 without / with a wrong token, 422 on bad bodies, 409 while a run is active, and the
  status of a failed run.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from etl_api.schema import table_checksums

from tests.integration.etl.helpers import make_events
from tests.integration.etl.test_star_schema import insert, run_ok, wait_run

PAUSE = "300"


async def wait_for_fault_pause(log_dir: Path, run_id: str, timeout: float = 240) -> None:
    """Until the job says it is paused inside its open load transaction."""
    deadline = time.monotonic() + timeout
    path = log_dir / f"{run_id}.log"
    while time.monotonic() < deadline:
        if path.exists() and "fault injection: pausing" in path.read_text(errors="replace"):
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"run {run_id} never reached the load pause:\n{path.read_text(errors='replace')[-3000:] if path.exists() else ''}")


async def test_killed_run_rolls_back_and_rerun_equals_clean_run(make_service, mongo_collection, pg, unique_name, tmp_path) -> None:
    docs = make_events(random.Random(21), 300, [date(2020, 6, 10), date(2020, 6, 11)], datetime.now(UTC))
    insert(mongo_collection, docs)
    clean_schema, crash_schema = f"{unique_name.lower()}_clean", f"{unique_name.lower()}_crash"
    await asyncio.sleep(1.2)

    # the crash: the job is killed with the load transaction open, and the API with it
    faulty = make_service(crash_schema, ETL_FAULT_PAUSE_IN_LOAD_SECONDS=PAUSE)
    empty = await table_checksums(pg, crash_schema)
    async with faulty.client() as client:
        r = await client.post("/runs", json={"mode": "incremental"})
        assert r.status_code == 202
        run_id = r.json()["run_id"]
        await wait_for_fault_pause(tmp_path / "runs", run_id)
        job_pid = (await client.get(f"/runs/{run_id}")).json()["pid"]
    faulty.kill()
    os.killpg(job_pid, signal.SIGKILL)
    assert await table_checksums(pg, crash_schema) == empty  # nothing of the killed run is visible

    # the restarted API marks the orphaned run failed, then a re-run completes it
    restarted = make_service(crash_schema)
    async with restarted.client() as client:
        failed = (await client.get(f"/runs/{run_id}")).json()
        assert failed["status"] == "failed" and failed["error"].startswith("orphaned: job process"), failed
        await run_ok(client)
    crashed_then_rerun = await table_checksums(pg, crash_schema)

    # one clean run over the same events, in its own schema
    clean = make_service(clean_schema)
    async with clean.client() as client:
        await run_ok(client)
    assert await table_checksums(pg, clean_schema) == crashed_then_rerun
    assert crashed_then_rerun != empty


async def test_api_auth_validation_conflict_and_failed_status(make_service, mongo_collection, unique_name, tmp_path) -> None:
    insert(mongo_collection, make_events(random.Random(3), 20, [date(2020, 6, 5)], datetime.now(UTC)))
    svc = make_service(unique_name.lower(), ETL_FAULT_PAUSE_IN_LOAD_SECONDS=PAUSE)
    async with svc.client(token=None) as anon, svc.client(token="wrong") as wrong, svc.client() as client:
        assert (await anon.post("/runs", json={"mode": "full"})).status_code == 401
        assert (await wrong.post("/runs", json={"mode": "full"})).status_code == 401
        for bad in (
            {"mode": "sideways"},
            {"mode": "range"},
            {"mode": "range", "date_from": "2020-06-05", "date_to": "2020-06-01"},
            {"mode": "full", "date_from": "2020-06-05"},
            {"mode": "incremental", "extra": 1},
            {"mode": "range", "date_from": "yesterday", "date_to": "2020-06-01"},
        ):
            r = await client.post("/runs", json=bad)
            assert r.status_code == 422, (bad, r.text)
        assert (await client.get("/runs/not-a-uuid")).status_code == 422
        assert (await client.get("/runs/00000000-0000-0000-0000-000000000000")).status_code == 404
        assert (await anon.get("/health")).json()["status"] == "ok"
        assert (await anon.get("/ready")).status_code == 200
        assert "/runs" in (await anon.get("/openapi.json")).json()["paths"]
        assert (await anon.get("/docs")).status_code == 200

        r = await client.post("/runs", json={"mode": "incremental"})
        assert r.status_code == 202
        run_id = r.json()["run_id"]
        conflict = await client.post("/runs", json={"mode": "full"})
        assert conflict.status_code == 409, conflict.text
        await wait_for_fault_pause(tmp_path / "runs", run_id)
        running = (await client.get(f"/runs/{run_id}")).json()
        assert running["status"] == "running" and running["phase"] == "load"
        assert (await client.post("/runs", json={"mode": "range", "date_from": "2020-06-05", "date_to": "2020-06-05"})).status_code == 409
        os.killpg(running["pid"], signal.SIGKILL)  # a crash (OOM, kill -9): the API sees its child die
        failed = await wait_run(client, run_id, timeout=30)
        assert failed["status"] == "failed"
        assert failed["error"].startswith("job process exited with code -9"), failed["error"]
        assert failed["finished_at"] is not None
        listed = (await client.get("/runs", params={"status": "failed"})).json()
        assert [r["run_id"] for r in listed] == [run_id]
        metrics = (await anon.get("/metrics")).text
        assert 'etl_runs_finished_total{status="failed"} 1.0' in metrics
        assert "etl_runs_rejected_active_total 2.0" in metrics


@pytest.mark.parametrize("token", [None])
async def test_writes_refused_without_configured_token(make_service, unique_name, token) -> None:
    svc = make_service(unique_name.lower(), ETL_API_TOKEN="")
    async with svc.client() as client:
        assert (await client.post("/runs", json={"mode": "full"})).status_code == 503
