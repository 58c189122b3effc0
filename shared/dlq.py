"""The dead-letter convention shared by every hop.

A dead-lettered record keeps its original key and value bytes; its headers say where it came
from and why it failed. Header values are UTF-8 bytes.
"""

from __future__ import annotations

from collections.abc import Sequence

HEADER_SOURCE_TOPIC = "dlq.source.topic"
HEADER_SOURCE_PARTITION = "dlq.source.partition"
HEADER_SOURCE_OFFSET = "dlq.source.offset"
HEADER_STAGE = "dlq.stage"  # which hop and step refused it, e.g. "bridge.validate", "sink.write"
HEADER_ERROR_CLASS = "dlq.error.class"
HEADER_ERROR_MESSAGE = "dlq.error.message"
MAX_MESSAGE_CHARS = 1000


def dead_letter_headers(
    *,
    source_topic: str,
    source_partition: int,
    source_offset: int,
    stage: str,
    error_class: str,
    error_message: str,
    original_headers: Sequence[tuple[str, bytes]] = (),
) -> list[tuple[str, bytes]]:
    """Headers for a dead-lettered record: the original ones first, then ours."""
    ours = [
        (HEADER_SOURCE_TOPIC, source_topic),
        (HEADER_SOURCE_PARTITION, str(source_partition)),
        (HEADER_SOURCE_OFFSET, str(source_offset)),
        (HEADER_STAGE, stage),
        (HEADER_ERROR_CLASS, error_class),
        (HEADER_ERROR_MESSAGE, error_message[:MAX_MESSAGE_CHARS]),
    ]
    return [*original_headers, *((k, v.encode()) for k, v in ours)]


def read_dead_letter_headers(headers: Sequence[tuple[str, bytes]]) -> dict[str, str]:
    """The ``dlq.*`` headers of a record as a dict (last one wins)."""
    return {k: v.decode(errors="replace") for k, v in headers if k.startswith("dlq.")}
