"""``--now``: event times are the wall clock at the moment each record is handed to the producer.

:func:`eventgen.generate` is pure (no clock): its times follow a diurnal curve over fixed days.
:func:`stamp_now` wraps its output lazily and rewrites the times of every valid record as it is
pulled, which :func:`eventgen.produce` does right before sending it (after the ``--rate`` pause),
so a stream at a given rate carries event times that *are* its production times. That is what a
live, event-time-windowed view needs to show something (the live service's windows expire by
wall clock, see services/live/README.md).

What is rewritten, consistently with each other: Glamira ``time_stamp`` (epoch seconds),
``local_time`` (the store's offset kept) and the time part of ``_id`` (the ObjectId's first 4
bytes; its per-run random part and counter keep ids unique); seed-shape ``timestamp`` and
``local_time``. Bad records are passed through untouched (they are refused whatever their time).
Kinds, keys, products, visitors: unchanged, so counts and manifests mean what they did.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any

import orjson

from eventgen.generate import GLAMIRA, SEED, GeneratedRecord
from eventgen.stores import STORES

Clock = Callable[[], float]


def _local(seconds: int, store_id: Any, *, iso: bool, micros: int = 0, unpadded: bool = False) -> str:
    store = STORES.get(str(store_id))
    offset = int(store.utc_offset * 3600) if store else 0
    t = time.gmtime(seconds + offset)
    if iso:
        return f"{time.strftime('%Y-%m-%dT%H:%M:%S', t)}.{micros:06d}"
    hour = str(t.tm_hour) if unpadded else f"{t.tm_hour:02d}"
    return f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d} {hour}:{t.tm_min:02d}:{t.tm_sec:02d}"


def restamp(record: GeneratedRecord, now: float) -> GeneratedRecord:
    """``record`` with its event time set to ``now`` (Unix seconds); bad records unchanged."""
    if record.event is None or record.kind not in (GLAMIRA, SEED):
        return record
    event = dict(record.event)
    seconds = int(now)
    if record.kind == GLAMIRA:
        old_local = str(event.get("local_time", ""))
        unpadded = len(old_local) > 11 and old_local[11:13].endswith(":")  # "2020-06-04 9:05:11"
        event["time_stamp"] = seconds
        event["local_time"] = _local(seconds, event.get("store_id"), iso=False, unpadded=unpadded)
        event["_id"] = f"{seconds & 0xFFFFFFFF:08x}{str(event['_id'])[8:]}"
        return replace(record, value=orjson.dumps(event), event_id=event["_id"], event=event)
    micros = int((now - seconds) * 1_000_000)
    event["timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
    event["local_time"] = _local(seconds, event.get("store_id"), iso=True, micros=micros)
    return replace(record, value=orjson.dumps(event), event=event)


def stamp_now(records: Iterable[GeneratedRecord], clock: Clock = time.time) -> Iterator[GeneratedRecord]:
    """Lazily re-stamps each record with ``clock()`` at the moment it is pulled."""
    for record in records:
        yield restamp(record, clock())
