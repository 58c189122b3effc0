"""Planning a run: from what was asked and the window's state to what to read and how to load it.

:func:`plan_run` is pure (no clock, no I/O): the caller passes the instant up to which documents
are visible (``high``, :mod:`etl_api.visibility`), the watermark read with the claim, and the
dates a range run already covered past the watermark. A one-off run and a micro-batch of the
continuous worker plan the same way; a micro-batch is an incremental run whose window is a few
seconds, read by ``ingest_second`` instead of by hour.

Windows (all instants are the sink's ``ingested_at``, UTC):

- incremental: only the new events, ``watermark < ingested_at <= high``, minus those a range run
  already counted (its dates' ``etl_date_loads.ingested_high``); their aggregates are merged into
  the touched dates' facts (:mod:`etl_api.load`). Without a watermark it reads everything up to
  ``high`` and rebuilds all facts, like a full run.
- full: every event up to ``high``; every fact replaced; watermark := high.
- range: every event of the given dates up to ``high``; those dates' facts replaced; the
  watermark stays. Its ``high`` is never below the watermark, so a range run never drops events
  the watermark says are counted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from etl_api import extract

MODES = ("incremental", "full", "range", "continuous")


@dataclass(frozen=True)
class RunPlan:
    mode: str
    low: datetime | None  # exclusive; None: from the beginning
    high: datetime  # inclusive
    tasks: list[extract.ReadTask]
    replace_all: bool  # every fact replaced (full, or the first incremental run)
    merge: bool  # the new events' aggregates merged into the touched dates' facts
    range_dates: list[date] = field(default_factory=list)  # range mode: the dates replaced
    moves_watermark: bool = True  # range runs leave it
    heal_check: bool = False  # compare the hour ledger with the raw store first (etl_api.ledger)
    fine: bool = False  # read by ingest_second

    @property
    def ledger_covers_from(self) -> datetime | None:
        """What this run's ledger write says it covers from (see ``sql/008_hour_ledger.sql``)."""
        if self.replace_all:
            return None
        return self.high if self.mode == "range" else self.low


def plan_run(
    mode: str,
    *,
    high: datetime,
    watermark: datetime | None,
    types: Sequence[str],
    read_parts: int,
    date_from: date | None = None,
    date_to: date | None = None,
    covered: Mapping[date, datetime] | None = None,
    heal: bool = False,
    fine_max_seconds: float = 0.0,
) -> RunPlan:
    """The plan of one run (see the module). ``covered``: ``etl_date_loads.ingested_high`` of dates
    loaded past the watermark; ``heal``: check the ledger first (incremental with a watermark
    only); ``fine_max_seconds``: a window at most this long is read second by second (0: never)."""
    if mode not in MODES:
        raise ValueError(f"unknown run mode {mode!r}")
    if mode == "range":
        if date_from is None or date_to is None or date_to < date_from:
            raise ValueError("a range run needs date_from <= date_to")
        high = max(high, watermark) if watermark is not None else high
        dates = [date_from + timedelta(days=i) for i in range((date_to - date_from).days + 1)]
        tasks = extract.plan_date_tasks(dates, high, types, read_parts)
        return RunPlan(mode, None, high, tasks, replace_all=False, merge=False, range_dates=dates, moves_watermark=False)
    if mode == "full" or watermark is None:
        return RunPlan(mode, None, high, extract.plan_all_tasks(high, types, read_parts), replace_all=True, merge=False)
    low = watermark
    if high <= low:  # nothing new is visible: an empty window, nothing read
        return RunPlan(mode, low, low, [], replace_all=False, merge=True, heal_check=heal)
    fine = fine_max_seconds > 0 and (high - low).total_seconds() <= fine_max_seconds
    cov = dict(covered or {})
    tasks = extract.plan_second_tasks(low, high, types, cov) if fine else extract.plan_window_tasks(low, high, types, read_parts, cov)
    return RunPlan(mode, low, high, tasks, replace_all=False, merge=True, heal_check=heal, fine=fine)


def hour_closed(low: datetime | None, high: datetime) -> bool:
    """Whether the window (low, high] ends in another ingest hour than it starts: an hour closed."""
    return low is None or low.astimezone(UTC).replace(minute=0, second=0, microsecond=0) != high.astimezone(UTC).replace(
        minute=0, second=0, microsecond=0
    )
