"""What counts as a view, how table keys look, and the read-side aggregations. Pure.

Table keys are scoped by the source partition: ``"{partition}/{id}"``. Faust writes a table's
changelog to the partition of the event being processed, while the bridge keys the local topic
by visitor, so one product's views arrive on every partition. Without the scope two partitions
would write the same changelog key with different running totals, and recovery would keep
whichever it replayed last. Scoped, each key lives in exactly one partition (one owner, one
changelog partition) and a product's count is the sum of its partition-scoped counts.

Table values are ``[count, last offset]``: the count of one key in one window and the source
offset (in the key's partition) of the last view added to it. Offsets of a partition are
processed in order, so an event at or below ``last offset`` is already in the count: after a
restart, the events between the last offset commit and the crash are read again and skipped
(:func:`add_view`). Exactly-once counts, whatever faust's commit timing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

UNKNOWN = "unknown"  # the id counted when an event has no store_id

# A windowed table entry as faust stores it: ((scoped key, (window start, window end)), value).
WindowEntry = tuple[tuple[str, tuple[float, float]], Sequence[int]]


@dataclass(frozen=True, slots=True)
class View:
    """One product view: the event's own time (unix seconds) and what it is counted under."""

    event_time: float
    product_id: str
    store_id: str


def parse_view(raw: bytes | str | Mapping[str, Any], view_types: Collection[str]) -> View | None:
    """The view in one local-topic record, or None when the record is not a countable view.

    Not countable: not a JSON object, ``collection`` not in ``view_types``, no ``product_id``,
    or no parseable ``event_time``. The bridge already dead-lettered malformed input, so these
    are other event types, not errors.
    """
    event: Any = raw if isinstance(raw, Mapping) else _loads(raw)
    if not isinstance(event, Mapping) or event.get("collection") not in view_types:
        return None
    product_id, event_time = event.get("product_id"), event.get("event_time")
    if not isinstance(product_id, str) or not product_id or not isinstance(event_time, str):
        return None
    try:
        when = datetime.fromisoformat(event_time)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    store_id = event.get("store_id")
    return View(when.timestamp(), product_id, store_id if isinstance(store_id, str) and store_id else UNKNOWN)


def _loads(raw: bytes | str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def add_view(value: Sequence[int] | None, offset: int) -> list[int] | None:
    """The table value after counting the view at ``offset``; None when it is already counted."""
    if not value:
        return [1, offset]
    count, last_offset = value
    if offset <= last_offset:
        return None
    return [count + 1, offset]


def count_of(value: Sequence[int] | int | None) -> int:
    if isinstance(value, int):
        return value
    return int(value[0]) if value else 0


def scoped_key(partition: int, ident: str) -> str:
    return f"{partition}/{ident}"


def unscoped(key: str) -> str:
    return key.split("/", 1)[1]


def window_start(timestamp: float, window_s: int) -> int:
    """Start (unix seconds) of the tumbling window holding ``timestamp``; same rule as faust."""
    return int(timestamp - timestamp % window_s)


def counts_by_window(entries: Iterable[WindowEntry], start: int, end: int) -> dict[int, dict[str, int]]:
    """``{window start: {id: count}}`` for windows starting in ``[start, end)``, partitions summed."""
    out: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for (key, (w_start, _w_end)), value in entries:
        ws, count = int(w_start), count_of(value)
        if start <= ws < end and count:
            out[ws][unscoped(key)] += count
    return {ws: dict(ids) for ws, ids in out.items()}


def series(by_window: Mapping[int, Mapping[str, int]], start: int, end: int, window_s: int) -> list[tuple[int, int]]:
    """Total per window for every window in ``[start, end)``, zeros included, oldest first."""
    return [(ws, sum(by_window.get(ws, {}).values())) for ws in range(start, end, window_s)]


def totals(by_window: Mapping[int, Mapping[str, int]]) -> dict[str, int]:
    """Per-id sums over all windows of ``by_window``."""
    out: dict[str, int] = defaultdict(int)
    for ids in by_window.values():
        for ident, count in ids.items():
            out[ident] += count
    return dict(out)


def top_n(counts: Mapping[str, int], n: int) -> list[tuple[str, int]]:
    """The ``n`` largest counts, ties broken by id so the order is deterministic."""
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:n]


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> float:
    when = datetime.fromisoformat(text)
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
