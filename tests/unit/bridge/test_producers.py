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
