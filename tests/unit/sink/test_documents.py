"""Document building: exact outputs for ids, added fields, escaping and refusals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import bson
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sink.documents import (
    STAGE_DECODE,
    STAGE_SIZE,
    STAGE_VALIDATE,
    IngestStamp,
    build_document,
    check_size,
    document_of,
    encoding_error,
    escape_fields,
    escape_key,
    key_needs_escape,
    restamp,
    unescape_fields,
    unescape_key,
)

from shared.errors import InvalidEventError
from shared.event import MAX_EVENT_DEPTH, part_of

T = "2020-06-04T10:21:27.000Z"
STAMP = IngestStamp.at(datetime(2026, 11, 27, 21, 5, 9, 123456, tzinfo=UTC))

EVENT = {
    "event_id": "5ed8cb2bc671fc36b74653ad",
    "collection": "view_product_detail",
    "source_shape": "glamira",
    "event_time": "2020-06-04T10:21:27.000Z",
    "local_time": "2020-06-04 12:21:27",
    "product_id": "110474",
    "store_id": "12",
    "option": [{"option_label": "alloy", "option_id": "332", "value_label": "yellow-375", "value_id": "3315"}],
    "source_topic": "product_views",
    "source_partition": 3,
    "source_offset": 42,
    "bridged_at": "2026-11-27T21:05:08.001Z",
}


def test_ingest_stamp_is_utc_milliseconds_hour_and_second() -> None:
    stamp = (STAMP.ingested_at, STAMP.ingest_hour, STAMP.ingest_second)
    assert stamp == ("2026-11-27T21:05:09.123Z", "2026-11-27T21", "2026-11-27T21:05:09")
    # Any time zone in, UTC out; truncated, never rounded up (999999 us stays in its second).
    cet = datetime(2026, 11, 28, 0, 30, 0, 999999, tzinfo=timezone(timedelta(hours=1)))
    assert IngestStamp.at(cet) == IngestStamp("2026-11-27T23:30:00.999Z", "2026-11-27T23", "2026-11-27T23:30:00")


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2999, 12, 31), timezones=st.just(UTC)))
def test_ingest_hour_and_second_are_prefixes_of_ingested_at(at: datetime) -> None:
    stamp = IngestStamp.at(at)
    assert stamp.ingest_second == stamp.ingested_at[:19] == f"{at:%Y-%m-%dT%H:%M:%S}"
    assert stamp.ingest_hour == stamp.ingested_at[:13]
    assert stamp.ingested_at == f"{at:%Y-%m-%dT%H:%M:%S}.{at.microsecond // 1000:03d}Z"


def test_document_has_id_first_event_fields_then_sink_fields() -> None:
    doc = build_document(dict(EVENT), STAMP)
    assert doc == {
        "_id": "5ed8cb2bc671fc36b74653ad",
        **EVENT,
        "ingested_at": "2026-11-27T21:05:09.123Z",
        "ingest_hour": "2026-11-27T21",
        "ingest_second": "2026-11-27T21:05:09",
        "event_date": "2020-06-04",
        "part": part_of("5ed8cb2bc671fc36b74653ad"),
    }
    assert next(iter(doc)) == "_id"
    assert list(doc)[-5:] == ["ingested_at", "ingest_hour", "ingest_second", "event_date", "part"]
    assert part_of("5ed8cb2bc671fc36b74653ad") == 0  # pinned: part_of must never change for stored data


def test_restamp_replaces_the_three_stamp_fields_in_place_keeping_field_order() -> None:
    docs = [build_document(dict(EVENT), STAMP), build_document({**EVENT, "event_id": "other"}, STAMP)]
    later = IngestStamp.at(datetime(2026, 11, 27, 22, 0, 0, 5000, tzinfo=UTC))
    restamp(docs, later)
    assert docs == [
        {
            "_id": "5ed8cb2bc671fc36b74653ad",
            **EVENT,
            "ingested_at": "2026-11-27T22:00:00.005Z",
            "ingest_hour": "2026-11-27T22",
            "ingest_second": "2026-11-27T22:00:00",
            "event_date": "2020-06-04",
            "part": part_of("5ed8cb2bc671fc36b74653ad"),
        },
        {
            "_id": "other",
            **EVENT,
            "event_id": "other",
            "ingested_at": "2026-11-27T22:00:00.005Z",
            "ingest_hour": "2026-11-27T22",
            "ingest_second": "2026-11-27T22:00:00",
            "event_date": "2020-06-04",
            "part": part_of("other"),
        },
    ]
    assert [list(d) for d in docs] == [["_id", *EVENT, "ingested_at", "ingest_hour", "ingest_second", "event_date", "part"]] * 2


def test_document_of_decodes_bytes_exactly_like_build_document() -> None:
    assert document_of(orjson.dumps(EVENT), STAMP, 16 << 20) == build_document(dict(EVENT), STAMP)


@pytest.mark.parametrize(
    ("event_time", "event_date"),
    [
        ("2020-06-04T23:59:59.999Z", "2020-06-04"),
        ("2020-06-04T23:30:00+00:00", "2020-06-04"),
        ("2020-06-04T23:30:00-02:00", "2020-06-05"),  # not the contract's form, but UTC is what counts
        ("2020-06-05T00:30:00.123456+02:00", "2020-06-04"),
        # any RFC 3339 / ISO-8601 spelling (issue 29)
        ("2020-06-04t23:30:00.5z", "2020-06-04"),
        ("2020-06-04 23:30:00-0200", "2020-06-05"),
        ("2020-06-04T23:59:60.123456789Z", "2020-06-04"),
        ("20200604T233000-02", "2020-06-05"),
    ],
)
def test_event_date_is_the_utc_date_of_event_time(event_time: str, event_date: str) -> None:
    assert build_document({"event_id": "e1", "event_time": event_time}, STAMP)["event_date"] == event_date


@pytest.mark.parametrize(
    ("key", "escaped"),
    [
        ("plain", "plain"),
        ("$set", "%24set"),
        ("a$b$", "a$b$"),  # only a leading $ is refused by MongoDB
        ("a.b", "a%2Eb"),
        ("..", "%2E%2E"),
        ("$.x", "%24%2Ex"),
        ("100%", "100%25"),
        ("%2E", "%252E"),  # a literal escape sequence stays distinguishable
        ("%24x", "%2524x"),
        ("nul\x00byte", "nul%00byte"),
        ("", ""),
        ("ünï.cødé", "ünï%2Ecødé"),
        ('say "hi"', "say %22hi%22"),  # FerretDB 1.24 writes field names into JSON unescaped
        ("C:\\dir", "C:%5Cdir"),  # … and stores a backslash, then fails every read of the collection
        ("tab\there\nline\x1f", "tab%09here%0Aline%1F"),
        ("%5C", "%255C"),
    ],
)
def test_escape_key_exact_and_reversible(key: str, escaped: str) -> None:
    assert escape_key(key) == escaped
    assert unescape_key(escaped) == key


def test_escape_fields_at_any_depth_and_reversible() -> None:
    event = {
        "a.b": 1,
        "$x": {"c.d": [{"$e": 2, "f": "g.h"}, [{"i.j": None}], "k.l"]},
        "m": {"n": 1},
        "50%": "$value.kept",
    }
    escaped = escape_fields(event)
    assert escaped == {
        "a%2Eb": 1,
        "%24x": {"c%2Ed": [{"%24e": 2, "f": "g.h"}, [{"i%2Ej": None}], "k.l"]},
        "m": {"n": 1},
        "50%25": "$value.kept",
    }
    assert list(escaped) == ["a%2Eb", "%24x", "m", "50%25"]  # order kept
    assert unescape_fields(escaped) == event
    assert event["a.b"] == 1 and "a%2Eb" not in event  # the input is not modified


def test_document_of_escapes_backslash_quote_and_control_characters_only_where_the_text_can_hold_them() -> None:
    raw = b'{"event_id": "e1", "event_time": "2020-06-04T10:21:27.000Z", "a\\\\b": {"q\\"": 1, "t\\tab": [{"c\\u0001": 2}]}, "v": "x\\\\y"}'
    doc = document_of(raw, STAMP, 16 * 1024 * 1024)
    assert {k: doc[k] for k in ("event_id", "event_time", "a%5Cb", "v")} == {
        "event_id": "e1",
        "event_time": "2020-06-04T10:21:27.000Z",
        "a%5Cb": {"q%22": 1, "t%09ab": [{"c%01": 2}]},
        "v": "x\\y",  # values are never changed
    }
    plain = document_of(b'{"event_id": "e1", "event_time": "2020-06-04T10:21:27.000Z", "a.b": 1}', STAMP, 16 * 1024 * 1024)
    assert plain["a%2Eb"] == 1


@given(st.text())
def test_escaping_is_reversible_and_leaves_nothing_either_store_refuses(key: str) -> None:
    escaped = escape_key(key)
    assert unescape_key(escaped) == key
    assert not escaped.startswith("$") and not set(escaped) & set('."\\') and all(ord(c) >= 0x20 for c in escaped)


def test_escape_fields_returns_the_same_object_when_nothing_to_escape() -> None:
    event = {"a": [{"b": 1}, [2, {"c": "d.e"}]], "f": {"g": "$h"}}
    assert escape_fields(event) is event


def _escape_everything(value: object) -> object:
    """The reference: rebuild every container, escaping each key that needs it."""
    if isinstance(value, dict):
        return {(escape_key(k) if key_needs_escape(k) else k): _escape_everything(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escape_everything(v) for v in value]
    return value


def _keys_in(value: object) -> int:
    if isinstance(value, dict):
        return len(value) + sum(_keys_in(v) for v in value.values())
    if isinstance(value, list):
        return sum(_keys_in(v) for v in value)
    return 0


_KEYS = st.sampled_from(["a", "b", "$x", "a.b", "", "_id", "$", "x.", 'q"', "t\tab"])
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=30,
)


@given(_JSON)
def test_escape_fields_equals_escaping_everything_and_looks_at_each_key_once(value: object) -> None:
    asked: list[str] = []

    def needs_escape(key: str) -> bool:
        asked.append(key)
        return key_needs_escape(key)

    expected = _escape_everything(value)
    escaped = escape_fields(value, needs_escape)
    assert escaped == expected
    assert (escaped is value) == (expected == value)  # copied exactly when something changed
    assert len(asked) == _keys_in(value)


def test_escape_fields_is_linear_in_depth_when_the_deepest_key_needs_escaping() -> None:
    """A copy from the first changed field on, not a second walk: nested escapes once cost 2^depth."""
    value: object = {"$deep": 1}
    for _ in range(MAX_EVENT_DEPTH - 1):
        value = {"x": [0, value, {"y": 2}]}
    asked: list[str] = []

    def needs_escape(key: str) -> bool:
        asked.append(key)
        return key_needs_escape(key)

    escaped = escape_fields(value, needs_escape)
    assert len(asked) == _keys_in(value)
    assert escaped == _escape_everything(value) and escaped != value


def test_escaped_document_is_accepted_by_bson_and_round_trips() -> None:
    event = {"event_id": "e2", "event_time": "2020-06-04T10:21:27.000Z", "utm.source": "x", "$where": {"q.r": 1}}
    doc = build_document(event, STAMP)
    assert doc == {
        "_id": "e2",
        "event_id": "e2",
        "event_time": "2020-06-04T10:21:27.000Z",
        "utm%2Esource": "x",
        "%24where": {"q%2Er": 1},
        "ingested_at": "2026-11-27T21:05:09.123Z",
        "ingest_hour": "2026-11-27T21",
        "ingest_second": "2026-11-27T21:05:09",
        "event_date": "2020-06-04",
        "part": part_of("e2"),
    }
    assert bson.decode(bson.encode(doc)) == doc
    assert encoding_error(doc, 16 << 20) is None


def _refusal(value: bytes | None) -> InvalidEventError:
    with pytest.raises(InvalidEventError) as info:
        document_of(value, STAMP, 16 << 20)
    return info.value


@pytest.mark.parametrize(
    ("value", "stage", "error_class", "reason_start"),
    [
        (b"not json", STAGE_DECODE, "JSONDecodeError", "value is not JSON"),
        (b"\xff\xfe{}", STAGE_DECODE, "JSONDecodeError", "value is not JSON"),
        (b"", STAGE_DECODE, "JSONDecodeError", "value is not JSON"),
        (None, STAGE_VALIDATE, "EmptyRecord", "record has no value"),
        (b"[1, 2]", STAGE_VALIDATE, "NotAnObject", "value is a JSON list, not an object"),
        (b'"text"', STAGE_VALIDATE, "NotAnObject", "value is a JSON str, not an object"),
        (b'{"event_time": "2020-06-04T10:21:27.000Z"}', STAGE_VALIDATE, "MissingEventId", "event_id is None"),
        (b'{"event_id": "", "event_time": "' + T.encode() + b'"}', STAGE_VALIDATE, "MissingEventId", "event_id is ''"),
        (b'{"event_id": 7, "event_time": "' + T.encode() + b'"}', STAGE_VALIDATE, "MissingEventId", "event_id is 7"),
        (
            b'{"event_id": "e", "_id": "f", "event_time": "2020-06-04T10:21:27.000Z"}',
            STAGE_VALIDATE,
            "ConflictingId",
            "event carries its own _id",
        ),
        (
            b'{"event_id": "e", "part": 3, "event_time": "2020-06-04T10:21:27.000Z"}',
            STAGE_VALIDATE,
            "ReservedField",
            "event carries sink-owned",
        ),
        (
            b'{"event_id": "e", "ingest_second": "x", "event_time": "2020-06-04T10:21:27.000Z"}',
            STAGE_VALIDATE,
            "ReservedField",
            "event carries sink-owned field(s) ['ingest_second']",
        ),
        (b'{"event_id": "e"}', STAGE_VALIDATE, "InvalidEventError", "event_time is NoneType"),
        (b'{"event_id": "e", "event_time": "yesterday"}', STAGE_VALIDATE, "InvalidEventError", "event_time 'yesterday' is not ISO-8601"),
        (
            b'{"event_id": "e", "event_time": "2020-06-04T10:21:27"}',
            STAGE_VALIDATE,
            "InvalidEventError",
            "event_time '2020-06-04T10:21:27' has",
        ),
        (b'{"event_id": "e", "event_time": "2020-13-04T10:21:27.000Z"}', STAGE_VALIDATE, "InvalidEventError", "event_time '2020-13-04T"),
    ],
)
def test_refused_records_say_stage_and_reason(value: bytes | None, stage: str, error_class: str, reason_start: str) -> None:
    err = _refusal(value)
    assert (err.stage, err.error_class) == (stage, error_class)
    assert err.reason.startswith(reason_start), err.reason


def test_own_id_equal_to_event_id_is_accepted() -> None:
    doc = build_document({"event_id": "e", "_id": "e", "event_time": "2020-06-04T10:21:27.000Z"}, STAMP)
    assert doc["_id"] == "e" and list(doc)[:2] == ["_id", "event_id"]


def test_integers_beyond_64_bits_are_refused_at_decode_not_stored_inexactly() -> None:
    # orjson would read a double (silently inexact); between 2**63 and 2**64 no BSON type fits.
    for number in (b"123456789012345678901234567890", b"18446744073709551615", b"9223372036854775808", b"-9223372036854775809"):
        value = b'{"event_id": "big", "event_time": "2020-06-04T10:21:27.000Z", "n": ' + number + b"}"
        with pytest.raises(InvalidEventError) as info:
            document_of(value, STAMP, 16 << 20)
        assert (info.value.stage, info.value.error_class) == (STAGE_DECODE, "IntegerOutOfRange")
        assert info.value.reason == f"n = {number.decode()} is outside the signed 64-bit range BSON can store"
    # The int64 bounds themselves are kept exactly.
    for number in (2**63 - 1, -(2**63)):
        value = b'{"event_id": "big", "event_time": "2020-06-04T10:21:27.000Z", "n": ' + str(number).encode() + b"}"
        assert document_of(value, STAMP, 16 << 20)["n"] == number
    # The driver still refuses what it cannot encode (other producers' documents): stage sink.encode.
    assert encoding_error({"n": 2**64 - 1}, 16 << 20) == "OverflowError: MongoDB can only handle up to 8-byte ints"


def test_nesting_deeper_than_the_contract_is_refused_at_decode() -> None:
    def nested(levels: int) -> bytes:  # the event object is level 1
        return b'{"event_id": "d", "event_time": "2020-06-04T10:21:27.000Z", "x": ' + b"[" * (levels - 1) + b"]" * (levels - 1) + b"}"

    assert document_of(nested(MAX_EVENT_DEPTH), STAMP, 16 << 20)["event_id"] == "d"
    with pytest.raises(InvalidEventError) as info:
        document_of(nested(MAX_EVENT_DEPTH + 1), STAMP, 16 << 20)
    assert (info.value.stage, info.value.error_class) == (STAGE_DECODE, "TooDeep")


@pytest.mark.parametrize(
    ("value", "error_class", "reason_start"),
    [
        (
            b'{"event_id": "s", "event_time": "2020-06-04T10:21:27.000Z", "x": "a\\ud800b"}',
            "LoneSurrogate",
            "a string holds a lone UTF-16 surrogate",
        ),
        (
            b'{"event_id": "s", "event_time": "2020-06-04T10:21:27.000Z", "x": "\\udfff"}',
            "LoneSurrogate",
            "a string holds a lone UTF-16 surrogate",
        ),
        (b'{"event_id": "n", "event_time": "2020-06-04T10:21:27.000Z", "x": NaN}', "NonFiniteNumber", "a number is NaN or infinite"),
        (b'{"event_id": "n", "event_time": "2020-06-04T10:21:27.000Z", "x": -Infinity}', "NonFiniteNumber", "a number is NaN or infinite"),
        (b'{"event_id": "n", "event_time": "2020-06-04T10:21:27.000Z", "x": 1e400}', "NonFiniteNumber", "a number is NaN or infinite"),
    ],
)
def test_what_the_standard_library_would_read_but_no_store_can_keep_is_refused_with_a_reason(
    value: bytes, error_class: str, reason_start: str
) -> None:
    with pytest.raises(InvalidEventError) as info:
        document_of(value, STAMP, 16 << 20)
    assert (info.value.stage, info.value.error_class) == (STAGE_DECODE, error_class)
    assert info.value.reason.startswith(reason_start), info.value.reason


def test_a_surrogate_pair_is_one_character_and_kept() -> None:
    value = b'{"event_id": "p", "event_time": "2020-06-04T10:21:27.000Z", "x": "\\ud83d\\ude00"}'
    assert document_of(value, STAMP, 16 << 20)["x"] == "\U0001f600"


def test_size_limit_is_exact_on_bson_size() -> None:
    event = {"event_id": "big", "event_time": "2020-06-04T10:21:27.000Z", "blob": "x" * 20_000}
    doc = build_document(event, STAMP)
    size = len(bson.encode(doc))
    check_size(doc, 20_100, size)  # exactly at the limit: accepted
    with pytest.raises(InvalidEventError) as info:
        check_size(doc, 20_100, size - 1)
    assert (info.value.stage, info.value.error_class) == (STAGE_SIZE, "DocumentTooLarge")
    assert info.value.reason == f"BSON document is {size} bytes, more than the limit of {size - 1}"
    # Through document_of with a configured limit.
    with pytest.raises(InvalidEventError) as info:
        document_of(orjson.dumps(event), STAMP, 10_000)
    assert info.value.stage == STAGE_SIZE


def test_small_values_skip_the_exact_size_check() -> None:
    # Far below limit / 8: no BSON encoding needed, even if the doc would not be encodable.
    check_size({"n": 1 << 70}, 100, 16 << 20)


def test_build_batch_isolates_any_exception_of_one_record(monkeypatch: pytest.MonkeyPatch) -> None:
    import sink.batch
    from aiokafka.structs import ConsumerRecord
    from sink.batch import build_batch

    real = sink.batch.document_of

    def flaky(value: bytes | None, stamp: IngestStamp, limit: int) -> dict:
        if value == b"boom":
            raise KeyError("unexpected")
        return real(value, stamp, limit)

    monkeypatch.setattr(sink.batch, "document_of", flaky)
    good = b'{"event_id": "g", "event_time": "2020-06-04T10:21:27.000Z"}'
    values = [good, b"boom", b"not json", b'{"event_id": "h", "event_time": "2020-06-04T10:21:27.000Z"}']
    records = [ConsumerRecord("t", 0, i, 0, 0, b"k", v, None, 1, len(v), []) for i, v in enumerate(values)]
    batch = build_batch(records, STAMP, 16 << 20, epoch=0)
    assert [d["_id"] for d in batch.docs] == ["g", "h"]
    with pytest.raises(orjson.JSONDecodeError) as not_json:  # orjson's own wording, which changes between releases
        orjson.loads(b"not json")
    assert [(d.record.offset, d.stage, d.error_class, d.message) for d in batch.dead_letters] == [
        (1, "sink.build", "KeyError", "'unexpected'"),
        (2, STAGE_DECODE, "JSONDecodeError", f"value is not JSON: {not_json.value}"),
    ]
    assert batch.records == 4 and batch.offsets == {sink.batch.TopicPartition("t", 0): 4}
