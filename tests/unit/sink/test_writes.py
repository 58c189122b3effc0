"""sink.writes.write_documents, pure logic against a small fake store: bisection order and cost,
outages during a bisection, confirmation of unknown codes, duplicates vs conflicts.

The fake behaves like the captured FerretDB (fixtures/ferretdb_errors.json): a document holding
a NUL makes the whole ``insert_many`` fail, after the documents before it landed. The proof
against the real FerretDB is tests/integration/sink/test_sink_refusals.py."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime
from typing import Any

import bson
import pytest
from bson.int64 import Int64
from bson.raw_bson import RawBSONDocument
from sink.compare import differing_fields
from sink.documents import IngestStamp
from sink.mongo import InsertOutcome, MongoBatchRefusedError, MongoSlowQueryError, MongoUnavailableError
from sink.verdicts import Verdict
from sink.visibility import LeaseLapsedError
from sink.writes import WriteResult, write_documents

NUL_MESSAGE = "code 1 (InternalError): ERROR: unsupported Unicode escape sequence (SQLSTATE 22P05)"


class FakeStore:
    def __init__(self) -> None:
        self.docs: dict[Any, bytes] = {}
        self.calls: list[list[Any]] = []  # _ids of every insert attempt
        self.finds = 0
        self.down_for = 0  # the next n calls (insert, find, ping) fail as an outage
        self.unknown: set[Any] = set()  # _ids refused with an unknown code, whole batch
        self.pings = 0

    def _outage(self) -> None:
        if self.down_for:
            self.down_for -= 1
            raise MongoUnavailableError("AutoReconnect: connection closed")

    async def insert(self, docs: list[dict[str, Any]]) -> InsertOutcome:
        self.calls.append([d["_id"] for d in docs])
        self._outage()
        out = InsertOutcome()
        for j, doc in enumerate(docs):
            if any("\x00" in v for v in doc.values() if isinstance(v, str)):
                raise MongoBatchRefusedError(1, "InternalError", NUL_MESSAGE, Verdict.REFUSAL)
            if doc["_id"] in self.unknown:
                raise MongoBatchRefusedError(424242, "SomethingNew", "code 424242 (SomethingNew): new", Verdict.UNKNOWN)
            if doc["_id"] in self.docs:
                out.duplicates.append(j)
            else:
                self.docs[doc["_id"]] = bson.encode(doc)
                out.inserted += 1
        return out

    async def stored(self, ids: list[Any], bound_s: float | None = None, accept: Any = None) -> dict[Any, RawBSONDocument]:
        self.finds += 1
        self._outage()
        return {i: RawBSONDocument(self.docs[i]) for i in ids if i in self.docs}

    async def healthy(self) -> bool:
        self.pings += 1
        if self.down_for:
            self.down_for -= 1
            return False
        return True


def doc(i: int, **extra: Any) -> dict[str, Any]:
    return {"_id": f"e{i}", "event_id": f"e{i}", "n": i, "source_offset": i, "ingested_at": "", "ingest_hour": "", "part": 0, **extra}


async def no_wait(exc: Exception) -> None:
    OUTAGES.append(exc)


OUTAGES: list[Exception] = []


@pytest.fixture(autouse=True)
def _clear() -> None:
    OUTAGES.clear()


def buckets(result: WriteResult) -> list[int]:
    return sorted([*result.inserted, *result.duplicates, *result.conflicts, *result.refused])


async def test_bisection_finds_the_one_refused_document_first_half_first() -> None:
    store = FakeStore()
    docs = [doc(i) for i in range(16)]
    docs[5]["s"] = "a\x00b"
    result = await write_documents(store, docs, on_unavailable=no_wait)  # type: ignore[arg-type]
    assert result.refused == {5: ("sink.write", "InternalError", NUL_MESSAGE)}
    # e0-e4 landed in the failed attempts (as on FerretDB) and count as this call's inserts.
    assert sorted(result.inserted) == [i for i in range(16) if i != 5]
    assert result.duplicates == [] and result.conflicts == {} and buckets(result) == list(range(16))
    sizes = [len(c) for c in store.calls]
    # 16 ✗ → 8 (e0-e7) ✗ → 4 (e0-e3) ✓ → 4 (e4-e7) ✗ → 2 (e4,e5) ✗ → e4 ✓ → e5 ✗ → 2 (e6,e7) ✓ → 8 (e8-e15) ✓
    assert sizes == [16, 8, 4, 4, 2, 1, 1, 2, 8]
    assert [c[0] for c in store.calls] == ["e0", "e0", "e0", "e4", "e4", "e4", "e5", "e6", "e8"]
    assert OUTAGES == []  # a refusal is not an outage


@pytest.mark.parametrize(("n", "bad"), [(5000, 0), (5000, 2500), (5000, 4999), (1, 0), (2, 1), (3, 2)])
async def test_bisection_cost_is_logarithmic(n: int, bad: int) -> None:
    store = FakeStore()
    docs = [doc(i) for i in range(n)]
    docs[bad]["s"] = "\x00"
    result = await write_documents(store, docs, on_unavailable=no_wait)  # type: ignore[arg-type]
    assert list(result.refused) == [bad] and buckets(result) == list(range(n))
    assert len(store.calls) <= 2 * math.ceil(math.log2(n)) + 1
    assert len(store.docs) == n - 1


async def test_an_outage_during_a_bisection_waits_and_never_refuses_a_valid_document() -> None:
    store = FakeStore()
    docs = [doc(i) for i in range(32)]
    docs[20]["s"] = "\x00"
    original = store.insert
    count = 0

    async def going_down(batch: list[dict[str, Any]]) -> InsertOutcome:
        nonlocal count
        count += 1
        if count == 3:  # in the middle of the bisection
            store.down_for = 4
        return await original(batch)

    store.insert = going_down  # type: ignore[method-assign]
    result = await write_documents(store, docs, on_unavailable=no_wait)  # type: ignore[arg-type]
    assert list(result.refused) == [20] and result.conflicts == {}
    assert sorted(result.inserted) == [i for i in range(32) if i != 20]
    assert len(OUTAGES) == 4 and all(isinstance(e, MongoUnavailableError) for e in OUTAGES)


async def test_an_unknown_code_is_confirmed_by_retries_and_a_healthy_ping_before_refusing() -> None:
    store = FakeStore()
    store.unknown = {"e2"}
    docs = [doc(i) for i in range(4)]
    result = await write_documents(store, docs, max_attempts=3, on_unavailable=no_wait)  # type: ignore[arg-type]
    assert result.refused == {2: ("sink.write", "SomethingNew", "code 424242 (SomethingNew): new")}
    assert sorted(result.inserted) == [0, 1, 3]
    assert [c for c in store.calls if c == ["e2"]] == [["e2"]] * 3  # refused alone three times
    assert store.pings >= 3


async def test_an_unknown_code_while_the_server_fails_its_ping_is_an_outage() -> None:
    store = FakeStore()
    store.unknown = {"e0"}
    docs = [doc(0)]
    # The first two pings fail (backend down): those two refusals do not count.
    store_healthy = store.healthy
    fails = 2

    async def healthy() -> bool:
        nonlocal fails
        if fails:
            fails -= 1
            return False
        return await store_healthy()

    store.healthy = healthy  # type: ignore[method-assign]
    result = await write_documents(store, docs, max_attempts=2, on_unavailable=no_wait)  # type: ignore[arg-type]
    assert list(result.refused) == [0]
    assert len(store.calls) == 4 and len(OUTAGES) == 2


async def test_duplicates_equal_outside_the_delivery_fields_and_conflicts() -> None:
    store = FakeStore()
    first = [doc(i, f=1.5, a=[1, {"x": [2, 3]}], big=2**40) for i in range(4)]
    await write_documents(store, first, on_unavailable=no_wait)  # type: ignore[arg-type]
    again = [doc(i, f=1.5, a=[1, {"x": [2, 3]}], big=2**40) for i in range(4)]
    for d in again:  # redelivered through another path: only the delivery fields differ
        d["source_offset"] = 999
        d["bridged_at"] = "2030-01-01T00:00:00.000Z"
    again[1]["f"] = 2.5
    again[2]["n"] = 2.0  # an int stored, a double now: different
    again[3]["big"] = Int64(2**40)  # int64 both times (2**40 does not fit int32): equal
    store.finds = 0
    result = await write_documents(store, again, on_unavailable=no_wait)  # type: ignore[arg-type]
    assert sorted(result.duplicates) == [0, 3] and result.inserted == [] and result.refused == {}
    assert sorted(result.conflicts) == [1, 2]
    assert "outside the delivery fields: f;" in result.conflicts[1]
    assert "outside the delivery fields: n;" in result.conflicts[2]
    assert store.finds == 1  # one find for the whole attempt's duplicates


class SlowLookupStore(FakeStore):
    """Its duplicate lookup runs out of its bound, with the server up, on the first ``slow`` calls.
    The first call is bounded by the writer's attempt timeout (``bound_s`` None), here 1 s."""

    def __init__(self, slow: int) -> None:
        super().__init__()
        self.slow = slow
        self.bounds: list[float | None] = []

    async def stored(self, ids: list[Any], bound_s: float | None = None, accept: Any = None) -> dict[Any, RawBSONDocument]:
        self.bounds.append(bound_s)
        if len(self.bounds) <= self.slow:
            bound = 1.0 if bound_s is None else bound_s
            raise MongoSlowQueryError(f"lookup took over {bound:g} s", bound=bound)
        return await super().stored(ids, bound_s)


@pytest.mark.parametrize(("slow", "bounds"), [(0, [None]), (2, [None, 2.0, 4.0]), (5, [None, 2.0, 4.0, 8.0, 8.0, 8.0])])
async def test_a_slow_duplicate_lookup_is_retried_with_a_doubled_bound_up_to_8_times_the_first(
    slow: int, bounds: list[float | None]
) -> None:
    store = SlowLookupStore(slow)
    await write_documents(store, [doc(1)], on_unavailable=no_wait)  # type: ignore[arg-type]
    result = await write_documents(store, [doc(1)], on_unavailable=no_wait)  # type: ignore[arg-type]
    assert store.bounds == bounds
    assert result.duplicates == [0] and result.conflicts == {} and result.inserted == []
    assert [type(e) for e in OUTAGES] == [MongoSlowQueryError] * slow  # each one counted


class MemoryviewStore(FakeStore):
    """Answers ``stored`` as pymongo 4.20 can: RawBSONDocuments over a memoryview of the reply."""

    async def stored(self, ids: list[Any], bound_s: float | None = None, accept: Any = None) -> dict[Any, RawBSONDocument]:
        self.finds += 1
        return {i: RawBSONDocument(memoryview(self.docs[i])) for i in ids if i in self.docs}


async def test_duplicates_read_back_over_a_memoryview_and_own_redeliveries_are_told_apart() -> None:
    store = MemoryviewStore()
    coords = {"source_topic": "t", "source_partition": 1}
    await write_documents(store, [doc(i, **coords) for i in range(3)], on_unavailable=no_wait)  # type: ignore[arg-type]
    again = [doc(i, **coords) for i in range(3)]
    again[1]["source_offset"] = 999  # the same event from another remote record: a true duplicate
    again[2]["f"] = 1.0  # different content: a conflict
    result = await write_documents(store, again, on_unavailable=no_wait)  # type: ignore[arg-type]
    assert sorted(result.duplicates) == [0, 1] and sorted(result.conflicts) == [2]
    assert result.redelivered == [0]  # same source coordinates: the sink's own earlier write


def test_differing_fields_is_exact_and_type_aware() -> None:
    base = {"_id": "e", "a": 1, "b": [1.0, {"c": "x"}], "ingested_at": "t1", "source_offset": 1}
    same = {"_id": "e", "a": 1, "b": [1.0, {"c": "x"}], "ingested_at": "t2", "source_offset": 7}
    assert differing_fields(bson.encode(base), bson.encode(same)) == []
    assert differing_fields(bson.encode(base), bson.encode({**same, "a": Int64(1)})) == ["a"]  # int32 vs int64
    assert differing_fields(bson.encode(base), bson.encode({**same, "a": 1.0})) == ["a"]
    assert differing_fields(bson.encode(base), bson.encode({**same, "b": [1.0, {"c": "y"}]})) == ["b"]
    assert differing_fields(bson.encode(base), bson.encode({**same, "z": None})) == ["z"]
    reordered = {"_id": "e", "b": [1.0, {"c": "x"}], "a": 1}
    assert differing_fields(bson.encode(base), bson.encode(reordered)) == ["(field order)"]
    # FerretDB stores -0.0 as 0.0 (captured): the same event.
    assert differing_fields(bson.encode({"_id": "e", "z": 0.0}), bson.encode({"_id": "e", "z": -0.0})) == []
    # FerretDB moves _id to the front of nested documents too (seen by the process fuzz test): the same event.
    nested_sent = {"_id": "e", "o": {"x": 1, "_id": None, "y": [{"q": 2, "_id": 3}]}}
    nested_stored = {"_id": "e", "o": {"_id": None, "x": 1, "y": [{"_id": 3, "q": 2}]}}
    assert differing_fields(bson.encode(nested_stored), bson.encode(nested_sent)) == []
    assert differing_fields(
        bson.encode(nested_stored), bson.encode({"_id": "e", "o": {"_id": None, "y": [{"_id": 3, "q": 2}], "x": 1}})
    ) == ["o"]  # any other reordering still differs


async def test_a_timed_out_attempt_is_retried_smaller_and_counts_as_an_outage() -> None:
    store = FakeStore()
    original = store.insert

    async def slow(batch: list[dict[str, Any]]) -> InsertOutcome:
        if len(batch) > 3:
            store.calls.append([d["_id"] for d in batch])
            raise MongoUnavailableError("NetworkTimeout: timed out", timed_out=True)
        return await original(batch)

    store.insert = slow  # type: ignore[method-assign]
    docs = [doc(i) for i in range(10)]
    result = await write_documents(store, docs, on_unavailable=no_wait)  # type: ignore[arg-type]
    assert sorted(result.inserted) == list(range(10))
    assert [len(c) for c in store.calls] == [10, 5, 3, 2, 3, 2]
    assert len(OUTAGES) == 2


async def test_every_attempt_restamps() -> None:
    store = FakeStore()
    docs = [doc(i) for i in range(4)]
    docs[3]["s"] = "\x00"
    seen: list[str] = []
    original = store.insert

    async def record(batch: list[dict[str, Any]]) -> InsertOutcome:
        seen.append(batch[0]["ingested_at"])
        assert all(d["ingest_hour"] == d["ingested_at"][:13] and d["ingest_second"] == d["ingested_at"][:19] for d in batch)
        return await original(batch)

    store.insert = record  # type: ignore[method-assign]
    await write_documents(store, docs, on_unavailable=no_wait)  # type: ignore[arg-type]
    assert all(s.endswith("Z") and len(s) == 24 for s in seen)


class RecordingClock:
    """An attempt clock (sink.writes.AttemptClock) that refuses the first ``refuse`` attempts as
    a lapsed lease would, stamps the others one second apart, and records how each ended."""

    def __init__(self, refuse: int = 0) -> None:
        self.refuse = refuse
        self.begun = 0
        self.ended: list[tuple[int, bool]] = []  # (token, maybe_pending)

    def begin_attempt(self) -> tuple[IngestStamp, int]:
        if self.refuse:
            self.refuse -= 1
            raise LeaseLapsedError("visibility lease not published yet")
        self.begun += 1
        return IngestStamp.at(datetime(2026, 11, 27, 21, 5, self.begun, tzinfo=UTC)), self.begun

    def end_attempt(self, token: int, maybe_pending: bool) -> None:
        self.ended.append((token, maybe_pending))


async def test_an_attempt_the_clock_refuses_goes_through_on_unavailable_and_is_tried_again() -> None:
    store = FakeStore()
    clock = RecordingClock(refuse=1)
    docs = [doc(i) for i in range(3)]
    result = await write_documents(store, docs, on_unavailable=no_wait, attempts=clock)  # type: ignore[arg-type]
    assert sorted(result.inserted) == [0, 1, 2] and buckets(result) == [0, 1, 2]
    assert len(OUTAGES) == 1 and isinstance(OUTAGES[0], LeaseLapsedError) and OUTAGES[0].reason == "visibility_lease"
    assert store.calls == [["e0", "e1", "e2"]]  # the refused attempt never reached the store
    assert clock.ended == [(1, False)]
    stored = [bson.decode(store.docs[f"e{i}"]) for i in range(3)]
    assert {(d["ingested_at"], d["ingest_hour"], d["ingest_second"]) for d in stored} == {
        ("2026-11-27T21:05:01.000Z", "2026-11-27T21", "2026-11-27T21:05:01")
    }


async def test_each_attempt_ends_pending_only_when_the_server_may_still_apply_it() -> None:
    store = FakeStore()
    store.unknown = {"e3"}
    clock = RecordingClock()
    docs = [doc(i) for i in range(4)]
    docs[1]["s"] = "\x00"
    original = store.insert
    calls = 0

    async def flaky(batch: list[dict[str, Any]]) -> InsertOutcome:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise MongoUnavailableError("NetworkTimeout: timed out", timed_out=True)
        return await original(batch)

    store.insert = flaky  # type: ignore[method-assign]
    result = await write_documents(store, docs, max_attempts=2, on_unavailable=no_wait, attempts=clock)  # type: ignore[arg-type]
    assert result.refused == {
        1: ("sink.write", "InternalError", NUL_MESSAGE),
        3: ("sink.write", "SomethingNew", "code 424242 (SomethingNew): new"),
    }
    assert sorted(result.inserted) == [0, 2]
    # 1: all 4 timed out → pending (never reached the fake's log); 2: e0,e1 (NUL: a refusal) →
    # answered; 3: e0 ✓; 4: e1 refused; 5: e2,e3 (unknown code) → pending; 6: e2 ✓; 7, 8: e3
    # alone, unknown code twice → pending.
    assert store.calls == [["e0", "e1"], ["e0"], ["e1"], ["e2", "e3"], ["e2"], ["e3"], ["e3"]]
    assert clock.ended == [(1, True), (2, False), (3, False), (4, False), (5, True), (6, False), (7, True), (8, True)]


async def test_a_cancelled_attempt_ends_pending() -> None:
    clock = RecordingClock()
    started = asyncio.Event()

    class Hanging(FakeStore):
        async def insert(self, docs: list[dict[str, Any]]) -> InsertOutcome:
            started.set()
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

    task = asyncio.create_task(write_documents(Hanging(), [doc(0)], on_unavailable=no_wait, attempts=clock))  # type: ignore[arg-type]
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert clock.ended == [(1, True)]


async def test_an_attempt_that_found_no_server_was_not_sent_and_is_not_pinned() -> None:
    store = FakeStore()
    clock = RecordingClock()
    original = store.insert
    calls = 0

    async def no_server_then_ok(batch: list[dict[str, Any]]) -> InsertOutcome:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise MongoUnavailableError("ServerSelectionTimeoutError: no server", sent=False)
        if calls == 2:
            raise MongoUnavailableError("AutoReconnect: connection closed")  # sent, no answer
        return await original(batch)

    store.insert = no_server_then_ok  # type: ignore[method-assign]
    result = await write_documents(store, [doc(0)], on_unavailable=no_wait, attempts=clock)  # type: ignore[arg-type]
    assert result.inserted == [0] and len(OUTAGES) == 2
    assert clock.ended == [(1, False), (2, True), (3, False)]
