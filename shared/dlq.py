"""The dead-letter convention shared by every hop: every dead letter is built here.

A dead-lettered record keeps its original key, value and headers; ``dlq.*`` headers say where it
came from and why it failed. Header values are UTF-8 bytes. :func:`dead_letter_record` builds the
whole record (key, value, headers) for the bridge and the sink alike, cut so that it always fits
in one request of the producer (``max_request_bytes``): a dead letter is never a poison pill.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

if TYPE_CHECKING:
    from aiokafka.structs import ConsumerRecord

HEADER_SOURCE_TOPIC = "dlq.source.topic"
HEADER_SOURCE_PARTITION = "dlq.source.partition"
HEADER_SOURCE_OFFSET = "dlq.source.offset"
HEADER_STAGE = "dlq.stage"  # which hop and step refused it, e.g. "bridge.validate", "sink.write"
HEADER_ERROR_CLASS = "dlq.error.class"
HEADER_ERROR_MESSAGE = "dlq.error.message"
HEADER_ERROR_CODE = "dlq.error.code"  # sink.write dead letters: the store's error code (e.g. 1 for FerretDB's InternalError)
# Only when the dead letter would not fit in one request: the value's head is kept and its
# original length given; original headers that leave no room are dropped (their count), and so is
# a key that alone is too large (its length).
HEADER_VALUE_TRUNCATED_FROM = "dlq.value.truncated_from_bytes"
HEADER_HEADERS_DROPPED = "dlq.headers.dropped"
HEADER_KEY_DROPPED = "dlq.key.dropped_bytes"
# Replays (``./pipeline dlq replay``, shared.dlqtool): a replayed record carries how many replays
# it went through and which letter it came from; a hop that refuses it again keeps both among the
# original headers of its new dead letter, so the count travels and a loop is stopped.
HEADER_REPLAY_COUNT = "dlq.replay.count"
HEADER_REPLAY_OF = "dlq.replay.of"  # the letter replayed, "topic/partition/offset" of the dead-letter topic
# The source partition's reset epoch (bridge letters; see shared.event.event_id_from_coordinates);
# absent means 0.
HEADER_SOURCE_EPOCH = "dlq.source.epoch"
MAX_MESSAGE_CHARS = 1000

# The local brokers take up to 2 MiB per record batch (message.max.bytes); a request stays below.
DEFAULT_MAX_REQUEST_BYTES = 2_000_000
# Part of a request kept free for the dead letter's key, the ``dlq.*`` headers and the record
# batch's overhead: a dead letter's value gets the rest (the bridge keeps the same room free
# beside an event's key and value).
HEADROOM_BYTES = 65_536


class DeadLetterRecord(NamedTuple):
    """What to produce to the dead-letter topic."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def header_text(text: str) -> str:
    """``text`` as it can go into a UTF-8 header: a lone surrogate (which no UTF-8 encoder takes)
    becomes its ``\\udXXX`` escape; the common case costs one ``isascii``."""
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def dead_letter_record(
    key: bytes | None,
    value: bytes | None,
    original_headers: Sequence[tuple[str, bytes]],
    *,
    source_topic: str,
    source_partition: int,
    source_offset: int,
    stage: str,
    error_class: str,
    error_message: str,
    error_code: int | str | None = None,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    source_epoch: int | None = None,
) -> DeadLetterRecord:
    """The dead letter of a refused record: its original bytes and headers, then the ``dlq.*``
    headers, then the cut headers when something had to be cut.

    The headroom (``HEADROOM_BYTES``) holds our headers, the batch overhead and up to half of it of
    original key and headers; larger ones take their room from the value."""
    limit = max_request_bytes - HEADROOM_BYTES
    cuts: list[tuple[str, str]] = []
    headers = list(original_headers)
    key_size = len(key) if key is not None else 0
    headers_size = sum(len(k.encode()) + len(v or b"") for k, v in headers)
    budget = limit - max(0, key_size + headers_size - HEADROOM_BYTES // 2)
    if budget < 0 and headers:
        cuts.append((HEADER_HEADERS_DROPPED, str(len(headers))))
        headers = []
        budget = limit - max(0, key_size - HEADROOM_BYTES // 2)
    if budget < 0 and key is not None:
        cuts.append((HEADER_KEY_DROPPED, str(key_size)))
        key = None
        budget = limit
    if value is not None and len(value) > budget:
        cuts.append((HEADER_VALUE_TRUNCATED_FROM, str(len(value))))
        value = value[:budget]
    ours = [
        (HEADER_SOURCE_TOPIC, source_topic),
        (HEADER_SOURCE_PARTITION, str(source_partition)),
        (HEADER_SOURCE_OFFSET, str(source_offset)),
        (HEADER_STAGE, stage),
        (HEADER_ERROR_CLASS, error_class),
        (HEADER_ERROR_MESSAGE, header_text(error_message[:MAX_MESSAGE_CHARS])),
    ]
    if error_code is not None:
        ours.append((HEADER_ERROR_CODE, str(error_code)))
    if source_epoch is not None:  # the bridge's reset epoch: an id-less record's event_id depends on it
        ours.append((HEADER_SOURCE_EPOCH, str(source_epoch)))
    ours += cuts
    return DeadLetterRecord(key, value, [*headers, *((k, header_text(v).encode()) for k, v in ours)])


class Reason(Protocol):
    """Why a record is dead-lettered (the bridge's ``Refusal``, the sink's ``DeadLetter``)."""

    @property
    def stage(self) -> str: ...
    @property
    def error_class(self) -> str: ...
    @property
    def message(self) -> str: ...


def dead_letter_of(
    record: ConsumerRecord[Any, Any],
    reason: Reason,
    *,
    error_code: int | str | None = None,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    source_epoch: int | None = None,
) -> DeadLetterRecord:
    """:func:`dead_letter_record` of a consumed record (its key, value, headers and coordinates)."""
    return dead_letter_record(
        record.key,
        record.value,
        list(record.headers or ()),  # a value may be None (a null header): kept as it is
        source_topic=record.topic,
        source_partition=record.partition,
        source_offset=record.offset,
        stage=reason.stage,
        error_class=reason.error_class,
        error_message=reason.message,
        error_code=error_code,
        max_request_bytes=max_request_bytes,
        source_epoch=source_epoch,
    )


def read_dead_letter_headers(headers: Sequence[tuple[str, bytes]]) -> dict[str, str]:
    """The ``dlq.*`` headers of a record as a dict (last one wins)."""
    return {k: v.decode(errors="replace") for k, v in headers if k.startswith("dlq.")}
