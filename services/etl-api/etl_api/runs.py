"""Run bookkeeping in ``etl_runs`` and the launcher of job processes.

- :func:`create_run` inserts a ``queued`` row; the partial unique index ``etl_runs_one_active``
  lets at most one queued/running run exist per schema, so a concurrent request gets
  :class:`RunActiveError` (HTTP 409) even across several API instances.
- :class:`RunLauncher` starts ``python -m etl_api.job`` in its own session (a separate process,
  never the API's event loop), waits for it, and marks the run failed if it exits without having
  finished it (crash, kill -9, OOM).
- :meth:`RunLauncher.reap` (at start and periodically) marks failed every active run whose
  process is gone (pid dead on this host, or no heartbeat for ``heartbeat_timeout_seconds``):
  a run is never left "running" forever, also after an API restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import uuid
from datetime import date
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from etl_api.schema import POSTGRES_FAILURES
from etl_api.settings import EtlSettings
from shared.errors import PipelineError

log = logging.getLogger(__name__)

RUN_COLUMNS = (
    "run_id, mode, date_from, date_to, status, phase, requested_at, started_at, finished_at, heartbeat_at, host, pid, "
    "window_low, window_high, touched_dates, counts, timings, reconciliation, error, owner_token"
)


class RunActiveError(PipelineError, RuntimeError):
    """Another run is queued or running (409): nothing was created, the same request may succeed later."""

    retriable = True


async def init_connection(conn: asyncpg.Connection) -> None:
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(typ, encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads, schema="pg_catalog")


async def create_run(conn: asyncpg.Connection, mode: str, date_from: date | None, date_to: date | None) -> str:
    run_id = str(uuid.uuid4())
    try:
        await conn.execute(
            "INSERT INTO etl_runs (run_id, mode, date_from, date_to, status) VALUES ($1, $2, $3, $4, 'queued')",
            run_id,
            mode,
            date_from,
            date_to,
        )
    except asyncpg.UniqueViolationError as exc:
        raise RunActiveError("another run is queued or running") from exc
    return run_id


async def get_run(conn: asyncpg.Connection, run_id: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(f"SELECT {RUN_COLUMNS} FROM etl_runs WHERE run_id = $1", run_id)
    return dict(row) if row else None


async def list_runs(conn: asyncpg.Connection, limit: int, status: str | None = None) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        f"SELECT {RUN_COLUMNS} FROM etl_runs WHERE ($2::text IS NULL OR status = $2) ORDER BY requested_at DESC LIMIT $1", limit, status
    )
    return [dict(r) for r in rows]


async def mark_failed(conn: asyncpg.Connection, run_id: str, error: str) -> bool:
    status = await conn.execute(
        "UPDATE etl_runs SET status = 'failed', phase = NULL, finished_at = now(), error = $2 "
        "WHERE run_id = $1 AND status IN ('queued', 'running')",
        run_id,
        error[:4000],
    )
    return status.endswith(" 1")


async def spawn(settings: EtlSettings, log_path: Path, module: str, *args: str) -> asyncio.subprocess.Process:
    """``python -m module *args`` in its own session (it outlives the API), its output appended to
    ``log_path``, with the job environment (never the API token)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = settings.job_process_environment(os.environ)
    with log_path.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", module, *args, env=env, stdout=out, stderr=asyncio.subprocess.STDOUT, start_new_session=True
        )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is dead too
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as fh:
        if fh.read().rsplit(")", 1)[-1].split()[0] == "Z":
            return False
    return True


class RunLauncher:
    def __init__(self, settings: EtlSettings, pool: asyncpg.Pool, on_finished: Any = None) -> None:
        self.settings = settings
        self.pool = pool
        self.host = socket.gethostname()
        self.children: dict[str, asyncio.subprocess.Process] = {}
        self._watchers: set[asyncio.Task[None]] = set()
        self.on_finished = on_finished  # callback(run_id, status) for metrics

    async def launch(self, run_id: str) -> None:
        log_path = Path(self.settings.run_log_dir) / f"{run_id}.log"
        proc = await spawn(self.settings, log_path, "etl_api.job", "--run-id", run_id)
        self.children[run_id] = proc
        log.info("run %s: job process %d started (log %s)", run_id, proc.pid, log_path, extra={"run_id": run_id})
        task = asyncio.create_task(self._watch(run_id, proc, log_path))
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    async def _watch(self, run_id: str, proc: asyncio.subprocess.Process, log_path: Path) -> None:
        code = await proc.wait()
        self.children.pop(run_id, None)
        tail = ""
        with contextlib.suppress(OSError):
            tail = log_path.read_text(errors="replace")[-1500:]
        async with self.pool.acquire() as conn:
            if code != 0:
                marked = await mark_failed(conn, run_id, f"job process exited with code {code}\n{tail}")
                if marked:
                    log.error(
                        "run %s: job process exited with %d; marked failed", run_id, code, extra={"run_id": run_id, "exit_code": code}
                    )
            else:
                await mark_failed(conn, run_id, "job process exited 0 without finishing the run")
            row = await conn.fetchrow("SELECT status FROM etl_runs WHERE run_id = $1", run_id)
        if self.on_finished and row:
            self.on_finished(run_id, row["status"])

    async def reap(self) -> list[str]:
        """Mark failed every active run whose job is gone; returns their ids."""
        reaped = []
        timeout = self.settings.heartbeat_timeout_seconds
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT run_id::text AS run_id, status, host, pid, "
                "extract(epoch FROM now() - coalesce(heartbeat_at, requested_at)) AS silent "
                "FROM etl_runs WHERE status IN ('queued', 'running')"
            )
            for r in rows:
                if r["run_id"] in self.children:
                    continue  # our own child: its watcher decides
                reason = None
                if r["host"] == self.host and r["pid"] and not _pid_alive(r["pid"]):
                    reason = f"orphaned: job process {r['pid']} is gone (API restarted or job crashed)"
                elif r["silent"] is not None and float(r["silent"]) > timeout:
                    reason = f"orphaned: no heartbeat for {float(r['silent']):.0f}s"
                if reason and await mark_failed(conn, r["run_id"], reason):
                    log.error("run %s: %s; marked failed", r["run_id"], reason, extra={"run_id": r["run_id"]})
                    reaped.append(r["run_id"])
                    if self.on_finished:
                        self.on_finished(r["run_id"], "failed")
        return reaped

    async def reap_forever(self) -> None:
        while True:
            try:
                await self.reap()
            except POSTGRES_FAILURES as exc:
                log.warning("reaper: %s", exc)
            await asyncio.sleep(self.settings.reaper_interval_seconds)

    async def close(self) -> None:
        """Stop watching; running jobs keep running (a restarted API's reaper takes over)."""
        for task in list(self._watchers):
            task.cancel()
        for task in list(self._watchers):
            with contextlib.suppress(asyncio.CancelledError):
                await task
