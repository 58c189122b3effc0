"""How fresh the star schema is: the ETL API's ``GET /continuous``, said in one line on the page.

The ETL's continuous mode (services/etl-api: a worker turning new MongoDB documents into the star
schema in micro-batches) reports ``star_as_of`` (the instant up to which the star schema counts
every visible event) and ``behind_seconds`` (the database's now − that instant). The page shows it
next to the star section's header (element ``star-freshness``) and its live timer refreshes it from
``GET /api/star/freshness``.

Why the HTTP API and not PostgreSQL: the page reads the star schema as the read-only role
``analyst``, which is granted ``dim_*``/``fact_*``/``v_*`` only, not the ETL's bookkeeping
(``etl_continuous``, ``etl_watermark``), and the API already computes how far behind the star is
on the database's clock. It fails soft: an ETL API that is down, slow (``TIMEOUT_S``) or not ready
makes the line say "ETL API unreachable", never breaks the page. One answer is shared by every
request for ``CACHE_S`` seconds (and concurrent requests share one call), so many open pages cost
the ETL API at most one request per ``CACHE_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

log = logging.getLogger(__name__)

TIMEOUT_S = 2.0  # one GET /continuous; the page never waits longer for it
CACHE_S = 2.0  # one answer serves every request for this long
REASON_CHARS = 120  # the worker's reason in the line (its first line, cut); the whole reason is in ``reason``

Status = Literal["disabled", "unreachable", "running", "not_running", "off"]


class StarFreshness(BaseModel):
    """``GET /api/star/freshness``: what the page's ``star-freshness`` element says, and why."""

    status: Status = Field(
        description="running: the continuous worker is running (or waits for a one-off run: state yielding); "
        "not_running: it is desired but not running (see reason); "
        "off: continuous mode is off; unreachable: the ETL API did not answer; disabled: LIVE_ETL_API_URL is empty"
    )
    text: str = Field(description="the line the page shows")
    star_as_of: datetime | None = Field(default=None, description="the star schema counts every visible event up to this instant")
    behind_seconds: float | None = Field(default=None, description="how far star_as_of is behind the database's clock")
    state: str | None = Field(default=None, description="the worker's state: starting, running, waiting, yielding, stopped, failed")
    reason: str | None = Field(default=None, description="why the worker is not running, or why the ETL API did not answer")
    batches: int | None = Field(default=None, description="micro-batches committed by the current worker")
    checked_at: datetime = Field(description="when the live service asked the ETL API")


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def behind_text(seconds: float) -> str:
    """``7 s``, ``4 min``, ``3 h``: seconds under two minutes, minutes under two hours."""
    s = max(0, round(seconds))
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    return f"{s // 3600} h"


def as_of_text(star_as_of: datetime | None, behind_seconds: float | None) -> str:
    """``star schema as of 2026-11-27 10:03:05 UTC, 7 s behind`` (``… nothing loaded yet``)."""
    if star_as_of is None:
        return "star schema: nothing loaded yet"
    out = f"star schema as of {star_as_of.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
    return out + (f", {behind_text(behind_seconds)} behind" if behind_seconds is not None else "")


def short_reason(reason: str | None) -> str:
    line = (reason or "").strip().splitlines()[0].strip() if (reason or "").strip() else ""
    return line if len(line) <= REASON_CHARS else line[: REASON_CHARS - 1] + "…"


def describe(body: Mapping[str, Any], checked_at: datetime) -> StarFreshness:
    """The line for a ``GET /continuous`` answer (pure)."""
    as_of, behind = _instant(body.get("star_as_of")), body.get("behind_seconds")
    behind = float(behind) if isinstance(behind, (int, float)) and not isinstance(behind, bool) else None
    state, reason = body.get("state"), body.get("reason")
    batches = body.get("batches") if isinstance(body.get("batches"), int) else None
    fresh = as_of_text(as_of, behind)
    if not body.get("desired"):
        status: Status = "off"
        text = f"continuous mode off; {fresh}"
    elif body.get("alive") and state == "running":
        status, text = "running", fresh
    elif body.get("alive") and state == "yielding":  # healthy: it resumes when the one-off run ends
        status, text = "running", f"{fresh}; the worker waits for a one-off run"
    else:
        status = "not_running"
        why = short_reason(reason)
        text = f"continuous mode {state or 'starting'}{': ' + why if why else ''}; {fresh}"
    return StarFreshness(
        status=status,
        text=text,
        star_as_of=as_of,
        behind_seconds=behind,
        state=state if isinstance(state, str) else None,
        reason=reason if isinstance(reason, str) else None,
        batches=batches,
        checked_at=checked_at,
    )


def unreachable(reason: str, checked_at: datetime) -> StarFreshness:
    return StarFreshness(status="unreachable", text="ETL API unreachable", reason=reason, checked_at=checked_at)


def disabled(checked_at: datetime) -> StarFreshness:
    return StarFreshness(status="disabled", text="", checked_at=checked_at)


def fetch_continuous(base_url: str, timeout_s: float) -> dict[str, Any]:
    """``GET {base_url}/continuous`` (blocking; run it in a thread). Raises ``OSError`` (URLError,
    HTTPError, a timeout) or ``ValueError`` (not JSON, not an object)."""
    request = urllib.request.Request(base_url.rstrip("/") + "/continuous", headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        body = json.loads(response.read())
    if not isinstance(body, dict):
        raise ValueError("GET /continuous did not answer a JSON object")
    return body


def _failure(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        detail = ""
        with contextlib.suppress(OSError):
            detail = exc.read(300).decode("utf-8", "replace")
        return f"HTTP {exc.code}: {detail}".strip()
    if isinstance(exc, urllib.error.URLError):
        return f"{type(exc.reason).__name__}: {exc.reason}"
    return f"{type(exc).__name__}: {exc}"


class FreshnessReader:
    """The process's one view of ``GET /continuous``: cached for ``cache_s``, one call in flight."""

    def __init__(
        self,
        base_url: str | None,
        *,
        timeout_s: float = TIMEOUT_S,
        cache_s: float = CACHE_S,
        fetch: Callable[[str, float], dict[str, Any]] = fetch_continuous,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url = (base_url or "").strip()
        self.timeout_s, self.cache_s, self._fetch, self._clock = timeout_s, cache_s, fetch, clock
        self._last: tuple[float, StarFreshness] | None = None
        self._inflight: asyncio.Task[StarFreshness] | None = None

    async def read(self) -> StarFreshness:
        now = datetime.now(UTC)
        if not self.base_url:
            return disabled(now)
        if self._last is not None and self._clock() - self._last[0] < self.cache_s:
            return self._last[1]
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.create_task(self._ask())
        return await asyncio.shield(self._inflight)

    async def _ask(self) -> StarFreshness:
        now = datetime.now(UTC)
        try:
            # urlopen's timeout bounds each socket operation; this bounds the whole call (a
            # TimeoutError is an OSError).
            body = await asyncio.wait_for(asyncio.to_thread(self._fetch, self.base_url, self.timeout_s), self.timeout_s + 1)
            answer = describe(body, now)
        except (OSError, ValueError) as exc:  # down, slow, not ready, not JSON: said on the page
            why = _failure(exc)
            log.info("ETL API %s/continuous: %s", self.base_url, why)
            answer = unreachable(why, now)
        self._last = (self._clock(), answer)
        return answer
