"""The hour ledger and the reconciliation of the raw store against the star schema.

**The ledger** (``etl_hour_reads``, ``sql/008_hour_ledger.sql``): per ``(ingest_hour,
event_date)`` of the raw store, how many product-view-type documents the facts stand for
(``events``; of them ``valid`` are in ``sum(view_count)``, the others were skipped with a reason).
It is written in the load transaction, with the facts it describes (:func:`write_ledger`).

**The check** (:func:`reconcile`): for every ingest hour in a span, MongoDB's own count of
product-view-type documents ingested at or before the watermark, per event date, against the
ledger. An hour is

- ``ok``: every date's counts agree;
- ``late``: MongoDB has more than the ledger — documents that became visible after the run that
  read their hour (an insert the sink gave up on that landed later with its old ``ingested_at``,
  clock skew between sink and ETL hosts). The next incremental run **heals** such hours within
  ``ETL_HEAL_LOOKBACK_HOURS`` of the watermark: it recomputes their event dates from every event
  (a date rebuild is exact), so a late document is counted once, late, never not at all;
- ``missing``: the ledger has more than MongoDB — counted documents are gone from the raw store
  (deleted, expired). Never healed automatically: the facts still count them; a range run over
  the dates rebuilds them from what is left, if that is what the operator wants;
- ``pending``: the hour starts after the watermark: no run has read it yet;
- ``unledgered``: the hour starts before the ledger's ``covers_from`` (loaded before the ledger
  existed); a full run makes every hour checkable.

Only equality filters reach the raw store (``{ingest_hour, collection}``), the one shape FerretDB
pushes down and its GIN read index (:mod:`etl_api.ferretdb`) serves; an hour wholly before the
watermark is counted by an aggregation per event date, the hour holding the watermark by reading
its documents' ``ingested_at`` (compared as instants, as the run's own read does).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg

from etl_api.extract import _as_text, hours_between, parse_utc
from shared.errors import PipelineError

HOUR_FORMAT = "%Y-%m-%dT%H"


class LedgerMismatchError(PipelineError, RuntimeError):
    """The ledger rows of a run do not add up to the run's own counts: nothing is committed."""


MAX_SPAN_HOURS = 24 * 31

BEGINNING = datetime(1970, 1, 1, tzinfo=UTC)  # covers_from of a ledger a full read wrote: every hour

OK, LATE, MISSING, PENDING, UNLEDGERED = "ok", "late", "missing", "pending", "unledgered"
DISAGREEING = (LATE, MISSING)


def hour_start(hour: str) -> datetime:
    return datetime.strptime(hour, HOUR_FORMAT).replace(tzinfo=UTC)


def hour_of(at: datetime) -> str:
    return f"{at.astimezone(UTC):{HOUR_FORMAT}}"


def date_key_text(value: Any) -> str:
    """The ledger's event_date key of a document's ``event_date`` value ('' when it has none):
    the same text the run's extract makes of it."""
    return _as_text(value) or ""


# ---------------------------------------------------------------- counting the raw store


def count_raw_store(
    mongodb_uri: str, database: str, collection: str, types: Sequence[str], hours: Sequence[str], bound: datetime
) -> dict[str, dict[str, int]]:
    """hour → event_date key → product-view-type documents of that ingest hour with a text
    ``ingested_at`` at or before ``bound`` (what a run with watermark ``bound`` has read). Hours
    starting after ``bound`` are not counted (absent). Blocking: run it in a thread."""
    from pymongo import MongoClient

    out: dict[str, dict[str, int]] = {}
    client: MongoClient[dict[str, Any]]
    with MongoClient(mongodb_uri, serverSelectionTimeoutMS=10_000) as client:
        coll: Any = client[database][collection]
        for hour in hours:
            start = hour_start(hour)
            if start > bound:
                continue
            per_date: dict[str, int] = defaultdict(int)
            whole = start + timedelta(hours=1) <= bound  # every document of the hour is at or before bound
            for kind in types:
                match = {"ingest_hour": hour, "collection": kind}
                if whole:
                    pipeline = [
                        {"$match": {**match, "ingested_at": {"$type": "string"}}},
                        {"$group": {"_id": "$event_date", "n": {"$sum": 1}}},
                    ]
                    for row in coll.aggregate(pipeline):
                        per_date[date_key_text(row["_id"])] += int(row["n"])
                else:
                    for doc in coll.find(match, {"_id": 0, "event_date": 1, "ingested_at": 1}):
                        at = doc.get("ingested_at")
                        if isinstance(at, str) and _instant_at_or_before(at, bound):
                            per_date[date_key_text(doc.get("event_date"))] += 1
            out[hour] = dict(per_date)
    return out


RawCounter = Callable[[Sequence[str], Sequence[str], datetime], Awaitable[dict[str, dict[str, int]]]]


def raw_store_counter(mongodb_uri: str, database: str, collection: str, ferretdb_postgresql_url: str | None = None) -> RawCounter:
    """:func:`count_raw_store` on that collection, awaitable (in a worker thread); with FerretDB on
    PostgreSQL (``ferretdb_postgresql_url``), hours wholly before the bound are counted by
    :func:`count_ferretdb_hours` instead."""

    async def count(types: Sequence[str], hours: Sequence[str], bound: datetime) -> dict[str, dict[str, int]]:
        whole = [h for h in hours if hour_start(h) + timedelta(hours=1) <= bound]
        out: dict[str, dict[str, int]] = {}
        if ferretdb_postgresql_url and whole:
            counted = await count_ferretdb_hours(ferretdb_postgresql_url, database, collection, types, whole)
            if counted is not None:
                out = counted
                hours = [h for h in hours if h not in set(whole)]
        rest = await asyncio.to_thread(count_raw_store, mongodb_uri, database, collection, types, hours, bound)
        return out | rest

    return count


async def count_ferretdb_hours(
    postgresql_url: str, database: str, collection: str, types: Sequence[str], hours: Sequence[str]
) -> dict[str, dict[str, int]] | None:
    """FerretDB on PostgreSQL only: the counts of :func:`count_raw_store` for whole hours, by SQL
    on FerretDB's own table (None when the collection has no table yet).

    FerretDB 1.24 pushes no aggregation stage down: every ``$match``/``$group`` per hour reads the
    whole collection (measured: 695 s for 24 hours of 1 M documents). Here one query per hour
    finds the hour through the GIN read index (:mod:`etl_api.ferretdb`, same ``@>`` condition
    FerretDB itself writes for ``{ingest_hour: …}``), keeps the product-view types (JSON string
    equality, like MongoDB's) with a text ``ingested_at``, and groups by ``event_date`` as text."""
    from etl_api.ferretdb import collection_table, quote

    conn = await asyncpg.connect(postgresql_url)
    try:
        table = await collection_table(conn, database, collection)
        if table is None:
            return None
        query = f"""SELECT coalesce(_jsonb ->> 'event_date', '') AS d, count(*) AS n FROM {quote(database)}.{quote(table)}
                    WHERE (_jsonb -> 'ingest_hour') @> $1::jsonb AND (_jsonb -> 'collection') = ANY($2::jsonb[])
                      AND jsonb_typeof(_jsonb -> 'ingested_at') = 'string'
                    GROUP BY 1"""
        kinds = [json.dumps(t) for t in types]
        out = {}
        for hour in hours:
            out[hour] = {r["d"]: int(r["n"]) for r in await conn.fetch(query, json.dumps(hour), kinds)}
        return out
    finally:
        await conn.close()


def _instant_at_or_before(text: str, bound: datetime) -> bool:
    try:
        return parse_utc(text) <= bound
    except ValueError:
        return False  # a run cannot place it in a window either


# ---------------------------------------------------------------- the ledger in PostgreSQL


async def ledger_counts(conn: asyncpg.Connection, hours: Sequence[str]) -> dict[str, dict[str, tuple[int, int]]]:
    """hour → event_date key → (events, valid) from ``etl_hour_reads``."""
    out: dict[str, dict[str, tuple[int, int]]] = defaultdict(dict)
    query = "SELECT ingest_hour, event_date, events, valid FROM etl_hour_reads WHERE ingest_hour = ANY($1::text[])"
    for r in await conn.fetch(query, list(hours)):
        out[r["ingest_hour"]][r["event_date"]] = (int(r["events"]), int(r["valid"]))
    return dict(out)


async def ledger_covers_from(conn: asyncpg.Connection) -> datetime | None:
    """Since when the ledger is complete (None: no run has written it yet)."""
    value: datetime | None = await conn.fetchval("SELECT covers_from FROM etl_ledger_state WHERE id = 1")
    return value


@dataclass(frozen=True)
class LedgerWrite:
    """What a run's load writes to the ledger: ``rows`` (ingest_hour, event_date key, events, valid)
    are added; the rows of ``replace_dates`` (every row with ``replace_all``) are deleted first.
    ``covers_from``: the ledger's completeness start this run establishes if none is set (or
    resets, with ``replace_all``)."""

    rows: Sequence[tuple[str, str, int, int]]
    replace_all: bool = False
    replace_dates: Sequence[str] = ()
    covers_from: datetime | None = None  # None = BEGINNING (a full read)


async def write_ledger(conn: asyncpg.Connection, run_id: str, data: LedgerWrite) -> int:
    """Inside the load transaction: apply ``data``; returns the rows written."""
    if data.replace_all:
        await conn.execute("DELETE FROM etl_hour_reads")
    elif data.replace_dates:
        await conn.execute("DELETE FROM etl_hour_reads WHERE event_date = ANY($1::text[])", list(data.replace_dates))
    if data.rows:
        await conn.execute(
            """INSERT INTO etl_hour_reads AS l (ingest_hour, event_date, events, valid, run_id, updated_at)
               SELECT h, d, e, v, $5, now() FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[]) AS u(h, d, e, v)
               ON CONFLICT (ingest_hour, event_date) DO UPDATE
               SET events = l.events + EXCLUDED.events, valid = l.valid + EXCLUDED.valid, run_id = EXCLUDED.run_id, updated_at = now()""",
            [r[0] for r in data.rows],
            [r[1] for r in data.rows],
            [r[2] for r in data.rows],
            [r[3] for r in data.rows],
            run_id,
        )
    covers = data.covers_from if data.covers_from is not None else BEGINNING
    await conn.execute(
        f"""INSERT INTO etl_ledger_state (id, covers_from, run_id, updated_at) VALUES (1, $1, $2, now())
            ON CONFLICT (id) DO {
            "UPDATE SET covers_from = EXCLUDED.covers_from, run_id = EXCLUDED.run_id, updated_at = now()" if data.replace_all else "NOTHING"
        }""",
        covers,
        run_id,
    )
    return len(data.rows)


# ---------------------------------------------------------------- the comparison


@dataclass
class HourCheck:
    ingest_hour: str
    status: str
    mongodb: int | None  # documents in the raw store (None: not counted, the hour is pending)
    accounted: int  # documents the star schema accounts for (ledger events)
    valid: int  # of them, counted as views
    dates: list[dict[str, Any]] = field(default_factory=list)  # per event date where the counts differ

    def as_dict(self) -> dict[str, Any]:
        return {
            "ingest_hour": self.ingest_hour,
            "status": self.status,
            "mongodb": self.mongodb,
            "accounted": self.accounted,
            "valid": self.valid,
            "skipped": self.accounted - self.valid,
            "difference": None if self.mongodb is None else self.mongodb - self.accounted,
            "dates": self.dates,
        }


def compare(
    hours: Iterable[str],
    raw: Mapping[str, Mapping[str, int]],
    ledger: Mapping[str, Mapping[str, tuple[int, int]]],
    watermark: datetime | None,
    covers_from: datetime | None,
) -> list[HourCheck]:
    """One :class:`HourCheck` per hour (pure: the counts are given)."""
    checks = []
    for hour in hours:
        booked = ledger.get(hour, {})
        accounted, valid = sum(e for e, _ in booked.values()), sum(v for _, v in booked.values())
        start = hour_start(hour)
        if watermark is None or start > watermark:
            checks.append(HourCheck(hour, PENDING, None, accounted, valid))
            continue
        counted = raw.get(hour, {})
        total = sum(counted.values())
        if covers_from is None or start < covers_from:
            checks.append(HourCheck(hour, UNLEDGERED, total, accounted, valid))
            continue
        diffs = [(key, counted.get(key, 0), booked.get(key, (0, 0))[0]) for key in sorted(set(counted) | set(booked))]
        diffs = [d for d in diffs if d[1] != d[2]]
        status = MISSING if any(m < n for _, m, n in diffs) else LATE if diffs else OK
        dates = [{"event_date": k, "mongodb": m, "accounted": n, "difference": m - n} for k, m, n in diffs]
        checks.append(HourCheck(hour, status, total, accounted, valid, dates))
    return checks


def late_dates(checks: Iterable[HourCheck]) -> list[date]:
    """The event dates of late documents (what a healing run recomputes); dates that are not a
    ``YYYY-MM-DD`` cannot be re-read by date and are left to the report."""
    out = set()
    for check in checks:
        for d in check.dates:
            if d["difference"] > 0:
                try:
                    out.add(date.fromisoformat(d["event_date"]))
                except ValueError:
                    continue
    return sorted(out)


@dataclass
class Report:
    watermark: datetime | None
    covers_from: datetime | None
    hours: list[HourCheck]
    seconds: float
    product_view_types: Sequence[str]

    @property
    def disagreeing(self) -> list[str]:
        return [h.ingest_hour for h in self.hours if h.status in DISAGREEING]

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": not self.disagreeing,
            "disagreeing_hours": self.disagreeing,
            "watermark": self.watermark.isoformat() if self.watermark else None,
            "ledger_covers_from": self.covers_from.isoformat() if self.covers_from else None,
            "product_view_types": list(self.product_view_types),
            "totals": {status: sum(1 for h in self.hours if h.status == status) for status in (OK, LATE, MISSING, PENDING, UNLEDGERED)},
            "hours": [h.as_dict() for h in self.hours],
            "seconds": round(self.seconds, 3),
        }


async def reconcile(
    conn: asyncpg.Connection,
    count: RawCounter,  # e.g. raw_store_counter(uri, database, collection)
    types: Sequence[str],
    first_hour: str,
    last_hour: str,
    watermark: datetime | None = None,
) -> Report:
    """The report for ``first_hour``..``last_hour`` (inclusive) against the watermark (read from
    ``etl_watermark`` when not given)."""
    started = time.monotonic()
    if watermark is None:
        watermark = await conn.fetchval("SELECT ingested_high FROM etl_watermark WHERE name = 'events'")
    hours = hours_between(hour_start(first_hour), hour_start(last_hour))
    covers = await ledger_covers_from(conn)
    raw = await count(types, hours, watermark) if watermark is not None else {}
    booked = await ledger_counts(conn, hours)
    checks = compare(hours, raw, booked, watermark, covers)
    return Report(watermark, covers, checks, time.monotonic() - started, types)
