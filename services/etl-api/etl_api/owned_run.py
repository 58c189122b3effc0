"""A claimed run's ownership while its job works: the owner token, the heartbeat that keeps
the run ``running`` (and ends the job when the row is reaped or cannot be written), and the
phase it reports. :class:`etl_api.job.Job` is an :class:`OwnedRun`; the rules are in
:mod:`etl_api.job`'s docstring."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time

import asyncpg

from etl_api.load import OwnershipLostError, lost_ownership_message, run_problems
from etl_api.schema import quote_ident
from etl_api.settings import EtlSettings
from shared.errors import PipelineError

log = logging.getLogger("etl_api.job")


class RunNotClaimableError(PipelineError, RuntimeError):
    """The run row is missing or not queued (another job took it, or it was already reaped)."""


class HeartbeatError(PipelineError, RuntimeError):
    """The heartbeat could not be written for too long: the job stops rather than work unowned."""


JOB_STOPS = "the job stopped"


def new_owner_token() -> str:
    """``<host>:<pid>:<16 random hex>``: who claimed a run (readable) and unique per claim."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(8)}"


def heartbeat_budget(settings: EtlSettings) -> float:
    """How long the heartbeat may fail to be written before the job stops: half the silence after
    which a reaper marks the run failed (at least one heartbeat interval)."""
    return max(settings.heartbeat_timeout_seconds / 2, settings.heartbeat_seconds)


class OwnedRun:
    """The ownership half of a job: needs ``settings``, ``run_id``, ``owner_token`` and ``phase``."""

    settings: EtlSettings
    run_id: str
    owner_token: str
    phase: str

    async def _connect(self) -> asyncpg.Connection:
        conn = await asyncpg.connect(self.settings.postgres_dsn.get_secret_value())
        await conn.execute(f"SET search_path TO {quote_ident(self.settings.pg_schema)}")
        return conn

    async def _touch(self, conn: asyncpg.Connection, phase: str) -> bool:
        """Heartbeat + phase, only on our own running row. False once our own load has committed
        (the row is ``succeeded`` with our token: nothing left to beat for); raises
        :class:`OwnershipLostError` when the row is no longer ours."""
        done = await conn.execute(
            "UPDATE etl_runs SET phase = $2, heartbeat_at = now() WHERE run_id = $1 AND status = 'running' AND owner_token = $3",
            self.run_id,
            phase,
            self.owner_token,
        )
        if done == "UPDATE 1":
            return True
        row = await conn.fetchrow("SELECT status, owner_token, finished_at, error FROM etl_runs WHERE run_id = $1", self.run_id)
        if row is not None and row["status"] == "succeeded" and row["owner_token"] == self.owner_token:
            return False
        problems = run_problems(self.owner_token, dict(row) if row else None) or ["the run's row was not updated"]
        raise OwnershipLostError(lost_ownership_message(problems, JOB_STOPS))

    async def _enter_phase(self, conn: asyncpg.Connection, phase: str) -> None:
        """Record the phase now (the heartbeat repeats it), so observers never see a stale one."""
        self.phase = phase
        if not await self._touch(conn, phase):
            raise OwnershipLostError(lost_ownership_message(["the run already succeeded"], JOB_STOPS))

    async def _heartbeat(self) -> None:
        """Write the heartbeat every ``heartbeat_seconds``; returns only once our load committed. Raises
        :class:`OwnershipLostError` as soon as the row is no longer ours (reaped), and
        :class:`HeartbeatError` when no heartbeat could be written for :func:`heartbeat_budget`
        seconds (each attempt reconnects; an attempt is bounded by the budget too)."""
        s = self.settings
        budget = heartbeat_budget(s)
        last_ok = time.monotonic()
        conn: asyncpg.Connection | None = None
        try:
            while True:
                try:
                    left = max(budget - (time.monotonic() - last_ok), 0.1)
                    if conn is None:
                        conn = await asyncio.wait_for(self._connect(), timeout=left)
                    if not await asyncio.wait_for(self._touch(conn, self.phase), timeout=left):
                        return  # our load committed
                except OwnershipLostError:
                    raise
                except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    silent = time.monotonic() - last_ok
                    if silent >= budget:
                        raise HeartbeatError(
                            f"heartbeat could not be written for {silent:.0f}s ({type(exc).__name__}: {exc}); {JOB_STOPS}"
                            " rather than work on a run it may no longer own"
                        ) from exc
                    log.warning("run %s: heartbeat failed (%s: %s); retrying", self.run_id, type(exc).__name__, exc)
                    if conn is not None:
                        with contextlib.suppress(Exception):
                            await conn.close(timeout=1)
                        conn = None
                    await asyncio.sleep(min(s.heartbeat_seconds, 1.0, max(budget - silent, 0.0)))
                    continue
                last_ok = time.monotonic()
                await asyncio.sleep(s.heartbeat_seconds)
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close(timeout=1)
