"""What the API shows of runs and of the worker: the run view, the anonymous error summary
(never a log tail, path or message text) and JSON of rows with instants."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any

from pydantic import BaseModel

__all__ = ["RunView", "error_summary", "jsonable"]


# First lines of run errors that are safe to show anyone, as written by runs.py and job.py.
_SAFE_ERROR_LINES = (
    re.compile(r"job process exited with code -?\d+"),
    re.compile(r"job process exited 0 without finishing the run"),
    re.compile(r"orphaned: job process \d+ is gone"),
    re.compile(r"orphaned: no heartbeat for \d+s"),
    re.compile(r"heartbeat could not be written for \d+s"),
    re.compile(r"could not start the job process"),
)
_EXCEPTION_NAME = re.compile(r"([A-Z][A-Za-z0-9_]*(?:Error|Exception|Exit|Interrupt))\b")
_DETAIL_HINT = "details with the bearer token"


def error_summary(error: str | None) -> str | None:
    """A short summary of a run's ``error`` that is safe for anonymous callers: a known fixed
    form (exit code, orphaned, heartbeat), ``lost ownership: commit refused`` / ``… the job
    stopped``, else only the exception's class name. Never a log tail, path, host or message text."""
    if error is None:
        return None
    first = error.strip().splitlines()[0] if error.strip() else ""
    for pattern in _SAFE_ERROR_LINES:
        if m := pattern.match(first):
            return f"{m.group(0)} ({_DETAIL_HINT})"
    if first.startswith("lost ownership:"):
        outcome = "commit refused" if "commit refused" in first else "the job stopped"
        return f"lost ownership: {outcome} ({_DETAIL_HINT})"
    if m := _EXCEPTION_NAME.match(first):
        return f"failed: {m.group(1)} ({_DETAIL_HINT})"
    return f"failed ({_DETAIL_HINT})"


class RunView(BaseModel):
    """A run. ``detail`` false (no bearer token): ``error`` is the safe summary and ``host``,
    ``pid``, ``owner_token`` are null."""

    run_id: str
    mode: str
    date_from: date | None
    date_to: date | None
    status: str
    phase: str | None
    requested_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    host: str | None
    pid: int | None
    window_low: datetime | None
    window_high: datetime | None
    touched_dates: list[str] | None
    counts: dict[str, Any] | None
    timings: dict[str, Any] | None
    reconciliation: dict[str, Any] | None
    error: str | None
    error_summary: str | None
    owner_token: str | None = None
    detail: bool

    @classmethod
    def of(cls, row: dict[str, Any], detail: bool) -> RunView:
        summary = error_summary(row["error"])
        fields = {**row, "run_id": str(row["run_id"]), "error_summary": summary, "detail": detail}
        if not detail:
            fields.update(error=summary, host=None, pid=None, owner_token=None)
        return cls(**fields)


def jsonable(value: Any) -> Any:
    """Instants as ISO-8601 text, recursively."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value
