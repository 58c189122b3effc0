"""The API's side of continuous mode: keeps one worker running while it is desired, and the
``/continuous`` routes.

:class:`WorkerSupervisor.ensure` runs at every reaper tick and after ``PUT /continuous``: when
the row (:mod:`etl_api.continuous`) is desired and its worker is gone, it takes the row over
with a new token and launches ``python -m etl_api.worker`` in its own session (so the worker
survives an API restart, like a job). When the worker process it launched exits, the row is
released, and the next tick relaunches it (at most every ``RELAUNCH_PAUSE_S``). A worker that
died without a word (kill -9, OOM) is found by its pid on this host or by its silent heartbeat,
by any API instance; its micro-batch run is marked failed by the run reaper, like any run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from etl_api import continuous
from etl_api.ownership import new_owner_token
from etl_api.runs import spawn
from etl_api.schema import POSTGRES_FAILURES
from etl_api.settings import EtlSettings

log = logging.getLogger(__name__)


class WorkerSupervisor:
    def __init__(self, settings: EtlSettings, pool: asyncpg.Pool) -> None:
        self.settings = settings
        self.pool = pool
        self.host = socket.gethostname()
        self.child: asyncio.subprocess.Process | None = None
        self.child_token: str | None = None
        self._watchers: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()

    async def ensure(self) -> str | None:
        """Launches a worker if one is desired and none is alive; returns its token if it did."""
        async with self._lock:
            async with self.pool.acquire() as conn:
                row = await continuous.read_row(conn)
                if not row["desired"]:
                    return None
                why = continuous.worker_gone(row, self.settings.heartbeat_timeout_seconds, self.host)
                if why is None:
                    return None
                token = new_owner_token()
                if not await continuous.take_over(conn, row, token, f"{self.host}:{os.getpid()}"):
                    return None
            log.warning("continuous worker: %s; launching one (token %s)", why, token)
            try:
                await self._launch(token)
            except OSError as exc:
                async with self.pool.acquire() as conn:
                    await continuous.release(conn, token, "failed", f"could not start the worker process: {exc}")
                raise
            return token

    async def _launch(self, token: str) -> None:
        log_path = Path(self.settings.run_log_dir) / f"continuous-{datetime.now(UTC):%Y%m%dT%H%M%S}-{token.rsplit(':', 1)[-1]}.log"
        proc = await spawn(self.settings, log_path, "etl_api.worker", "--owner-token", token)
        self.child, self.child_token = proc, token
        log.info("continuous worker process %d started (log %s)", proc.pid, log_path)
        task = asyncio.create_task(self._watch(proc, token, log_path))
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    async def _watch(self, proc: asyncio.subprocess.Process, token: str, log_path: Path) -> None:
        code = await proc.wait()
        if self.child is proc:
            self.child, self.child_token = None, None
        tail = ""
        with contextlib.suppress(OSError):
            tail = log_path.read_text(errors="replace")[-800:]
        reason = None if code == 0 else f"worker process exited with code {code}\n{tail}"
        (log.info if code == 0 else log.error)("continuous worker process %d exited with %d", proc.pid, code)
        with contextlib.suppress(*POSTGRES_FAILURES):
            async with self.pool.acquire() as conn:
                await continuous.release(conn, token, "stopped" if code == 0 else "failed", reason)

    def stop_child(self) -> None:
        """SIGTERM to the worker this API launched (``DELETE /continuous``; a worker elsewhere sees
        the row no longer desired at its next heartbeat)."""
        if self.child is not None and self.child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.child.send_signal(signal.SIGTERM)

    async def close(self) -> None:
        """Stop watching; the worker keeps running (a restarted API finds it alive)."""
        for task in list(self._watchers):
            task.cancel()
        for task in list(self._watchers):
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def status(conn: asyncpg.Connection, settings: EtlSettings, detail: bool) -> dict[str, Any]:
    """What ``GET /continuous`` answers."""
    row = await continuous.read_row(conn)
    marks = await conn.fetchrow("SELECT now() AS now, (SELECT ingested_high FROM etl_watermark WHERE name = 'events') AS watermark")
    gone = continuous.worker_gone(row, settings.heartbeat_timeout_seconds)  # alive also while it finishes after DELETE
    behind = continuous.freshness(marks["watermark"], row["checked_high"], marks["now"])
    last = row["last_batches"] or []
    out = {
        "desired": row["desired"],
        "alive": gone is None,
        "state": row["state"],
        "reason": row["reason"] if gone is None else (row["reason"] or gone),
        "yield_requested_at": row["yield_requested_at"],
        # yielding to a one-off run is healthy (as the etl_continuous_ready gauge says)
        "ready": bool(row["desired"] and gone is None and row["state"] in ("running", "yielding")),
        "heartbeat_at": row["heartbeat_at"],
        "batches": row["batches"],
        "star_as_of": max([m for m in (marks["watermark"], row["checked_high"]) if m is not None], default=None),
        "behind_seconds": None if behind is None else round(behind, 3),
        "behind_events": int(last[0].get("events_read", 0)) if last else None,
        "interval_s": settings.continuous_interval_s,
        "last_batches": last,
        "owner_token": row["owner_token"] if detail else None,
        "host": row["host"] if detail else None,
        "pid": row["pid"] if detail else None,
        "detail": detail,
    }
    return out
