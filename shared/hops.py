"""The Kafka hops' ledgers and their reconciliation, per remote partition (issue 15).

Each hop counts what it did with every record *once*, atomically with the output it stands for,
so the counts of one hop can be checked against the next:

- **bridge** (remote → local): cumulative ``copied`` (events produced to the local topic) and
  ``dead_lettered`` records per remote partition, carried in the partition's offsets-topic value
  (:mod:`bridge.offsets`) of every transaction. The value is written in the transaction that
  wrote those events, so a committed count is exact: an aborted transaction counts nothing.
- **sink** (local → MongoDB): one document per local partition in the ``sink_ledger`` collection,
  ``next_offset`` and per remote partition ``consumed``, ``stored``, ``duplicates``,
  ``dead_lettered``. It is advanced by compare-and-set on ``next_offset`` before the batch's
  offsets are committed, and records below it are never counted again: a redelivered batch
  counts nothing twice. A redelivered document that the crashed attempt had already stored
  (same source coordinates) counts as ``stored``, not as a duplicate.
- **store**: MongoDB documents per ``(source_topic, source_partition)``.

Per remote partition, with both ledgers complete (counting started at the first record):

- ``copied`` (bridge) − ``consumed`` (sink) = records on the local topic the sink has not
  counted yet (``in_flight``, ≥ 0); negative means a local record was counted that the bridge
  never committed: status ``over``;
- ``stored`` (sink) = documents in MongoDB; fewer: ``missing`` (deleted from the store); more
  is ``in_flight`` too (inserted, the batch's counts not yet added) or documents written by
  something that keeps no ledger: not judged, since it loses nothing;
- otherwise ``in_flight`` if records are on their way, else ``ok``.

The readers take the ledgers in the order sink, store, bridge (the reverse of the data's path),
so a record moving meanwhile can only make a hop look behind the one before it, never ahead:
``over`` and ``missing`` are never caused by timing. A partition where either ledger started
later than the first record is ``unledgered``: its counts are reported, not judged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

SINK_LEDGER_COLLECTION = "sink_ledger"
UNKNOWN_SOURCE = "?"  # a dead-lettered record whose source coordinates could not be read

STATUS_OK = "ok"
STATUS_IN_FLIGHT = "in_flight"
STATUS_OVER = "over"
STATUS_MISSING = "missing"
STATUS_UNLEDGERED = "unledgered"
FAILING_STATUSES = frozenset({STATUS_OVER, STATUS_MISSING})

SINK_COUNTS = ("consumed", "stored", "duplicates", "dead_lettered")


def source_key(topic: Any, partition: Any) -> str:
    """The key of a remote partition in the sink ledger: ``"{topic}/{partition}"`` with the
    characters a MongoDB field name cannot hold escaped as in :mod:`sink.documents`."""
    if not isinstance(topic, str) or not isinstance(partition, int) or isinstance(partition, bool):
        return UNKNOWN_SOURCE
    text = f"{topic}/{partition}"
    return text.replace("%", "%25").replace(".", "%2E").replace("$", "%24")


def parse_source_key(key: str) -> tuple[str, int] | None:
    topic, sep, partition = key.replace("%2E", ".").replace("%24", "$").replace("%25", "%").rpartition("/")
    if not sep or not partition.isdigit():
        return None
    return topic, int(partition)


@dataclass
class BridgeCounts:
    """Cumulative counts of one remote partition, kept in its offsets-topic value."""

    copied: int = 0
    dead_lettered: int = 0
    complete: bool = True  # counting started with the partition's first record (False: after an upgrade)

    def as_dict(self) -> dict[str, Any]:
        return {"copied": self.copied, "dead_lettered": self.dead_lettered, "complete": self.complete}

    @classmethod
    def from_value(cls, value: Any) -> BridgeCounts | None:
        if not isinstance(value, dict):
            return None
        return cls(int(value.get("copied") or 0), int(value.get("dead_lettered") or 0), bool(value.get("complete")))

    def plus(self, copied: int, dead_lettered: int) -> BridgeCounts:
        return BridgeCounts(self.copied + copied, self.dead_lettered + dead_lettered, self.complete)


@dataclass
class SinkTally:
    """What one batch did, per local partition and remote partition (``source_key``)."""

    counts: dict[tuple[str, int], dict[str, dict[str, int]]] = field(default_factory=dict)

    def add(self, local: tuple[str, int], source: str, outcome: str, n: int = 1) -> None:
        per_source = self.counts.setdefault(local, {}).setdefault(source, dict.fromkeys(SINK_COUNTS, 0))
        per_source["consumed"] += n
        per_source[outcome] += n

    def merge(self, other: SinkTally) -> None:
        for local, sources in other.counts.items():
            mine = self.counts.setdefault(local, {})
            for source, counts in sources.items():
                target = mine.setdefault(source, dict.fromkeys(SINK_COUNTS, 0))
                for name, n in counts.items():
                    target[name] += n


@dataclass(frozen=True)
class PartitionReport:
    source_topic: str
    source_partition: int
    status: str
    bridge: dict[str, Any] | None
    sink: dict[str, Any] | None
    documents: int
    in_flight: int | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "source_topic": self.source_topic,
            "source_partition": self.source_partition,
            "status": self.status,
            "bridge": self.bridge,
            "sink": self.sink,
            "documents": self.documents,
            "in_flight": self.in_flight,
        }


def sum_sink_ledgers(docs: Iterable[Mapping[str, Any]]) -> tuple[dict[tuple[str, int], dict[str, int]], bool]:
    """Per remote partition the sum over the local partitions' ledger documents, and whether
    every one of them is complete. Counts of unreadable sources are kept under no partition."""
    totals: dict[tuple[str, int], dict[str, int]] = {}
    complete = True
    for doc in docs:
        complete = complete and bool(doc.get("complete"))
        for key, counts in (doc.get("counts") or {}).items():
            source = parse_source_key(key)
            if source is None or not isinstance(counts, Mapping):
                continue
            target = totals.setdefault(source, dict.fromkeys(SINK_COUNTS, 0))
            for name in SINK_COUNTS:
                target[name] += int(counts.get(name) or 0)
    return totals, complete


def reconcile_hops(
    bridge: Mapping[tuple[str, int], BridgeCounts],
    sink: Mapping[tuple[str, int], Mapping[str, int]],
    sink_complete: bool,
    documents: Mapping[tuple[str, int], int],
) -> list[PartitionReport]:
    """One report per remote partition any of the three sources knows (see the module)."""
    reports = []
    for source in sorted({*bridge, *sink, *documents}):
        b, s, docs = bridge.get(source), sink.get(source), documents.get(source, 0)
        copied = b.copied if b is not None else 0
        consumed = s["consumed"] if s is not None else 0
        stored = s["stored"] if s is not None else 0
        in_flight = copied - consumed
        if b is None or not b.complete or not sink_complete:
            status = STATUS_UNLEDGERED
        elif in_flight < 0:
            status = STATUS_OVER
        elif docs < stored:
            status = STATUS_MISSING
        elif in_flight > 0 or docs > stored:
            status = STATUS_IN_FLIGHT
        else:
            status = STATUS_OK
        reports.append(
            PartitionReport(
                source[0], source[1], status, b.as_dict() if b is not None else None, dict(s) if s is not None else None, docs, in_flight
            )
        )
    return reports
