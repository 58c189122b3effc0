"""sink.deadletters.dead_letter_of: the sink's dead letters are shared.dlq's, with the store's code."""

from __future__ import annotations

from aiokafka.structs import ConsumerRecord
from sink.batch import DeadLetter
from sink.deadletters import DLQ_MAX_REQUEST_BYTES, dead_letter_of

from shared.dlq import HEADER_ERROR_CODE, HEADER_VALUE_TRUNCATED_FROM, HEADROOM_BYTES, read_dead_letter_headers


def record(value: bytes, headers: list[tuple[str, bytes]] | None = None) -> ConsumerRecord[bytes | None, bytes | None]:
    return ConsumerRecord("t", 1, 7, 0, 0, b"k", value, None, 1, len(value), headers or [])


def test_a_write_refusal_carries_the_store_code() -> None:
    d = DeadLetter(record(b"{}", [("trace", b"x")]), "sink.write", "InternalError", "code 1 (InternalError): NUL (SQLSTATE 22P05)")
    key, value, headers = dead_letter_of(d)
    assert (key, value, headers[0]) == (b"k", b"{}", ("trace", b"x"))
    got = read_dead_letter_headers(headers)
    assert got == {
        "dlq.source.topic": "t",
        "dlq.source.partition": "1",
        "dlq.source.offset": "7",
        "dlq.stage": "sink.write",
        "dlq.error.class": "InternalError",
        "dlq.error.message": "code 1 (InternalError): NUL (SQLSTATE 22P05)",
        HEADER_ERROR_CODE: "1",
    }


def test_other_stages_have_no_code() -> None:
    d = DeadLetter(record(b"{}"), "sink.build", "NotJSON", "code 1 (looks like one, is not)")
    assert HEADER_ERROR_CODE not in read_dead_letter_headers(dead_letter_of(d).headers)


def test_a_dead_letter_always_fits_the_producers_request() -> None:
    huge = b"x" * 3_000_000
    _, value, headers = dead_letter_of(DeadLetter(record(huge), "sink.build", "Oversized", "too large"))
    assert value == huge[: DLQ_MAX_REQUEST_BYTES - HEADROOM_BYTES]
    assert dict(headers)[HEADER_VALUE_TRUNCATED_FROM] == b"3000000"
