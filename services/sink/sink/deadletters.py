"""Dead-letter production: a refused record to the dead-letter topic, with the reason.

Contract of :func:`send_dead_letters`: returns only once the brokers acknowledged (the producer
is ``acks=all``) every dead letter given; a round in which any failed resends the failed ones
after ``on_failed`` (which waits, and may raise to give up: the batch is then not committed). A
dead letter is the original key, value and headers plus the ``shared.dlq`` headers; a
``sink.write`` one also carries the store's error code (``dlq.error.code``). A value the brokers
refuse as too large is resent truncated to ``DLQ_MAX_VALUE_BYTES`` with a header naming its
original size.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from shared.dlq import dead_letter_headers
from sink.batch import DeadLetter
from sink.documents import STAGE_WRITE
from sink.mongo import STORE_CODE_RE

HEADER_STORE_CODE = "dlq.error.code"  # sink.write dead letters: the store's error code (e.g. 1 for FerretDB's InternalError)
DLQ_MAX_VALUE_BYTES = 1_000_000  # a dead letter the brokers refuse as too large is resent truncated to this


async def send_dead_letters(
    producer: AIOKafkaProducer,
    topic: str,
    dead: list[DeadLetter],
    *,
    on_sent: Callable[[DeadLetter], None],
    on_failed: Callable[[Any], Awaitable[None]],
) -> None:
    """Produces each dead letter (``acks=all``) and waits for every acknowledgement.

    ``on_sent`` is called once per acknowledged dead letter; ``on_failed`` with the first answer of
    a round in which any failed, before the failed ones are resent."""
    todo = dead
    while todo:
        futures = []
        for d in todo:
            futures.append(await producer.send(topic, **dead_letter_record(d)))
        results = await asyncio.gather(*futures, return_exceptions=True)
        failed = []
        for d, sent in zip(todo, results, strict=True):
            res = sent
            if isinstance(res, MessageSizeTooLargeError) and d.record.value and len(d.record.value) > DLQ_MAX_VALUE_BYTES:
                res = await send_truncated(producer, topic, d)
            if isinstance(res, BaseException):
                failed.append(d)
            else:
                on_sent(d)
        if failed:
            await on_failed(results[0])
        todo = failed


def dead_letter_record(d: DeadLetter, value: bytes | None = None, extra: tuple[tuple[str, bytes], ...] = ()) -> dict[str, Any]:
    """``key``, ``value`` and ``headers`` of the dead letter of ``d`` (``value`` replaces the record's)."""
    r = d.record
    code = STORE_CODE_RE.match(d.message) if d.stage == STAGE_WRITE else None
    if code is not None:  # the store's own error code, machine-readable beside the message
        extra = (*extra, (HEADER_STORE_CODE, code.group(1).encode()))
    headers = dead_letter_headers(
        source_topic=r.topic,
        source_partition=r.partition,
        source_offset=r.offset,
        stage=d.stage,
        error_class=d.error_class,
        error_message=d.message,
        original_headers=[(k, bytes(v)) for k, v in r.headers],
    )
    return {"key": r.key, "value": r.value if value is None else value, "headers": [*headers, *extra]}


async def send_truncated(producer: AIOKafkaProducer, topic: str, d: DeadLetter) -> Any:
    """The brokers refused the original bytes as too large: keep the head, say so in a header."""
    assert d.record.value is not None
    extra = (("dlq.value.truncated.from", str(len(d.record.value)).encode()),)
    try:
        return await producer.send_and_wait(topic, **dead_letter_record(d, d.record.value[:DLQ_MAX_VALUE_BYTES], extra))
    except KafkaError as exc:
        return exc
