"""LOG_FORMAT=json on a real ``python -m etl_api`` process: every line it writes (uvicorn's too) is
one JSON object with the fixed keys, and the reaper's line about a run carries its ``run_id``."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
import uuid
from typing import Any

import asyncpg

FIXED = ["ts", "level", "logger", "message", "service"]


async def test_the_api_logs_one_json_object_per_line_with_structured_run_fields(
    make_service: Any, pg: asyncpg.Connection, unique_name: str
) -> None:
    schema = unique_name.lower()
    svc = make_service(schema, LOG_FORMAT="json")
    dead = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await dead.wait()  # a pid that is gone: the reaper marks the run failed and logs it
    run_id = str(uuid.uuid4())
    await pg.execute(
        f"""INSERT INTO "{schema}".etl_runs (run_id, mode, status, started_at, heartbeat_at, host, pid, owner_token)
            VALUES ($1, 'full', 'running', now(), now(), $2, $3, 'test:owner')""",
        uuid.UUID(run_id),
        socket.gethostname(),
        dead.pid,
    )
    deadline = time.monotonic() + 30
    while await pg.fetchval(f'SELECT status FROM "{schema}".etl_runs WHERE run_id = $1', uuid.UUID(run_id)) != "failed":
        assert time.monotonic() < deadline, "the reaper did not mark the orphaned run failed"
        await asyncio.sleep(0.2)
    svc.stop()

    lines = svc.log_path.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is JSON: nothing else reaches the log
    assert records, "no log lines"
    for rec in records:
        assert list(rec)[:5] == FIXED, rec
        assert (rec["service"], rec["hop"]) == ("etl-api", "etl"), rec
    reaped = [r for r in records if r.get("run_id") == run_id]
    assert reaped == [
        {
            "ts": reaped[0]["ts"],
            "level": "ERROR",
            "logger": "etl_api.runs",
            "message": f"run {run_id}: orphaned: job process {dead.pid} is gone (API restarted or job crashed); marked failed",
            "service": "etl-api",
            "run_id": run_id,
            "hop": "etl",
        }
    ]
    assert reaped[0]["ts"].endswith("Z") and len(reaped[0]["ts"]) == len("2026-01-01T00:00:00.000Z")
    assert any(r["logger"] == "__main__" and r["message"].startswith("settings: ") for r in records)
