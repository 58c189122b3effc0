"""``shared.dlq.dead_letter_record``: every hop's dead letter, and it always fits in one request."""

from __future__ import annotations

from typing import Any

from shared.dlq import (
    HEADER_ERROR_CODE,
    HEADER_HEADERS_DROPPED,
    HEADER_KEY_DROPPED,
    HEADER_VALUE_TRUNCATED_FROM,
    MAX_MESSAGE_CHARS,
    DeadLetterRecord,
    dead_letter_of,
    dead_letter_record,
    read_dead_letter_headers,
)

DLQ_OURS = [
    ("dlq.source.topic", b"product_views"),
    ("dlq.source.partition", b"2"),
    ("dlq.source.offset", b"99"),
    ("dlq.stage", b"bridge.validate"),
    ("dlq.error.class", b"TooDeep"),
    ("dlq.error.message", b"too deep"),
]
LIMIT = 2_000_000 - 65_536  # what a dead letter's key, value and original headers may take together (about)


def dead(value: bytes | None, key: bytes | None, headers: list[tuple[str, bytes]], **kw: Any) -> DeadLetterRecord:
    fields: dict[str, Any] = {"source_topic": "product_views", "source_partition": 2, "source_offset": 99}
    fields.update(stage="bridge.validate", error_class="TooDeep", error_message="too deep")
    return dead_letter_record(key, value, headers, **{**fields, **kw})


def size(record: tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]) -> int:
    key, value, headers = record
    return len(key or b"") + len(value or b"") + sum(len(k) + len(v) for k, v in headers)


def test_a_dead_letter_keeps_the_original_bytes_and_headers() -> None:
    assert dead(b"{bad", b"k", [("trace", b"t-1")]) == (b"k", b"{bad", [("trace", b"t-1"), *DLQ_OURS])
    assert dead(None, None, []) == (None, None, DLQ_OURS)


def test_the_header_names_are_the_constants() -> None:
    assert HEADER_VALUE_TRUNCATED_FROM == "dlq.value.truncated_from_bytes"
    assert HEADER_HEADERS_DROPPED == "dlq.headers.dropped" and HEADER_KEY_DROPPED == "dlq.key.dropped_bytes"
    assert HEADER_ERROR_CODE == "dlq.error.code"


def test_a_value_too_large_for_a_local_record_keeps_its_head() -> None:
    value = bytes(range(256)) * 8000  # 2 048 000 bytes
    assert dead(value, b"k", []) == (b"k", value[:LIMIT], [*DLQ_OURS, (HEADER_VALUE_TRUNCATED_FROM, b"2048000")])


def test_large_original_headers_take_their_room_from_the_value() -> None:
    headers = [("h1", b"a" * 250_000), ("h2", b"b" * 250_000)]
    value = b"v" * 1_500_000
    key, got_value, got_headers = record = dead(value, b"0123456789", headers)
    taken = 10 + 2 + 250_000 + 2 + 250_000 - 32_768  # key and headers beyond half the headroom
    assert key == b"0123456789" and got_value == value[: LIMIT - taken]
    assert got_headers == [*headers, *DLQ_OURS, (HEADER_VALUE_TRUNCATED_FROM, b"1500000")]
    assert size(record) <= LIMIT + 32_768 + 200  # + our headers: ~32 KB left for the batch overhead


def test_headers_or_a_key_that_leave_no_room_are_dropped_and_counted() -> None:
    headers = [("h", b"x" * 1_000_000)] * 2
    assert dead(b"value", b"k", headers) == (b"k", b"value", [*DLQ_OURS, (HEADER_HEADERS_DROPPED, b"2")])
    key, value, got = record = dead(b"v" * 100, b"k" * 2_100_000, headers)
    assert (key, value) == (None, b"v" * 100)
    assert got == [*DLQ_OURS, (HEADER_HEADERS_DROPPED, b"2"), (HEADER_KEY_DROPPED, b"2100000")]
    assert size(record) < 2_000_000


def test_the_cut_follows_the_given_request_size() -> None:
    value = b"v" * 900_000
    assert dead(value, None, [], max_request_bytes=4 << 20).value == value
    _, got, headers = dead(value, None, [], max_request_bytes=500_000)
    assert got == value[: 500_000 - 65_536] and headers[-1] == (HEADER_VALUE_TRUNCATED_FROM, b"900000")


def test_the_error_code_comes_after_the_reason_and_before_the_cuts() -> None:
    value = b"v" * 2_100_000
    _, _, headers = dead(value, None, [], error_code=1)
    assert headers == [*DLQ_OURS, (HEADER_ERROR_CODE, b"1"), (HEADER_VALUE_TRUNCATED_FROM, b"2100000")]


def test_the_message_is_cut_and_any_text_encodes() -> None:
    _, _, headers = dead(b"x", None, [], error_message="é\ud800" + "m" * 5000, error_class="Bad\udc00")
    got = read_dead_letter_headers(headers)
    assert got["dlq.error.message"] == "é\\ud800" + "m" * (MAX_MESSAGE_CHARS - 2)
    assert got["dlq.error.class"] == "Bad\\udc00"


def test_a_consumed_record_gives_its_bytes_and_coordinates() -> None:
    from aiokafka.structs import ConsumerRecord
    from bridge.records import Refusal

    record = ConsumerRecord("product_views", 2, 99, 0, 0, b"k", b"{bad", None, 1, 4, [("trace", b"t-1"), ("null", None)])
    got = dead_letter_of(record, Refusal("bridge.validate", "TooDeep", "too deep"))  # type: ignore[arg-type]
    assert got == (b"k", b"{bad", [("trace", b"t-1"), ("null", None), *DLQ_OURS])
    # the bridge adds its reset epoch (a replay gives an id-less record that epoch's event_id)
    with_epoch = dead_letter_of(record, Refusal("bridge.validate", "TooDeep", "too deep"), source_epoch=3)  # type: ignore[arg-type]
    assert with_epoch.headers == [("trace", b"t-1"), ("null", None), *DLQ_OURS, ("dlq.source.epoch", b"3")]
