"""Extract: which MongoDB slices a run reads, and reading one slice inside a Spark task.

The raw store is read with **equality filters only** (FerretDB pushes nothing else down):
``{ingest_hour, part, collection}`` for events ingested in a window (``{ingest_second,
collection}`` for the continuous worker's windows of seconds), ``{event_date, part,
collection}`` for every event of a date, ``{part, collection}`` for everything. Each
:class:`ReadTask` is one Spark partition (with ``read_parts`` < 16, a task covers a slice of
parts and makes one such query per part, :func:`task_queries`); :func:`read_task` runs on an executor with its own
PyMongo client, so the driver only ever holds the list of tasks, never documents.

A document becomes a flat tuple of strings (:data:`RAW_FIELDS`) by :func:`document_to_row`;
messy shapes (numbers as ids, dicts/lists, booleans) are made strings here and cleaned by the
Spark transforms. Personal data (``ip``, ``email_address``, ``user_id_db``) is never read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from shared.event import PARTS

RAW_FIELDS = (
    "event_id",
    "collection",
    "product_id",
    "store_id",
    "device_id",
    "user_agent",
    "referrer_url",
    "current_url",
    "event_time",
    "time_stamp",
    "timestamp",
    "local_time",
    "event_date",
    "ingested_at",
    "ingest_hour",
)
# what a read fetches: the row's fields (``_id`` comes anyway) and ``part`` for a slice's client-side check
READ_PROJECTION = {**{f: 1 for f in RAW_FIELDS if f != "event_id"}, "part": 1}


@dataclass(frozen=True)
class ReadTask:
    """One slice of the raw store: an equality filter plus the ingestion window kept client-side."""

    filter: dict[str, Any]
    ingested_after: str | None = None  # exclusive, ISO-8601 UTC
    ingested_until: str | None = None  # inclusive
    parts: tuple[int, ...] = field(default=())  # when the filter has no `part`: one `{…, part: p}` query per p (empty = all, one query)
    # event_date (YYYY-MM-DD) → ISO-8601 UTC instant up to which that date's facts already count
    # its events (a range run past the watermark): a document of such a date is kept only if
    # ingested after it too. Incremental windows only; see :func:`plan_window_tasks`.
    covered_until: dict[str, str] = field(default_factory=dict)
    # ``ingest_second`` values: one ``{…, ingest_second: s}`` query per value (continuous mode)
    seconds: tuple[str, ...] = field(default=())


def parse_utc(text: str) -> datetime:
    """An ISO-8601 UTC instant ("…Z" or "+00:00"); naive means UTC."""
    parsed = datetime.fromisoformat(text)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def hours_between(low: datetime, high: datetime) -> list[str]:
    """Every ``ingest_hour`` value (``YYYY-MM-DDTHH``) from low's hour to high's hour, inclusive."""
    hour = low.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    out = []
    while hour <= high:
        out.append(f"{hour:%Y-%m-%dT%H}")
        hour += timedelta(hours=1)
    return out


def _part_slices(read_parts: int) -> list[tuple[int, ...]]:
    step = PARTS // read_parts
    return [tuple(range(i, i + step)) for i in range(0, PARTS, step)]


def _tasks(
    base: dict[str, Any],
    types: Iterable[str],
    read_parts: int,
    after: str | None,
    until: str | None,
    covered: dict[str, str] | None = None,
) -> list[ReadTask]:
    out = []
    cov = dict(covered or {})
    for collection in types:
        for parts in _part_slices(read_parts):
            if len(parts) == 1:
                out.append(ReadTask({**base, "part": parts[0], "collection": collection}, after, until, covered_until=cov))
            else:
                sliced = parts if len(parts) < PARTS else ()
                out.append(ReadTask({**base, "collection": collection}, after, until, sliced, covered_until=cov))
    return out


def plan_window_tasks(
    low: datetime, high: datetime, types: Iterable[str], read_parts: int = PARTS, covered: dict[date, datetime] | None = None
) -> list[ReadTask]:
    """Events ingested in (low, high]: one task per (ingest_hour, part slice, collection).

    ``covered``: event date → the ``ingested_at`` up to which that date's facts already count its
    events (``etl_date_loads.ingested_high``); a date's events are kept only if ingested after
    ``max(low, covered[date])``. Only entries after ``low`` matter (the others are dropped, so
    the tasks stay small): those are dates a range run rebuilt after the watermark was set.
    """
    after, until = low.isoformat(), high.isoformat()
    cov = {d.isoformat(): at.astimezone(UTC).isoformat() for d, at in sorted((covered or {}).items()) if at > low}
    return [t for hour in hours_between(low, high) for t in _tasks({"ingest_hour": hour}, types, read_parts, after, until, cov)]


def seconds_between(low: datetime, high: datetime) -> list[str]:
    """Every ``ingest_second`` value (``YYYY-MM-DDTHH:MM:SS``) from low's second to high's, inclusive."""
    second = low.astimezone(UTC).replace(microsecond=0)
    out = []
    while second <= high:
        out.append(f"{second:%Y-%m-%dT%H:%M:%S}")
        second += timedelta(seconds=1)
    return out


SECONDS_PER_TASK = 15  # a read task of the continuous worker queries this many seconds, one after the other


def plan_second_tasks(low: datetime, high: datetime, types: Iterable[str], covered: dict[date, datetime] | None = None) -> list[ReadTask]:
    """Events ingested in (low, high], read second by second (``{ingest_second, collection}``
    equalities), for the short windows of the continuous worker: an hour's read would fetch the
    whole hour every few seconds. A task queries up to :data:`SECONDS_PER_TASK` seconds (a
    window of a few minutes is a handful of Spark tasks, not hundreds). ``covered`` as in
    :func:`plan_window_tasks`."""
    after, until = low.isoformat(), high.isoformat()
    cov = {d.isoformat(): at.astimezone(UTC).isoformat() for d, at in sorted((covered or {}).items()) if at > low}
    seconds = seconds_between(low, high)
    chunks = [tuple(seconds[i : i + SECONDS_PER_TASK]) for i in range(0, len(seconds), SECONDS_PER_TASK)]
    return [
        ReadTask({"collection": collection}, after, until, covered_until=cov, seconds=chunk) for chunk in chunks for collection in types
    ]


def plan_date_tasks(dates: Iterable[date], high: datetime, types: Iterable[str], read_parts: int = PARTS) -> list[ReadTask]:
    """Every event of the given dates ingested up to high."""
    until = high.isoformat()
    return [t for d in sorted(set(dates)) for t in _tasks({"event_date": d.isoformat()}, types, read_parts, None, until)]


def plan_all_tasks(high: datetime, types: Iterable[str], read_parts: int = PARTS) -> list[ReadTask]:
    """Every event ingested up to high (full rebuild)."""
    return _tasks({}, types, read_parts, None, high.isoformat())


def _as_text(value: Any) -> str | None:  # noqa: PLR0911
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat() if value.tzinfo else value.replace(tzinfo=UTC).isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


# Fields that only name a dimension member: the bridge keeps an event whose value is not an id
# (or not a text) "as it came" instead of refusing it, and such a value must count against the
# dimension's unknown member, never become a member of its own (``{"id": 1}`` as a store).
_MEMBER_IDS = frozenset({"product_id", "store_id", "device_id"})
_MEMBER_TEXTS = frozenset({"user_agent", "referrer_url", "current_url"})


def _member(name: str, value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if name in _MEMBER_IDS and (
        (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, float) and value.is_integer())
    ):
        return _as_text(value)
    return None


def document_to_row(doc: dict[str, Any]) -> tuple[str | None, ...]:
    """A raw document as a tuple of :data:`RAW_FIELDS`, every value text or None; a member
    field (:data:`_MEMBER_IDS`, :data:`_MEMBER_TEXTS`) that is not an id or a text is None
    (the unknown member)."""
    return (
        _as_text(doc.get("_id")),
        *(_member(f, doc.get(f)) if f in _MEMBER_IDS or f in _MEMBER_TEXTS else _as_text(doc.get(f)) for f in RAW_FIELDS[1:]),
    )


def keep_document(
    doc: dict[str, Any], task: ReadTask, after: datetime | None, until: datetime | None, covered: dict[str, datetime] | None = None
) -> bool:
    """The client-side part of a task: the ingestion window, the part slice and, per event date,
    the instant up to which that date is already counted (``covered``, parsed from
    ``task.covered_until``; a document of such a date must be ingested after it too)."""
    if task.parts and doc.get("part") not in task.parts:
        return False
    if after is None and until is None:
        return True
    raw = doc.get("ingested_at")
    if not isinstance(raw, str):
        return False  # not stamped by the sink: cannot be placed in a window
    try:
        at = parse_utc(raw)
    except ValueError:
        return False
    if covered:
        done = covered.get(doc.get("event_date"))  # type: ignore[arg-type]
        if done is not None and at <= done:
            return False
    return (after is None or at > after) and (until is None or at <= until)


def read_task(task: ReadTask, mongodb_uri: str, database: str, collection: str, batch_size: int = 2000) -> Iterator[tuple[str | None, ...]]:
    """Stream one slice's rows (runs on a Spark executor; opens and closes its own client)."""
    from pymongo import MongoClient

    after = parse_utc(task.ingested_after) if task.ingested_after else None
    until = parse_utc(task.ingested_until) if task.ingested_until else None
    covered = {d: parse_utc(at) for d, at in task.covered_until.items()}
    client: MongoClient[dict[str, Any]]
    with MongoClient(mongodb_uri, serverSelectionTimeoutMS=30_000) as client:
        for query in task_queries(task):
            cursor: Iterable[dict[str, Any]] = client[database][collection].find(query, READ_PROJECTION, batch_size=batch_size)
            for doc in cursor:
                if keep_document(doc, task, after, until, covered):
                    yield document_to_row(doc)


def task_queries(task: ReadTask) -> list[dict[str, Any]]:
    """The equality queries of a task: one per part of its slice, so the server sends each
    document once (``part`` in ``$in`` would not be pushed down: every task would fetch the whole
    hour/date, or the whole collection, and drop the other slices' documents client-side)."""
    if task.seconds:
        return [{"ingest_second": second, **task.filter} for second in task.seconds]
    if task.parts and "part" not in task.filter:
        return [{**task.filter, "part": p} for p in task.parts]
    return [task.filter]


def any_document(tasks: Iterable[ReadTask], mongodb_uri: str, database: str, collection: str) -> bool:
    """Whether any task would read a document (one client, first match wins): the continuous
    worker's cheap probe before it starts Spark work."""
    from pymongo import MongoClient
    from pymongo.collection import Collection

    client: MongoClient[dict[str, Any]]
    with MongoClient(mongodb_uri, serverSelectionTimeoutMS=30_000) as client:
        coll: Collection[dict[str, Any]] = client[database][collection]
        for task in tasks:
            after = parse_utc(task.ingested_after) if task.ingested_after else None
            until = parse_utc(task.ingested_until) if task.ingested_until else None
            covered = {d: parse_utc(at) for d, at in task.covered_until.items()}
            for query in task_queries(task):
                for doc in coll.find(query, {"ingested_at": 1, "event_date": 1, "part": 1}, batch_size=2000):
                    if keep_document(doc, task, after, until, covered):
                        return True
    return False
