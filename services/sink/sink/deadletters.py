"""Dead-letter production: a refused record to the dead-letter topic, with the reason.

Contract of :func:`send_dead_letters`: returns only once the brokers acknowledged (the producer
is ``acks=all``) every dead letter given; a round in which any failed resends the failed ones
after ``on_failed`` (which waits, and may raise to give up: the batch is then not committed). A
dead letter is built by :func:`shared.dlq.dead_letter_record`: the original key, value and
headers plus the ``dlq.*`` headers; a ``sink.write`` one also carries the store's error code
(``dlq.error.code``); one that would not fit in a request of ``DLQ_MAX_REQUEST_BYTES`` is cut
the same way as the bridge's (``dlq.value.truncated_from_bytes`` …).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaProducer

from shared import dlq as shared_dlq
from shared.dlq import DEFAULT_MAX_REQUEST_BYTES, DeadLetterRecord
from sink.batch import DeadLetter
from sink.documents import STAGE_WRITE
from sink.verdicts import STORE_CODE_RE

# The dead-letter producer's max_request_size: every dead letter is cut to fit in it, and so in
# what the local brokers take (message.max.bytes, 2 MiB).
DLQ_MAX_REQUEST_BYTES = DEFAULT_MAX_REQUEST_BYTES


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
            futures.append(await producer.send(topic, **dead_letter_of(d)._asdict()))
        results = await asyncio.gather(*futures, return_exceptions=True)
        failed = []
        for d, res in zip(todo, results, strict=True):
            if isinstance(res, BaseException):
                failed.append(d)
            else:
                on_sent(d)
        if failed:
            await on_failed(results[0])
        todo = failed


def dead_letter_of(d: DeadLetter) -> DeadLetterRecord:
    """The dead letter (``key``, ``value``, ``headers``) of ``d``; a ``sink.write`` one carries
    the store's own error code, machine-readable beside the message."""
    code = STORE_CODE_RE.match(d.message) if d.stage == STAGE_WRITE else None
    error_code = code.group(1) if code is not None else None
    return shared_dlq.dead_letter_of(d.record, d, error_code=error_code, max_request_bytes=DLQ_MAX_REQUEST_BYTES)
