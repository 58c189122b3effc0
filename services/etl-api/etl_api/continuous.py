"""The continuous worker's row (``etl_continuous``, ``sql/010_continuous.sql``) and its supervisor.

One row per schema says whether a worker should run (``desired``) and which process may
(``owner_token``). Rules:

- ``PUT /continuous`` sets ``desired``; ``DELETE /continuous`` clears it (the worker sees it at its
  next heartbeat, finishes its micro-batch and exits).
- :func:`take_over` is the only way a worker comes to own the row: one conditional ``UPDATE``
  that succeeds only while the row is still in the state the caller judged dead
  (:func:`worker_gone`: no owner, no heartbeat for ``ETL_HEARTBEAT_TIMEOUT_SECONDS``, or its pid
  gone on this host) and no launch happened in the last :data:`RELAUNCH_PAUSE_S`. Of several API
  instances racing, one wins; the others see a live owner. So at most one worker runs per schema.
- A worker heartbeats (:func:`beat`) only ``WHERE owner_token = <its token> AND desired``; a beat
  that updates nothing means it was replaced or asked to stop: it stops.
- Even two workers at once could not double-count: every micro-batch is a run behind the same
  ownership guard (:mod:`etl_api.ownership`).
"""

from __future__ import annotations

import logging
import socket
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from etl_api.runs import _pid_alive

log = logging.getLogger(__name__)

RELAUNCH_PAUSE_S = 5.0  # a worker that dies at once is relaunched at most this often
KEEP_BATCHES = 20  # micro-batches listed by GET /continuous

ROW_SQL = """
SELECT desired, desired_at, owner_token, checked_high, yield_requested_at, launched_at, launched_by, host, pid, heartbeat_at, state, reason,
       batches, last_batches,
       extract(epoch FROM now() - heartbeat_at)::float8 AS silent_s
FROM etl_continuous WHERE id = 1
"""


async def read_row(conn: asyncpg.Connection) -> dict[str, Any]:
    row = await conn.fetchrow(ROW_SQL)
    if row is None:  # the DDL inserts it; a hand-deleted row is recreated
        await conn.execute("INSERT INTO etl_continuous (id) VALUES (1) ON CONFLICT (id) DO NOTHING")
        row = await conn.fetchrow(ROW_SQL)
    out = dict(row)
    if isinstance(out.get("last_batches"), str):
        out["last_batches"] = orjson.loads(out["last_batches"])
    return out


async def set_desired(conn: asyncpg.Connection, desired: bool) -> None:
    await conn.execute(
        "UPDATE etl_continuous SET desired = $1, desired_at = now(), "
        "state = CASE WHEN $1 THEN state ELSE coalesce(state, 'stopped') END WHERE id = 1",
        desired,
    )


def worker_gone(row: dict[str, Any], timeout_s: float, host: str | None = None) -> str | None:
    """Why the row's worker is not alive (None: it is): the reason the supervisor logs."""
    if row["owner_token"] is None:
        return "no worker"
    if row["heartbeat_at"] is None or row["silent_s"] is None:
        return "no heartbeat yet"
    if float(row["silent_s"]) > timeout_s:
        return f"no heartbeat for {float(row['silent_s']):.0f}s"
    here = host or socket.gethostname()
    if row["host"] == here and row["pid"] and not _pid_alive(int(row["pid"])):
        return f"worker process {row['pid']} is gone"
    return None


async def take_over(conn: asyncpg.Connection, seen: dict[str, Any], new_token: str, launcher: str) -> bool:
    """Gives the row to ``new_token`` if it is still as ``seen`` (see the module)."""
    done = await conn.execute(
        """UPDATE etl_continuous SET owner_token = $1, launched_at = now(), launched_by = $2, heartbeat_at = now(),
                  host = NULL, pid = NULL, state = 'starting', reason = NULL, batches = 0
           WHERE id = 1 AND desired AND owner_token IS NOT DISTINCT FROM $3 AND heartbeat_at IS NOT DISTINCT FROM $4
             AND (launched_at IS NULL OR launched_at < now() - make_interval(secs => $5))""",
        new_token,
        launcher,
        seen["owner_token"],
        seen["heartbeat_at"],
        RELAUNCH_PAUSE_S,
    )
    return done == "UPDATE 1"


async def release(conn: asyncpg.Connection, token: str, state: str, reason: str | None) -> None:
    """The worker with ``token`` is gone (exited, or its process died): the row says so."""
    await conn.execute(
        "UPDATE etl_continuous SET owner_token = NULL, pid = NULL, heartbeat_at = NULL, state = $2, reason = $3 "
        "WHERE id = 1 AND owner_token = $1",
        token,
        state,
        reason,
    )


async def beat(conn: asyncpg.Connection, token: str, host: str, pid: int, state: str, reason: str | None) -> bool:
    """The worker's heartbeat; False when the row is no longer its own or no longer desired."""
    done = await conn.execute(
        "UPDATE etl_continuous SET heartbeat_at = now(), host = $2, pid = $3, state = $4, reason = $5 "
        "WHERE id = 1 AND owner_token = $1 AND desired",
        token,
        host,
        pid,
        state,
        reason,
    )
    return done == "UPDATE 1"


async def request_yield(conn: asyncpg.Connection) -> None:
    """A one-off run was refused (409) while a micro-batch held the run slot: the worker starts no
    new micro-batch until a one-off run was requested after this (or ``YIELD_S`` passed)."""
    await conn.execute("UPDATE etl_continuous SET yield_requested_at = now() WHERE id = 1")


YIELD_S = 60.0  # how long the worker waits for the refused request to come again

YIELD_PENDING_SQL = """
SELECT c.yield_requested_at > now() - make_interval(secs => $1)
       AND NOT EXISTS (SELECT 1 FROM etl_runs r WHERE r.mode <> 'continuous' AND r.requested_at >= c.yield_requested_at)
FROM etl_continuous c WHERE id = 1
"""


async def yield_pending(conn: asyncpg.Connection) -> bool:
    """Whether a refused one-off run is still waiting for its turn (see :func:`request_yield`)."""
    return bool(await conn.fetchval(YIELD_PENDING_SQL, YIELD_S))


async def record_checked(conn: asyncpg.Connection, token: str, high: datetime) -> None:
    """Nothing new was visible up to ``high``: the star schema is that fresh without a run."""
    await conn.execute("UPDATE etl_continuous SET checked_high = greatest(checked_high, $2) WHERE id = 1 AND owner_token = $1", token, high)


async def record_batch(conn: asyncpg.Connection, token: str, summary: dict[str, Any]) -> None:
    """Counts a committed micro-batch and keeps it among the newest :data:`KEEP_BATCHES`."""
    await conn.execute(
        f"""UPDATE etl_continuous SET batches = batches + 1,
                  last_batches = (SELECT coalesce(jsonb_agg(b), '[]'::jsonb)
                                  FROM (SELECT b FROM jsonb_array_elements($2::jsonb || last_batches) b LIMIT {KEEP_BATCHES}) x)
           WHERE id = 1 AND owner_token = $1""",
        token,
        orjson.dumps([summary]).decode(),
    )


def freshness(watermark: datetime | None, checked_high: datetime | None, now: datetime) -> float | None:
    """Seconds the star schema is behind what is visible in MongoDB: now − the newest of the
    watermark and the last instant a micro-batch found nothing new up to; None before either."""
    marks = [m for m in (watermark, checked_high) if m is not None]
    return (now - max(marks)).total_seconds() if marks else None
