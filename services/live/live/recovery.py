"""Bounded recovery: the changelog view's snapshot on disk, and faust tables seeded from the view.

Before this, a start replayed every changelog record of the retention window twice: the
changelog view (:mod:`live.view`, all partitions, a plain consumer) from offset 0, and faust's
table recovery (its per-record path, ~1 600 records/s here) for the partitions the process
counts. Both grow with how long the service has run (up to ``LIVE_RETENTION_S`` of changelog).

1. **Snapshot.** Every ``LIVE_SNAPSHOT_INTERVAL_S`` (and on a clean stop) the view writes its
   tables and, for every changelog partition, the offset up to which they hold the changelog
   (:func:`write_snapshot`: one JSON file in ``LIVE_DATA_DIR``, written to a temporary file,
   fsynced and renamed, so a kill -9 leaves the previous snapshot or the new one, never half of
   one). On start the view loads it and reads the changelogs only from those offsets: the
   replay is the tail written since the last snapshot, not the retention window.
2. **Seeded tables.** faust's recovery asks each table's store for a "persisted offset" per
   changelog partition and replays from there. :class:`SeededStore` (faust's memory store)
   answers with the view's position and, in the same synchronous call, replaces the store's data
   of that partition with the view's copy at that position; faust then replays only what the
   changelog got after it (usually nothing: the process waits for the view before it starts
   faust). The view and faust's tables fold the same records, so a seed at position ``P`` plus
   faust's replay of ``[P - 1, end)`` is what a replay of ``[0, end)`` gives.

A snapshot is used only when it matches the app (topics, partitions, window) and every
changelog partition still holds its offset (log start ≤ offset ≤ end). Otherwise (first start,
no file, a snapshot older than the retention, topics recreated shorter) the view replays from
the beginning as before, and faust is still seeded from it: correct, and bounded by the plain
consumer's speed instead of faust's per-record path.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
from faust.stores import memory
from faust.types import TP, EventT

log = logging.getLogger(__name__)

SNAPSHOT_VERSION = 1
STORE_SCHEME = "liveseeded"  # faust store URL scheme of SeededStore (registered by live.streams; a URL needs a host to be truthy)

WindowKey = tuple[str, tuple[float, float]]
# table name, changelog topic, partition -> (position: next changelog offset the entries do not
# hold, the entries of that partition) or None when there is nothing to seed from.
Seeder = Callable[[str, str, int], tuple[int, list[tuple[WindowKey, list[int]]]] | None]


def key_partition(key: str) -> int:
    """The source (= changelog) partition of a scoped table key ``"{partition}/{id}"``."""
    return int(key.split("/", 1)[0])


def snapshot_meta(topics: dict[str, str], partitions: int, window_s: int) -> dict[str, Any]:
    """What a snapshot must match to be used."""
    return {"version": SNAPSHOT_VERSION, "topics": topics, "partitions": partitions, "window_s": window_s}


def write_snapshot(
    path: Path,
    meta: dict[str, Any],
    positions: dict[tuple[str, int], int],
    tables: dict[str, dict[WindowKey, list[int]]],
) -> int:
    """Writes the snapshot atomically (temporary file, fsync, rename, fsync of the directory).
    Returns its size in bytes."""
    body = meta | {
        "positions": [[topic, partition, offset] for (topic, partition), offset in sorted(positions.items())],
        "tables": {name: [[key, start, end, value] for (key, (start, end)), value in table.items()] for name, table in tables.items()},
    }
    data = orjson.dumps(body)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return len(data)


def read_snapshot(path: Path, meta: dict[str, Any]) -> tuple[dict[tuple[str, int], int], dict[str, dict[WindowKey, list[int]]]] | None:
    """(positions, tables) of the snapshot at ``path``; None when there is none or it does not
    match ``meta`` (another app, partition count or window; an older format; unreadable)."""
    try:
        body = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, orjson.JSONDecodeError) as exc:
        log.warning("changelog view: snapshot %s unreadable, replaying the changelogs: %s", path, exc)
        return None
    if not isinstance(body, dict) or any(body.get(k) != v for k, v in meta.items()):
        log.warning("changelog view: snapshot %s is for another app or layout, replaying the changelogs", path)
        return None
    positions = {(topic, int(partition)): int(offset) for topic, partition, offset in body["positions"]}
    tables = {name: {(key, (float(start), float(end))): value for key, start, end, value in rows} for name, rows in body["tables"].items()}
    return positions, tables


class SeededStore(memory.Store):
    """faust's in-memory store whose persisted offset is the changelog view's position.

    ``options={"seeder": Seeder}`` (given by :class:`live.streams.LiveCounters`); without a
    seeder it is faust's memory store (persisted offset None: replay from the log start).
    ``replayed``: changelog records faust's recovery (or a standby) applied to this store.
    """

    replayed: int = 0

    def persisted_offset(self, tp: TP) -> int | None:
        seeder: Seeder | None = (self.options or {}).get("seeder")
        seeded = seeder(self.table_name, tp.topic, tp.partition) if seeder is not None else None
        if seeded is None or seeded[0] <= 0:
            return None
        position, entries = seeded
        self._replace_partition(tp.partition, entries)
        # faust's persisted offset is the last offset applied; it seeks there (re-reading that one
        # record, the same value) and replays up to the end.
        return position - 1

    def _replace_partition(self, partition: int, entries: Iterable[tuple[WindowKey, list[int]]]) -> None:
        data, owners = self.data, self._key_partition
        for key in [k for k in data if key_partition(k[0]) == partition]:
            del data[key]
            owners.pop(key, None)
        table: Any = self.table
        expiring = table._partition_timestamp_keys  # (partition, window end) -> keys, as LiveCounters.count
        for key, value in entries:
            data[key] = list(value)
            owners[key] = partition
            if (partition, key[1][1]) in expiring:
                expiring[partition, key[1][1]].add(key)
            else:
                table._maybe_set_key_ttl(key, partition)

    def apply_changelog_batch(self, batch: Iterable[EventT], to_key: Callable[[Any], Any], to_value: Callable[[Any], Any]) -> None:
        events = list(batch)
        self.replayed += len(events)
        super().apply_changelog_batch(events, to_key, to_value)


def group_by_partition(table: dict[WindowKey, list[int]]) -> dict[int, list[tuple[WindowKey, list[int]]]]:
    out: dict[int, list[tuple[WindowKey, list[int]]]] = {}
    for key, value in table.items():
        out.setdefault(key_partition(key[0]), []).append((key, value))
    return out
