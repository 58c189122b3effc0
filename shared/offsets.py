"""The remote offsets the bridge has copied, stored on the local cluster.

One compacted topic; key ``"{remote topic}/{partition}"``, value ``{"next_offset": N}``: the
next remote offset to copy. Each record is written inside the transaction that wrote the
events it covers, so a committed value is exactly "everything before N is on the local topic".

Source resets (issue 15) extend the value compatibly; an old value reads as epoch 0:

- ``source_epoch`` (absent = 0): how many times the partition was resumed after a reset; ids
  derived from coordinates include it (:func:`shared.event.event_id_from_coordinates`);
- ``reset`` (absent = never): the last resume: ``policy``, ``kind``, ``old_position``,
  ``new_position``, ``log_start``, ``log_end``, ``at`` (UTC ISO-8601), ``old_epoch``, ``new_epoch``;
- ``incident`` (absent = none): an open incident recorded under policy ``fail``: ``kind``,
  ``stored``, ``log_start``, ``log_end``, ``at``. It stays until a resume policy clears it, so
  a restarted bridge stays not-ready even after the new log has grown past the old position;
- ``counts`` (absent = counting began after an upgrade): the partition's cumulative ``copied`` and
  ``dead_lettered`` records and whether counting started with its first record
  (:class:`shared.hops.BridgeCounts`): written in the same transaction as the records they count.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.errors import BackendUnavailableError
from shared.hops import BridgeCounts
from shared.kafka import KafkaConnection


def offset_key(topic: str, partition: int) -> bytes:
    return f"{topic}/{partition}".encode()


@dataclass(frozen=True)
class StoredOffset:
    """One parsed offsets value."""

    next_offset: int
    source_epoch: int = 0
    reset: dict[str, Any] | None = None
    incident: dict[str, Any] | None = None
    counts: BridgeCounts | None = None


def offset_value(
    next_offset: int,
    *,
    source_epoch: int = 0,
    reset: dict[str, Any] | None = None,
    incident: dict[str, Any] | None = None,
    counts: BridgeCounts | None = None,
) -> bytes:
    """The value; with epoch 0 and nothing else exactly the old ``{"next_offset": N}``."""
    value: dict[str, Any] = {"next_offset": next_offset}
    if source_epoch:
        value["source_epoch"] = source_epoch
    if reset is not None:
        value["reset"] = reset
    if incident is not None:
        value["incident"] = incident
    if counts is not None:
        value["counts"] = counts.as_dict()
    return orjson.dumps(value)


def parse_offset_value(value: bytes) -> StoredOffset:
    """A value of any version (old ones have only ``next_offset``)."""
    doc = orjson.loads(value)
    reset, incident = doc.get("reset"), doc.get("incident")
    return StoredOffset(
        next_offset=int(doc["next_offset"]),
        source_epoch=int(doc.get("source_epoch") or 0),
        reset=reset if isinstance(reset, dict) else None,
        incident=incident if isinstance(incident, dict) else None,
        counts=BridgeCounts.from_value(doc.get("counts")),
    )


def _parse_key(key: bytes | None) -> tuple[str, int] | None:
    if key is None:
        return None
    topic, sep, partition = key.decode(errors="replace").rpartition("/")
    if not sep or not partition.isdigit():
        return None
    return topic, int(partition)


def parse_offset_record(key: bytes | None, value: bytes | None) -> tuple[str, int, int | None] | None:
    """``(topic, partition, next_offset)``; ``next_offset`` None for a tombstone; None if foreign."""
    parsed = parse_offset_state(key, value)
    if parsed is None:
        return None
    topic, partition, state = parsed
    return topic, partition, state.next_offset if state is not None else None


def parse_offset_state(key: bytes | None, value: bytes | None) -> tuple[str, int, StoredOffset | None] | None:
    """``(topic, partition, StoredOffset)``; None as the state for a tombstone; None if foreign."""
    coords = _parse_key(key)
    if coords is None:
        return None
    return coords[0], coords[1], parse_offset_value(value) if value is not None else None


async def read_stored_offsets(conn: KafkaConnection, offsets_topic: str, *, timeout_s: float = 30.0) -> dict[tuple[str, int], int]:
    """Every stored position (see :func:`read_stored_states`)."""
    states = await read_stored_states(conn, offsets_topic, timeout_s=timeout_s)
    return {k: v.next_offset for k, v in states.items()}


async def read_stored_states(conn: KafkaConnection, offsets_topic: str, *, timeout_s: float = 30.0) -> dict[tuple[str, int], StoredOffset]:
    """Every stored position (with its epoch, last reset and open incident), as committed at the moment of the call.

    Reads the whole (compacted) topic with ``read_committed`` up to the high watermark taken at
    the start, not only up to the last stable offset: a value committed just before the call
    may sit behind another producer's open transaction, and must not be missed. Call it after
    ``init_transactions`` of the partition's producer, so the previous owner's transaction is
    already committed or aborted.
    """
    consumer = AIOKafkaConsumer(
        **conn.client_kwargs(),
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        await consumer.topics()  # refreshes the metadata: the topic may have been created a moment ago
        partitions = consumer.partitions_for_topic(offsets_topic) or set()
        tps = [TopicPartition(offsets_topic, p) for p in sorted(partitions)]
        if not tps:
            raise BackendUnavailableError(f"offsets topic {offsets_topic} has no partitions (yet)")
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        # ListOffsets v1 has no isolation level: this is the high watermark, not the LSO.
        targets = await consumer.end_offsets(tps)
        stored: dict[tuple[str, int], StoredOffset] = {}
        deadline = time.monotonic() + timeout_s
        pending = [tp for tp in tps if await consumer.position(tp) < targets[tp]]
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"offsets topic {offsets_topic} not read to {targets} within {timeout_s:.0f}s")
            batch = await consumer.getmany(*pending, timeout_ms=500)
            for records in batch.values():
                for record in records:
                    parsed = parse_offset_state(record.key, record.value)
                    if parsed is None:
                        continue
                    topic, partition, state = parsed
                    if state is None:
                        stored.pop((topic, partition), None)
                    else:
                        stored[(topic, partition)] = state
            pending = [tp for tp in pending if await consumer.position(tp) < targets[tp]]
        return stored
    finally:
        await asyncio.shield(consumer.stop())
