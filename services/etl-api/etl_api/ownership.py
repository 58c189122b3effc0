"""Ownership of a run: who may commit a window, and how a process keeps and loses it.

A run (a one-off run or one micro-batch of the continuous worker) is an ``etl_runs`` row. The
process that works on it:

1. **claims** it (:func:`claim_run`: ``queued → running``) with an owner token of its own
   (:func:`new_owner_token`) and reads, in one statement, the window's state it plans from
   (:class:`Ownership`: the watermark and the load generation, :func:`read_ownership`);
2. **heartbeats** while it works (:class:`RunOwner`, :func:`work_owned`): every heartbeat and
   phase change writes the row only where it is still ``running`` with that token. A heartbeat
   that finds the row reaped or taken ends the work at once (``lost ownership: …; the job
   stopped``); one that cannot be written for :func:`heartbeat_budget` (PostgreSQL unreachable:
   a reaper may be about to mark the run failed) ends it too (:class:`HeartbeatError`). The work
   is cancelled: an open load transaction rolls back;
3. **commits** only through the load's guard (:func:`check_ownership`, called by
   :func:`etl_api.load.load_star`), which under row locks refuses unless the run is still
   ``running`` with this token, the watermark is the one read at the claim and no other load
   committed since (the load generation). The guard is the last word; the heartbeat only stops
   work early.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, TypeVar

import asyncpg

from etl_api.schema import POSTGRES_FAILURES, quote_ident
from etl_api.settings import EtlSettings
from shared.errors import PipelineError

log = logging.getLogger("etl_api.job")

T = TypeVar("T")


class RunNotClaimableError(PipelineError, RuntimeError):
    """The run row is missing or not queued (another job took it, or it was already reaped)."""


class HeartbeatError(PipelineError, RuntimeError):
    """The heartbeat could not be written for too long: the job stops rather than work unowned."""


JOB_STOPS = "the job stopped"


class OwnershipLostError(PipelineError, RuntimeError):
    """The run no longer owns its window (reaped, taken over, or another load committed since it
    started): nothing of it may be committed. The message starts with ``lost ownership:``."""


@dataclass(frozen=True)
class Ownership:
    """What a run owns, as read when it started: its owner token and the window's state."""

    owner_token: str
    watermark: datetime | None  # etl_watermark 'events'.ingested_high at the start (None: no watermark yet)
    watermark_run_id: str | None
    generation: int  # etl_load_generation.generation at the start


# One statement, so the watermark and the generation come from one snapshot.
OWNERSHIP_START_SQL = """
    SELECT (SELECT ingested_high FROM etl_watermark WHERE name = 'events') AS watermark,
           (SELECT run_id::text FROM etl_watermark WHERE name = 'events') AS watermark_run_id,
           (SELECT generation FROM etl_load_generation WHERE id = 1) AS generation
"""


async def read_ownership(conn: asyncpg.Connection, owner_token: str) -> Ownership:
    """The window's state now, for a run that has just claimed its row with ``owner_token``."""
    row = await conn.fetchrow(OWNERSHIP_START_SQL)
    return Ownership(owner_token, row["watermark"], row["watermark_run_id"], int(row["generation"] or 0))


def _first_line(text: str | None, limit: int = 200) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line[:limit]


def _iso(value: datetime | None) -> str:
    return value.isoformat() if value is not None else "none"


def run_problems(owner_token: str, run: Mapping[str, Any] | None) -> list[str]:
    """Why the run row ``run`` (status, owner_token, finished_at, error) is not owned by ``owner_token``
    any more (empty: it still is)."""
    if run is None:
        return ["the run's etl_runs row is gone"]
    problems = []
    if run["status"] != "running":
        cause = _first_line(run.get("error"))
        when = f" at {_iso(run['finished_at'])}" if run.get("finished_at") else ""
        verb = "was reaped" if run["status"] == "failed" else f"is {run['status']}"
        problems.append(f"run {verb}{when}" + (f" ({cause})" if cause else ""))
    if run["owner_token"] != owner_token:
        problems.append(f"run is owned by {run['owner_token'] or 'nobody'}, not by this process ({owner_token})")
    return problems


def ownership_problems(
    expected: Ownership, run: Mapping[str, Any] | None, watermark: Mapping[str, Any] | None, generation: Mapping[str, Any] | None
) -> list[str]:
    """Why a run may not commit (empty: it may). ``run``: its ``etl_runs`` row (status, owner_token,
    finished_at, error); ``watermark``: the 'events' row (ingested_high, run_id) or None;
    ``generation``: the ``etl_load_generation`` row (generation, run_id, mode, committed_at)."""
    problems = run_problems(expected.owner_token, run)
    now_wm = watermark["ingested_high"] if watermark else None
    now_wm_run = str(watermark["run_id"]) if watermark else None
    if now_wm != expected.watermark or (now_wm is not None and now_wm_run != expected.watermark_run_id):
        problems.append(f"watermark moved from {_iso(expected.watermark)} to {_iso(now_wm)} by run {now_wm_run}")
    now_gen = int(generation["generation"]) if generation else 0
    if now_gen != expected.generation:
        who = f"run {generation['run_id']} ({generation['mode']}) at {_iso(generation['committed_at'])}" if generation else "another run"
        problems.append(f"{who} committed a load since this run started (load generation {expected.generation} → {now_gen})")
    return problems


COMMIT_REFUSED = "commit refused, nothing of this run was written"


def lost_ownership_message(problems: Sequence[str], outcome: str = COMMIT_REFUSED) -> str:
    return "lost ownership: " + "; ".join(problems) + "; " + outcome


async def check_ownership(conn: asyncpg.Connection, run_id: str, expected: Ownership, *, lock: bool) -> None:
    """Raise :class:`OwnershipLostError` unless ``run_id`` still owns its window. ``lock``: inside
    the load transaction, lock the generation, watermark and run rows (in that order) until COMMIT."""
    suffix = " FOR UPDATE" if lock else ""
    generation = await conn.fetchrow(
        f"SELECT generation, run_id::text AS run_id, mode, committed_at FROM etl_load_generation WHERE id = 1{suffix}"
    )
    watermark = await conn.fetchrow(f"SELECT ingested_high, run_id::text AS run_id FROM etl_watermark WHERE name = 'events'{suffix}")
    run = await conn.fetchrow(f"SELECT status, owner_token, finished_at, error FROM etl_runs WHERE run_id = $1{suffix}", run_id)
    problems = ownership_problems(
        expected, dict(run) if run else None, dict(watermark) if watermark else None, dict(generation) if generation else None
    )
    if problems:
        raise OwnershipLostError(lost_ownership_message(problems))


def new_owner_token() -> str:
    """``<host>:<pid>:<16 random hex>``: who claimed a run (readable) and unique per claim."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(8)}"


def heartbeat_budget(settings: EtlSettings) -> float:
    """How long the heartbeat may fail to be written before the job stops: half the silence after
    which a reaper marks the run failed (at least one heartbeat interval)."""
    return max(settings.heartbeat_timeout_seconds / 2, settings.heartbeat_seconds)


@dataclass(frozen=True)
class Claim:
    """A run just claimed: what it was asked to do and the window's state it plans from."""

    run_id: str
    mode: str
    date_from: date | None
    date_to: date | None
    ownership: Ownership


CLAIM_SQL = """UPDATE etl_runs SET status = 'running', phase = 'starting', started_at = now(), heartbeat_at = now(),
                      pid = $2, host = $3, owner_token = $4
               WHERE run_id = $1 AND status = 'queued' RETURNING mode, date_from, date_to"""


async def claim_run(conn: asyncpg.Connection, run_id: str, owner_token: str) -> Claim:
    """``queued → running`` with ``owner_token``; :class:`RunNotClaimableError` when it is not queued."""
    row = await conn.fetchrow(CLAIM_SQL, run_id, os.getpid(), socket.gethostname(), owner_token)
    if row is None:
        raise RunNotClaimableError(f"run {run_id} is not queued")
    ownership = await read_ownership(conn, owner_token)
    log.info("run %s claimed by %s (%s)", run_id, owner_token, ownership)
    return Claim(run_id, row["mode"], row["date_from"], row["date_to"], ownership)


async def connect(settings: EtlSettings) -> asyncpg.Connection:
    conn = await asyncpg.connect(settings.postgres_dsn.get_secret_value())
    await conn.execute(f"SET search_path TO {quote_ident(settings.pg_schema)}")
    return conn


class RunOwner:
    """The heartbeat of one claimed run (see the module): its token, its phase, its row."""

    def __init__(self, settings: EtlSettings, run_id: str, owner_token: str) -> None:
        self.settings = settings
        self.run_id = run_id
        self.owner_token = owner_token
        self.phase = "starting"

    async def connect(self) -> asyncpg.Connection:
        return await connect(self.settings)

    async def touch(self, conn: asyncpg.Connection, phase: str) -> bool:
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

    async def enter_phase(self, conn: asyncpg.Connection, phase: str) -> None:
        """Record the phase now (the heartbeat repeats it), so observers never see a stale one."""
        self.phase = phase
        if not await self.touch(conn, phase):
            raise OwnershipLostError(lost_ownership_message(["the run already succeeded"], JOB_STOPS))

    async def heartbeat(self) -> None:
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
                        conn = await asyncio.wait_for(self.connect(), timeout=left)
                    if not await asyncio.wait_for(self.touch(conn, self.phase), timeout=left):
                        return  # our load committed
                except OwnershipLostError:
                    raise
                except POSTGRES_FAILURES as exc:
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


async def work_owned(owner: RunOwner, work: Callable[[], Awaitable[T]]) -> T:
    """Runs ``work()`` beside ``owner``'s heartbeat; a heartbeat that fails (lost ownership, no
    heartbeat) cancels the work (its ``finally`` blocks run: an open load transaction rolls back)
    and its error is raised."""
    beat = asyncio.create_task(owner.heartbeat(), name="heartbeat")
    task: asyncio.Task[T] = asyncio.ensure_future(work())
    try:
        await asyncio.wait({beat, task}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done() and beat.exception() is not None:
            log.error("run %s: %s", owner.run_id, beat.exception())
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            beat.result()
        return await task
    finally:
        for t in (beat, task):
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t


async def mark_failed(settings: EtlSettings, run_id: str, error: str, owner_token: str | None = None) -> None:
    """The run ends ``failed`` with ``error``. A run that was already marked failed (reaped) by
    someone else while this process still owned it gets ``error`` in front of the earlier one,
    so it says why this process stopped too (e.g. its refused commit)."""
    conn = await asyncpg.connect(settings.postgres_dsn.get_secret_value())
    try:
        await conn.execute(
            f"""UPDATE {quote_ident(settings.pg_schema)}.etl_runs
                SET error = left(CASE WHEN status = 'failed' AND coalesce(error, '') <> '' THEN $2 || E'\\nearlier: ' || error
                                      ELSE $2 END, 8000),
                    status = 'failed', phase = NULL, finished_at = coalesce(finished_at, now())
                WHERE run_id = $1 AND (status IN ('queued', 'running') OR (status = 'failed' AND owner_token = $3))""",
            run_id,
            error[:4000],
            owner_token,
        )
    finally:
        await conn.close()


def failure_message(exc: BaseException) -> str:
    """What a failed run records: lost ownership / heartbeat say it all; anything else gets its type too."""
    return str(exc) if isinstance(exc, OwnershipLostError | HeartbeatError) else f"{type(exc).__name__}: {exc}"
