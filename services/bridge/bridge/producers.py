"""The local cluster's clients of the bridge: the per-partition transactional producers.

Zombie fencing without KIP-447 (``send_offsets_to_transaction`` cannot fence across clusters):
each remote partition has its own ``BRIDGE_TRANSACTIONAL_SLOTS`` transactional producers, with
``transactional.id`` derived from the partition and the slot (``"{prefix}.{remote topic}.{partition}"``,
``"….{partition}.1"``, ``"….{partition}.2"``). Starting one (:func:`start_producer`) runs ``init_transactions``,
which bumps the id's epoch: the previous owner (dead, or a zombie that has not noticed the
rebalance) can no longer commit, and its open transactions are aborted. The stored offset must
be read only after every producer of the partition has started.

Closing (:func:`close_producer`) is bounded even with the brokers down; nothing is lost by it.

This is the one module of the bridge that reaches into aiokafka's private state
(``_txn_manager``, ``_message_accumulator``, ``_sender``), as of the pinned **aiokafka 0.12.0**
(``requirements/lock.txt``): check :func:`open_transaction`, :func:`fail_pending` and :func:`close_producer` when the
pin moves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError

from bridge.settings import BridgeSettings

# The worker's one logger, as before the split (its name is in every log line).
log = logging.getLogger("bridge.app")


async def start_producer(settings: BridgeSettings, tp: TopicPartition, slot: int) -> AIOKafkaProducer:
    """Remote partition ``tp``'s transactional producer ``slot``, started: its previous owner is fenced."""
    s = settings
    producer = AIOKafkaProducer(
        **s.local_kafka.client_kwargs(),
        client_id=f"bridge-{s.group_id}-{tp.partition}-{slot}",
        transactional_id=s.transactional_id(tp.partition, slot),
        transaction_timeout_ms=s.transaction_timeout_ms,
        enable_idempotence=True,
        acks="all",
        linger_ms=s.linger_ms,
        max_batch_size=s.max_batch_bytes,
        max_request_size=s.max_request_bytes,
    )
    try:
        # start() runs init_transactions: this is the fencing of the previous owner.
        await asyncio.wait_for(producer.start(), s.init_timeout_s)
    except BaseException:
        await close_producer(producer, s.close_timeout_s)
        raise
    return producer


@contextlib.asynccontextmanager
async def open_transaction(producer: AIOKafkaProducer) -> AsyncIterator[None]:
    """Begins a transaction on ``producer`` for the body's sends; a Kafka error in the body
    aborts it (unless the producer's state is fatal, where an abort would raise again) and is
    re-raised. The commit is the caller's, after the body.

    Not ``producer.transaction()``: under a deadline's cancellation its exit awaits an abort that
    waits for the same unreachable brokers, and nothing cancels it again. The caller bounds the
    whole (``asyncio.timeout``); a transaction left open is settled by the next owner's fencing.
    """
    await producer.begin_transaction()
    try:
        yield
    except KafkaError:
        # aiokafka 0.12.0: no public way to ask whether the transaction can still be aborted.
        if not producer._txn_manager.is_fatal_error():
            await producer.abort_transaction()
        raise


def fail_pending(producer: AIOKafkaProducer, exc: Exception) -> None:
    """Fails every batch still in ``producer``'s accumulator with ``exc`` and marks each record's
    future as seen: the sends they belonged to were cancelled with their session, and a failed
    future nobody awaits is logged at ERROR ("Future exception was never retrieved", one per
    record) when it is collected, 13 of them per broker outage in the hour soak."""
    acc = producer._message_accumulator
    batches = _batches_of(producer)
    acc.fail_all(exc)
    _read(batches)


def _batches_of(producer: AIOKafkaProducer) -> list[Any]:
    acc = producer._message_accumulator
    return [b for queued in acc._batches.values() for b in queued] + list(acc._pending_batches)


def _read(batches: list[Any]) -> None:
    for batch in batches:
        for future in [batch.future, batch._drain_waiter, *(f for f, _ in batch._msg_futures)]:
            if future.done() and not future.cancelled():
                future.exception()


async def close_producers(producers: Sequence[AIOKafkaProducer], timeout_s: float) -> None:
    """:func:`close_producer` for each, concurrently; their errors are ignored (closed anyway)."""
    await asyncio.gather(*(close_producer(p, timeout_s) for p in producers), return_exceptions=True)


async def close_producer(producer: AIOKafkaProducer, timeout_s: float) -> None:
    """Closes ``producer`` within about ``timeout_s`` seconds.

    ``AIOKafkaProducer.stop`` first waits until every pending batch is delivered, which never
    happens while the brokers are down. Past the timeout the pending batches are failed, the
    sender task cancelled and the connections closed. Nothing is lost: an unfinished transaction
    is aborted by the broker (or by the next ``init_transactions`` of the same id) and its
    records are copied again from the stored offset.
    """
    try:
        await asyncio.wait_for(producer.stop(), timeout_s)
        return
    except TimeoutError:
        log.warning("producer %s did not flush within %.0fs; closing it anyway", producer.client._client_id, timeout_s)
    closed = KafkaConnectionError("producer closed while its cluster was unreachable")
    fail_pending(producer, closed)
    sender_task = producer._sender.sender_task if producer._sender is not None else None
    if sender_task is not None and not sender_task.done():
        # The cancelled sender finishes its in-flight requests, which can outlast the wait below
        # (a request to a stopped broker waits for its own timeout): one answered with a
        # retriable error re-enqueues its batch (a new drain waiter) and one already failed
        # above ends the sender with a KeyError that aiokafka 0.12.0 sets on every batch's
        # waiters (the soaks of 2026-12-07: "Future exception was never retrieved",
        # KeyError(MessageBatch)). Whenever the sender ends, after aiokafka's own callback has
        # failed them, its batches are read.
        sender_task.add_done_callback(lambda _task: _read(_batches_of(producer)))
        sender_task.cancel()
        await asyncio.wait([sender_task], timeout=timeout_s)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(producer.client.close(), timeout_s)
