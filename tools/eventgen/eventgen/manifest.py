"""What a generator run put on the topic, record by record: the ground truth tests reconcile with."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from eventgen.generate import GLAMIRA, KINDS, SEED, GeneratedRecord
from shared.event import BAD_KINDS, event_id_from_coordinates


class ManifestRecord(NamedTuple):
    partition: int
    offset: int
    kind: str
    event_id: str | None  # the event_id the pipeline must assign; None for bad records


@dataclass(repr=False)
class Manifest:
    """One run: ``records`` in production order with their Kafka coordinates.

    ``event_id`` of a valid record is exactly what the bridge must assign: the Glamira ``_id``,
    or ``shared.event.event_id_from_coordinates(topic, partition, offset)`` for the seed shape.
    ``counts`` has every kind of :data:`eventgen.generate.KINDS` (zeros included);
    ``collections`` counts the ``collection`` of valid Glamira records (seed-shape records have
    none; the bridge files them under ``shared.event.SEED_COLLECTION``).
    """

    topic: str
    args: dict[str, Any] = field(default_factory=dict)
    records: list[ManifestRecord] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    collections: dict[str, int] = field(default_factory=dict)

    def __repr__(self) -> str:  # asyncio logs task results: never print a million records
        return f"Manifest(topic={self.topic!r}, total={self.total}, counts={self.counts})"

    @property
    def total(self) -> int:
        return len(self.records)

    def add(self, record: GeneratedRecord, partition: int, offset: int) -> ManifestRecord:
        """Files one produced record (call in production order)."""
        if record.kind == GLAMIRA:
            event_id = record.event_id
            assert record.collection is not None
            self.collections[record.collection] = self.collections.get(record.collection, 0) + 1
        elif record.kind == SEED:
            event_id = event_id_from_coordinates(self.topic, partition, offset)
        else:
            event_id = None
        entry = ManifestRecord(partition, offset, record.kind, event_id)
        self.records.append(entry)
        self.counts[record.kind] = self.counts.get(record.kind, 0) + 1
        return entry

    def valid_event_ids(self) -> list[str]:
        """event_ids of the valid records, in production order (all distinct)."""
        return [r.event_id for r in self.records if r.event_id is not None]

    def bad_coordinates(self) -> dict[tuple[int, int], str]:
        """(partition, offset) → bad kind, for every malformed record."""
        return {(r.partition, r.offset): r.kind for r in self.records if r.kind in BAD_KINDS}

    def by_coordinates(self) -> dict[tuple[int, int], ManifestRecord]:
        return {(r.partition, r.offset): r for r in self.records}

    def end_offsets(self) -> dict[int, int]:
        """partition → the offset after the last record this run wrote there."""
        ends: dict[int, int] = {}
        for r in self.records:
            ends[r.partition] = max(ends.get(r.partition, 0), r.offset + 1)
        return ends

    # ---- serialization -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "args": self.args,
            "total": self.total,
            "counts": self.counts,
            "collections": dict(sorted(self.collections.items())),
            "records": [{"partition": r.partition, "offset": r.offset, "kind": r.kind, "event_id": r.event_id} for r in self.records],
        }

    def to_json(self) -> str:
        return orjson.dumps(self.to_dict()).decode()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        records = [ManifestRecord(r["partition"], r["offset"], r["kind"], r["event_id"]) for r in data["records"]]
        manifest = cls(topic=data["topic"], args=dict(data.get("args", {})), records=records)
        manifest.counts = {**dict.fromkeys(KINDS, 0), **Counter(r.kind for r in records)}
        manifest.collections = dict(data.get("collections", {}))
        if data.get("total", len(records)) != len(records) or data.get("counts", manifest.counts) != manifest.counts:
            raise ValueError("manifest is inconsistent: total/counts do not match its records")
        return manifest

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        return cls.from_dict(orjson.loads(text))

    def write(self, path: str | Path) -> None:
        """Writes atomically (temp file + rename), so a reader never sees half a manifest."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(orjson.dumps(self.to_dict()))
        tmp.replace(path)

    @classmethod
    def read(cls, path: str | Path) -> Manifest:
        return cls.from_json(Path(path).read_bytes())
