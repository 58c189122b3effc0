"""The sink's ledger: what it did with each local record, counted once (see :mod:`shared.hops`).

One document per local partition in the ``sink_ledger`` collection (beside the events):
``_id`` ``"{collection}/{topic}/{partition}"``, ``next_offset`` (every record below it is
counted), ``complete`` (created while the consumer group had no committed offset for the
partition: counting started with its first record; false after an upgrade) and ``counts`` per remote partition
(``consumed``, ``stored``, ``duplicates``, ``dead_lettered``).

- A batch's counts are added by the committer *before* its offsets are committed, in batch
  order, with a compare-and-set on ``next_offset``; if the commit then fails, the redelivered
  records lie below ``next_offset`` and are not counted again (:meth:`SinkLedger.floor`).
- **Fencing.** A sink that was paused past its session (or lost its assignment while a batch
  was being written) wakes up holding a batch of partitions that now belong to another sink. Its
  counts must not land, and the new owner's must. So each document names its owner: the
  consumer group's ``generation`` and ``member`` id of the assignment that last loaded it.
  Loading a partition first claims it, with a compare-and-set that only raises the generation (a
  late load of an older assignment never takes it back; an owner whose member has left the
  group, a previous life of a deleted group, is taken over), then reads ``next_offset``. Every
  advance requires the owner it loaded with. A zombie's advance therefore misses once the new
  owner has loaded: it is *fenced*, counts nothing, and says so at INFO. Its offset commit is
  refused by the group coordinator for the same reason, so its records are redelivered to, and
  counted by, the owner. An advance that landed before the new owner loaded is seen by that
  load: the new owner's floor starts above it.
- A compare-and-set that misses under the same owner (the ledger moved under it: nothing in the
  pipeline does that) marks the partition's ledger incomplete and says so: its counts are
  reported, no longer judged. It never blocks the sink.
- If the ledger cannot be written (MongoDB away) the offsets are not committed either: the
  records come again and are counted then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import orjson
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError
from pymongo.write_concern import WriteConcern

from shared.hops import SINK_LEDGER_COLLECTION, UNKNOWN_SOURCE, SinkTally, source_key
from sink.mongo import backend_outage_retriable

if TYPE_CHECKING:  # annotations only: sink.batch and sink.writes need nothing from here
    from sink.batch import Batch
    from sink.writes import WriteResult

log = logging.getLogger(__name__)

Owner = tuple[int, str]  # an assignment: the consumer group's generation and this member's id


def ledger_id(collection: str, tp: TopicPartition) -> str:
    return f"{collection}/{tp.topic}/{tp.partition}"


def source_of_value(value: bytes | None) -> str:
    """The remote partition of a record that did not become a document (best effort)."""
    try:
        doc = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return UNKNOWN_SOURCE
    return source_key(doc.get("source_topic"), doc.get("source_partition")) if isinstance(doc, dict) else UNKNOWN_SOURCE


def source_of_doc(doc: dict[str, Any]) -> str:
    return source_key(doc.get("source_topic"), doc.get("source_partition"))


class SinkLedger:
    """The ledger documents of the partitions this sink owns (see the module)."""

    def __init__(
        self,
        database: Any,
        collection: str,
        committed: Callable[[TopicPartition], Awaitable[int | None]],
        members: Callable[[], Awaitable[set[str]]],
        write_concern: WriteConcern | None = None,
    ) -> None:
        """``committed``: the consumer group's committed offset of a partition (None: never);
        ``members``: the group's member ids now (:func:`shared.kafka.group_members`);
        ``write_concern``: the events' (a count must be as durable as what it counts)."""
        self.ledger: AsyncCollection[dict[str, Any]] = database[SINK_LEDGER_COLLECTION].with_options(write_concern=write_concern)
        self.collection = collection
        self._committed = committed
        self._members = members
        self._floors: dict[TopicPartition, int] = {}  # next_offset as loaded at assignment: below it, counted
        self._positions: dict[TopicPartition, int | None] = {}  # next_offset now (None: unknown, after a missed compare-and-set)
        self._owner: Owner | None = None  # the assignment's (generation, member id); None: no fencing
        self._fenced: set[TopicPartition] = set()  # claimed by a newer assignment: nothing more is counted here

    def forget(self, owner: Owner | None) -> None:
        """A new assignment, by ``owner`` (:func:`shared.kafka.group_membership`): positions are
        claimed and read again before the next batch is counted."""
        self._floors.clear()
        self._positions.clear()
        self._fenced.clear()
        self._owner = owner

    async def load(self, tps: Iterable[TopicPartition]) -> None:
        """Reads the positions of ``tps`` not known yet, creating the missing documents first
        (raises pymongo's and the coordinator's errors, a store outage as ``MongoUnavailableError``:
        the caller retries). Called before any offset of a partition is committed (batches and
        idle position commits alike), so a document created with ``complete: true`` (no committed
        offset yet) has missed nothing."""
        with backend_outage_retriable():
            await self._load(tps)

    async def _load(self, tps: Iterable[TopicPartition]) -> None:
        todo = [tp for tp in tps if tp not in self._positions]
        if not todo:
            return
        ids = {ledger_id(self.collection, tp): tp for tp in todo}
        found = await self._read(list(ids))
        for _id, tp in ids.items():
            if _id in found:
                continue
            committed = await self._committed(tp)
            doc = {
                "_id": _id,
                "collection": self.collection,
                "topic": tp.topic,
                "partition": tp.partition,
                "next_offset": committed or 0,
                "complete": committed is None,  # else: records below it were written before the ledger
                "counts": {},
            }
            with contextlib.suppress(DuplicateKeyError):  # created meanwhile by another owner: read below
                await self.ledger.insert_one(doc)
        if self._owner is not None:  # claimed before the positions are read: an advance after the claim is fenced
            claims = await asyncio.gather(*(self._claim(_id) for _id in ids))
            for (_id, tp), claimed in zip(ids.items(), claims, strict=True):
                if not claimed:
                    self._fenced.add(tp)
                    log.info("sink ledger of %s partition %d is claimed by a newer assignment: fenced", tp.topic, tp.partition)
        found = await self._read(list(ids))
        for _id, tp in ids.items():
            self._positions[tp] = self._floors[tp] = found[_id]

    async def _claim(self, _id: str) -> bool:
        """Names this sink's assignment the owner of a ledger document, unless a newer one (or
        another member of the same generation: a static member replaced keeps it) of a member
        still in the group is: then this sink is the zombie. An owner whose member left the group
        is taken over, with a compare-and-set on that owner: a replaced static member, or a
        previous life of the group (deleted, or expired while empty: generations start again at 1)."""
        assert self._owner is not None
        generation, member = self._owner
        claim = {"$set": {"generation": generation, "member": member}}
        for _ in range(3):  # another claim between the two steps: look again
            older = {
                "_id": _id,
                "$or": [
                    {"generation": {"$exists": False}},
                    {"generation": {"$lt": generation}},
                    {"generation": generation, "member": member},  # a replaced static member keeps the generation
                ],
            }
            if (await self.ledger.update_one(older, claim)).matched_count == 1:
                return True
            found = await self.ledger.find_one({"_id": _id}, {"generation": 1, "member": 1})
            if found is None or found.get("member") in await self._members():
                return False
            owner = {"_id": _id, "generation": found.get("generation"), "member": found.get("member")}
            if (await self.ledger.update_one(owner, claim)).matched_count == 1:
                log.warning(
                    "sink ledger %s was claimed by generation %s, whose member left the group: taken over by generation %s",
                    _id,
                    found.get("generation"),
                    generation,
                )
                return True
        return False

    async def _read(self, ids: list[str]) -> dict[str, int]:
        if not ids:
            return {}
        # One equality per id: FerretDB pushes no $in down (a scan of the ledger collection).
        found = await asyncio.gather(*(self.ledger.find_one({"_id": _id}, {"next_offset": 1}) for _id in ids))
        return {doc["_id"]: int(doc["next_offset"]) for doc in found if doc is not None}

    def counts(self, tp: TopicPartition, record: ConsumerRecord[Any, Any]) -> bool:
        """Whether ``record`` is counted (not below the ledger position loaded at assignment)."""
        return bool(record.offset >= self._floors.get(tp, 0))

    async def advance(self, offsets: dict[TopicPartition, int], tally: SinkTally) -> None:
        """Adds ``tally`` and moves each partition's ``next_offset`` to ``offsets`` (see the module);
        a store outage raises ``MongoUnavailableError`` (retried by the committer)."""
        with backend_outage_retriable():
            await self._advance(offsets, tally)

    async def _advance(self, offsets: dict[TopicPartition, int], tally: SinkTally) -> None:
        for tp, end in offsets.items():
            _id = ledger_id(self.collection, tp)
            if tp in self._fenced:
                continue
            position = self._positions.get(tp)
            if position is None:  # never loaded: cannot happen (load precedes every write); say so
                await self._missed(tp, _id, end)
                continue
            if end <= position:
                continue
            counts = tally.counts.get((tp.topic, tp.partition), {})
            inc = {f"counts.{source}.{name}": n for source, per in counts.items() for name, n in per.items() if n}
            update: dict[str, Any] = {"$set": {"next_offset": end}}
            if inc:
                update["$inc"] = inc
            expected: dict[str, Any] = {"_id": _id, "next_offset": position}
            if self._owner is not None:
                expected.update(generation=self._owner[0], member=self._owner[1])
            result = await self.ledger.update_one(expected, update)
            if result.matched_count != 1:
                await self._missed(tp, _id, end)
                continue
            self._positions[tp] = end

    async def _missed(self, tp: TopicPartition, _id: str, end: int) -> None:
        found = await self.ledger.find_one({"_id": _id}, {"next_offset": 1, "generation": 1, "member": 1})
        if found is not None and self._owner is not None and (found.get("generation"), found.get("member")) != self._owner:
            self._fenced.add(tp)
            log.info(
                "sink ledger of %s partition %d is owned by generation %s (this sink: %s): fenced, its records are counted by their owner",
                tp.topic,
                tp.partition,
                found.get("generation"),
                self._owner[0],
            )
            return
        moved = int(found["next_offset"]) if found else None
        self._positions[tp] = moved
        if moved is not None and moved >= end:
            return  # counted already (no owner recorded: a ledger written before fencing)
        log.error(
            "sink ledger of %s partition %d moved to %s under this sink (expected %s): its counts are no longer complete",
            tp.topic,
            tp.partition,
            moved,
            end,
        )
        await self.ledger.update_one({"_id": _id}, {"$set": {"complete": False}})


def tally_batch(ledger: SinkLedger, batch: Batch, result: WriteResult) -> None:
    """Fills ``batch.tally`` from the outcome of its documents (``result``, a
    :class:`sink.writes.WriteResult`) and its build-stage dead letters; records below the ledger
    position are skipped (counted by an earlier delivery)."""
    tally: SinkTally = batch.tally

    def book(record: ConsumerRecord[Any, Any], source: str, outcome: str) -> None:
        tp = TopicPartition(record.topic, record.partition)
        if not ledger.counts(tp, record):
            return
        tally.add((record.topic, record.partition), source, outcome)

    redelivered = set(result.redelivered)
    outcome = dict.fromkeys(result.inserted, "stored")
    outcome.update((i, "stored" if i in redelivered else "duplicates") for i in result.duplicates)
    outcome.update(dict.fromkeys([*result.refused, *result.conflicts], "dead_lettered"))
    for i, record in enumerate(batch.doc_records):
        book(record, source_of_doc(batch.docs[i]), outcome[i])
    for dead in batch.dead_letters:
        book(dead.record, source_of_value(dead.record.value), "dead_lettered")
