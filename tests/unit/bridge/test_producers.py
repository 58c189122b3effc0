"""Closing a producer whose cluster is unreachable fails its pending records without a word at
ERROR for each: the sends they belonged to were cancelled with their session (the hour soak logged
"Future exception was never retrieved" 13 times per broker outage)."""

from __future__ import annotations

import asyncio
import gc

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaConnectionError
from bridge.producers import fail_pending


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


async def test_batches_the_cancelled_sender_put_back_and_failed_again_are_not_reported() -> None:
    """What ``close_producer`` meets after cancelling the sender: a batch whose request was
    answered with a retriable error is put back (``reenqueue``: a new drain waiter), and another
    batch, already removed, ends the sender with a KeyError that aiokafka sets on every batch's
    waiters (``Sender._fail_all``). ``fail_pending`` after the sender ended reads them all."""
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1")
    acc = producer._message_accumulator
    for p in range(2):
        await acc.add_message(TopicPartition("t", p), None, b"x", timeout=1)
    in_flight = [acc._batches[TopicPartition("t", p)].popleft() for p in range(2)]
    acc._pending_batches.update(in_flight)
    reported: list[str] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: reported.append(ctx["message"]))
    fail_pending(producer, KafkaConnectionError("closed"))  # before the sender is cancelled
    acc.reenqueue(in_flight[0])  # a retriable answer: put back, with a new drain waiter
    acc._pending_batches.discard(in_flight[1])
    try:
        acc.reenqueue(in_flight[1])
    except KeyError as exc:  # what ends the sender
        acc.fail_all(exc)  # what Sender._fail_all does with it
    fail_pending(producer, KafkaConnectionError("closed"))  # after the sender ended
    del in_flight, acc, producer
    gc.collect()
    await asyncio.sleep(0)
    assert [m for m in reported if "never retrieved" in m] == []
