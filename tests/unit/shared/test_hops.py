"""shared.hops: the per-remote-partition comparison of the Kafka hops' ledgers, and the sink's
tally of a batch (sink.ledger.tally_batch), against a simulation written here in plain Python."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from hypothesis import given
from hypothesis import strategies as st
from sink.ledger import source_of_value, tally_batch

from shared.hops import (
    STATUS_IN_FLIGHT,
    STATUS_MISSING,
    STATUS_OK,
    STATUS_OVER,
    STATUS_UNLEDGERED,
    BridgeCounts,
    parse_source_key,
    reconcile_hops,
    source_key,
    sum_sink_ledgers,
)

SRC = ("product.views", 1)


def sink(consumed: int, stored: int, duplicates: int = 0, dead: int = 0) -> dict[str, int]:
    return {"consumed": consumed, "stored": stored, "duplicates": duplicates, "dead_lettered": dead}


def status(copied: int, consumed: int, stored: int, docs: int, *, complete: bool = True, sink_complete: bool = True) -> str:
    bridge = {SRC: BridgeCounts(copied, 0, complete)}
    (report,) = reconcile_hops(bridge, {SRC: sink(consumed, stored, consumed - stored)}, sink_complete, {SRC: docs})
    return report.status


def test_statuses() -> None:
    assert status(10, 10, 8, 8) == STATUS_OK
    assert status(10, 7, 7, 7) == STATUS_IN_FLIGHT  # records on the local topic not counted yet
    assert status(10, 10, 8, 9) == STATUS_IN_FLIGHT  # inserted, the batch's counts not yet added
    assert status(10, 11, 8, 8) == STATUS_OVER  # counted downstream, never committed upstream
    assert status(10, 10, 8, 7) == STATUS_MISSING  # a stored document is gone
    assert status(10, 11, 8, 7, complete=False) == STATUS_UNLEDGERED
    assert status(10, 11, 8, 7, sink_complete=False) == STATUS_UNLEDGERED


def test_a_partition_only_the_store_knows_is_unledgered() -> None:
    (report,) = reconcile_hops({}, {}, True, {SRC: 5})
    assert (report.status, report.bridge, report.sink, report.documents, report.in_flight) == (STATUS_UNLEDGERED, None, None, 5, 0)


@given(st.text(min_size=0, max_size=20), st.integers(min_value=0, max_value=10_000))
def test_source_keys_are_reversible_and_valid_field_names(topic: str, partition: int) -> None:
    key = source_key(topic, partition)
    assert "." not in key and not key.startswith("$")
    assert parse_source_key(key) == (topic, partition)


def test_sources_that_are_not_a_topic_and_an_integer_partition_are_unknown() -> None:
    assert {source_key(None, 1), source_key("t", "1"), source_key("t", True), source_key("t", 1.0)} == {"?"}
    assert source_of_value(b"not json") == source_of_value(b"[1]") == source_of_value(None) == "?"
    assert source_of_value(b'{"source_topic": "a.b", "source_partition": 3}') == "a%2Eb/3"


# ---------------------------------------------------------------- a simulated pipeline


@dataclass
class FakeLedger:
    floor: int = 0

    def counts(self, tp: TopicPartition, record: ConsumerRecord[Any, Any]) -> bool:
        return bool(record.offset >= self.floor)


@dataclass
class FakeResult:
    inserted: list[int] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)
    redelivered: list[int] = field(default_factory=list)
    refused: dict[int, Any] = field(default_factory=dict)
    conflicts: dict[int, Any] = field(default_factory=dict)


@dataclass
class FakeDead:
    record: ConsumerRecord[Any, Any]


@dataclass
class FakeBatch:
    doc_records: list[ConsumerRecord[Any, Any]]
    docs: list[dict[str, Any]]
    dead_letters: list[FakeDead]
    tally: Any


def record(offset: int, value: bytes = b"{}") -> ConsumerRecord[Any, Any]:
    return ConsumerRecord("local", 0, offset, 0, 0, None, value, None, 0, len(value), [])


OUTCOMES = ("inserted", "duplicate", "redelivered", "refused", "conflict", "unbuildable")


@given(
    st.lists(st.tuples(st.sampled_from(OUTCOMES), st.integers(min_value=0, max_value=3)), min_size=1, max_size=60),
    st.integers(min_value=0, max_value=70),
)
def test_tally_counts_each_record_above_the_floor_once_by_outcome(outcomes: list[tuple[str, int]], floor: int) -> None:
    from shared.hops import SinkTally

    batch = FakeBatch([], [], [], SinkTally())
    result = FakeResult()
    expected: dict[str, dict[str, int]] = {}
    for offset, (outcome, partition) in enumerate(outcomes):
        key = f"t/{partition}"
        doc = {"source_topic": "t", "source_partition": partition}
        if outcome == "unbuildable":
            batch.dead_letters.append(FakeDead(record(offset, b'{"source_topic": "t", "source_partition": %d' % partition)))
            key = "?"  # the value is cut short: not JSON
        else:
            i = len(batch.docs)
            batch.docs.append(doc)
            batch.doc_records.append(record(offset))
            {
                "inserted": result.inserted,
                "duplicate": result.duplicates,
                "redelivered": result.duplicates,
                "refused": [],
                "conflict": [],
            }[outcome].append(i)
            if outcome == "redelivered":
                result.redelivered.append(i)
            if outcome == "refused":
                result.refused[i] = ("sink.write", "X", "m")
            if outcome == "conflict":
                result.conflicts[i] = "m"
        if offset < floor:
            continue
        name = {"inserted": "stored", "redelivered": "stored", "duplicate": "duplicates"}.get(outcome, "dead_lettered")
        counts = expected.setdefault(key, {"consumed": 0, "stored": 0, "duplicates": 0, "dead_lettered": 0})
        counts["consumed"] += 1
        counts[name] += 1
    tally_batch(FakeLedger(floor), batch, result)  # type: ignore[arg-type]
    assert batch.tally.counts.get(("local", 0), {}) == expected


@given(st.lists(st.tuples(st.integers(0, 2), st.sampled_from(["consumed", "stored"]), st.integers(0, 5)), max_size=30))
def test_sum_of_sink_ledgers_per_remote_partition(entries: list[tuple[int, str, int]]) -> None:
    docs: list[dict[str, Any]] = [{"complete": True, "counts": {}} for _ in range(3)]
    expected: dict[tuple[str, int], dict[str, int]] = {}
    for i, (partition, name, n) in enumerate(entries):
        counts = docs[i % 3]["counts"].setdefault(f"t/{partition}", {})
        counts[name] = counts.get(name, 0) + n
        target = expected.setdefault(("t", partition), {"consumed": 0, "stored": 0, "duplicates": 0, "dead_lettered": 0})
        target[name] += n
    docs[1]["counts"]["?"] = {"consumed": 4, "dead_lettered": 4}
    assert sum_sink_ledgers(docs) == (expected, True)
    docs[2]["complete"] = False
    assert sum_sink_ledgers(docs)[1] is False
