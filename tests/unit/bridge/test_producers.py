"""Closing a producer whose cluster is unreachable fails its pending records without a word at
ERROR for each: the sends they belonged to were cancelled with their session (the hour soak logged
"Future exception was never retrieved" 13 times per broker outage)."""

from __future__ import annotations

import asyncio
import gc
from types import SimpleNamespace
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaConnectionError
from bridge.producers import close_producer, fail_pending


async def test_failed_pending_records_are_not_reported_as_never_retrieved() -> None:
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1")  # never started: nothing is sent
    futures = [await producer._message_accumulator.add_message(TopicPartition("t", p % 2), None, b"x", timeout=1) for p in range(5)]
    reported: list[str] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: reported.append(ctx["message"]))
    fail_pending(producer, KafkaConnectionError("closed"))
    assert all(f.done() for f in futures)
    assert isinstance(futures[0].exception(), KafkaConnectionError)  # failed, with the reason (the other 4 left unread)
    del futures, producer
    gc.collect()
    await asyncio.sleep(0)
    assert [m for m in reported if "never retrieved" in m] == []


async def test_a_sender_that_ends_after_the_close_leaves_no_unread_failure() -> None:
    """What ``close_producer`` meets after cancelling the sender (the soaks of 2026-12-07): the
    sender still waits for a request to a stopped broker when the close returns; then that
    request's retriable answer re-enqueues its batch (a new drain waiter), another batch, already
    failed and removed, ends the sender with a KeyError, and aiokafka's done callback
    (``Sender._fail_all``) sets it on every batch's waiters."""
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1")
    acc = producer._message_accumulator
    for p in range(2):
        await acc.add_message(TopicPartition("t", p), None, b"x", timeout=1)
    in_flight = [acc._batches[TopicPartition("t", p)].popleft() for p in range(2)]
    acc._pending_batches.update(in_flight)
    answered = asyncio.Event()
    held: dict[str, Any] = {"acc": acc, "in_flight": in_flight}  # cleared at the end, for the collector

    async def sender() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await answered.wait()  # the in-flight request, answered after the close returned
            a, batches = held["acc"], held["in_flight"]
            a.reenqueue(batches[0])  # a retriable answer: put back, with a new drain waiter
            a._pending_batches.discard(batches[1])
            a.reenqueue(batches[1])  # KeyError: what ends the sender

    task = asyncio.create_task(sender())
    task.add_done_callback(lambda t: None if t.cancelled() else held["acc"].fail_all(t.exception()))  # Sender._fail_all
    producer._sender = SimpleNamespace(sender_task=task)  # type: ignore[assignment]
    reported: list[str] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: reported.append(ctx["message"]))
    await close_producer(producer, 0.2)
    assert not task.done()
    answered.set()
    await asyncio.wait([task])
    assert isinstance(task.exception(), KeyError)
    held.clear()
    del in_flight, acc, producer, task
    gc.collect()
    await asyncio.sleep(0)
    assert [m for m in reported if "never retrieved" in m] == []
