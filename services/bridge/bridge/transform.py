"""The pure core of the bridge: one remote record in, one normalized event (or a reason) out.

No clients, no environment, no clock: the caller passes the record's coordinates, the
``bridged_at`` time and the :class:`EventRules`, so the same input always gives the same output
(the rules are in :mod:`shared.event`). Bad input raises :class:`InvalidEventError` whose
``stage`` is ``"decode"`` (bytes that are not one JSON document) or ``"validate"`` (JSON that is
not a valid event) and whose ``error_class`` names the rule that failed; both go into the DLQ
headers. :func:`bridge.records.copy_record` wraps all of it into one step that never raises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import orjson

from shared.errors import InvalidEventError
from shared.event import (
    EVENT_TIME_FLOOR,
    EVENT_TIME_MAX_AHEAD_S,
    MAX_EVENT_BYTES,
    MAX_EVENT_DEPTH,
    PRODUCT_EVENT_TYPES,
    RESERVED_FIELDS,
    SEED_COLLECTION,
    SOURCE_FIELD_PREFIX,
    STRING_ID_FIELDS,
    event_id_from_coordinates,
    kept_field_name,
)
from shared.jsonvalues import JsonValueError, loads_checked

STAGE_DECODE = "decode"
STAGE_VALIDATE = "validate"

SHAPE_GLAMIRA = "glamira"
SHAPE_SEED = "seed"

_LOCAL_TIME = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})[ T](\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.(\d{1,6}))?")
_PADDED_LOCAL_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d{6})?")
_NUMERIC = re.compile(r"[+-]?\d+(?:\.\d*)?")
# "Does a key start with the prefix?" as one substring search over the NUL-joined keys (a quarter
# of the cost of a startswith per key); a key holding NUL + prefix only makes it say yes needlessly.
_PREFIX_AFTER_NUL = "\x00" + SOURCE_FIELD_PREFIX
DEFAULT_EVENT_TIME_FLOOR = datetime.fromisoformat(EVENT_TIME_FLOOR)


@dataclass(frozen=True)
class EventRules:
    """Which event times are plausible: none before ``event_time_floor`` (an aware datetime), none
    later than ``event_time_max_ahead_s`` seconds after the record's ``bridged_at``."""

    event_time_floor: datetime = DEFAULT_EVENT_TIME_FLOOR
    event_time_max_ahead_s: float = EVENT_TIME_MAX_AHEAD_S

    def __post_init__(self) -> None:
        if self.event_time_floor.tzinfo is None:
            raise ValueError("event_time_floor must be timezone-aware")
        if not self.event_time_max_ahead_s >= 0:
            raise ValueError("event_time_max_ahead_s must be >= 0")


def _invalid(reason: str, error_class: str, stage: str = STAGE_VALIDATE) -> InvalidEventError:
    return InvalidEventError(reason, stage=stage, error_class=error_class)


def format_utc(moment: datetime) -> str:
    """UTC ISO-8601 with milliseconds and ``Z``: ``2020-05-17T16:34:33.000Z``."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.isoformat(timespec="milliseconds")[:-6] + "Z"  # "+00:00" → "Z"


@lru_cache(maxsize=8)
def _format_bridged_at(moment: datetime) -> str:
    return format_utc(moment)  # one value per batch: formatted once, not per event


@lru_cache(maxsize=8)
def _latest_plausible(bridged_at: datetime, max_ahead_s: float) -> datetime:
    try:  # one value per batch, like bridged_at's text
        return bridged_at + timedelta(seconds=max_ahead_s)
    except OverflowError:
        return datetime.max.replace(tzinfo=UTC)


def check_event_time(moment: datetime, bridged_at: datetime, rules: EventRules) -> None:
    """:class:`InvalidEventError` ``ImplausibleEventTime`` for a time before the floor or later
    than ``bridged_at`` plus the tolerance; the message names the time and the bound it broke."""
    if moment < rules.event_time_floor:
        raise _invalid(f"event time {format_utc(moment)} is before the floor {format_utc(rules.event_time_floor)}", "ImplausibleEventTime")
    latest = _latest_plausible(bridged_at, rules.event_time_max_ahead_s)
    if moment > latest:
        raise _invalid(
            f"event time {format_utc(moment)} is after {format_utc(latest)}"
            f" ({rules.event_time_max_ahead_s:g}s after bridged_at {format_utc(bridged_at)})",
            "ImplausibleEventTime",
        )


def decode(value: bytes | None) -> dict[str, Any]:
    """The record's JSON object, or :class:`InvalidEventError` saying why there is none."""
    if not value:
        raise _invalid("empty record", "EmptyRecord", STAGE_DECODE)
    if len(value) > MAX_EVENT_BYTES:
        raise _invalid(f"record is {len(value)} bytes, more than {MAX_EVENT_BYTES}", "OversizedRecord", STAGE_DECODE)
    try:
        # Nesting deeper than MAX_EVENT_DEPTH and integers beyond int64 are refused here (orjson
        # would fail to encode the one and turn the other into a double); ids come back exact.
        doc = loads_checked(value, max_depth=MAX_EVENT_DEPTH, exact_int_fields=STRING_ID_FIELDS)
    except JsonValueError as exc:
        raise _invalid(exc.reason, exc.error_class) from None
    except orjson.JSONDecodeError as exc:
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as uexc:
            raise _invalid(f"not UTF-8: {uexc}", "NotUTF8", STAGE_DECODE) from None
        # JSON, but deeper than orjson reads (1 024 levels): orjson < 3.12 says "recursion depth
        # exceeded", 3.12+ "depth limit exceeded".
        if "recursion" in str(exc) or "depth limit" in str(exc):
            raise _invalid(f"objects/arrays nested more than {MAX_EVENT_DEPTH} levels deep ({exc})", "TooDeep") from None
        raise _invalid(f"not JSON: {exc}", "NotJSON", STAGE_DECODE) from None
    if not isinstance(doc, dict):
        raise _invalid(f"JSON {type(doc).__name__} is not an object", "NotAnObject")
    return doc


def normalize_id(field: str, raw: Any) -> Any:
    """An id as a string: str stripped, int and integral float → ``str(int)``; None stays None."""
    if raw is None or isinstance(raw, str):
        return raw.strip() if raw is not None else None
    if isinstance(raw, bool):
        raise _invalid(f"{field} is a bool, not an id", "WrongType")
    if isinstance(raw, int):
        return str(raw)
    if isinstance(raw, float) and raw.is_integer():
        return str(int(raw))
    raise _invalid(f"{field} is {type(raw).__name__} {_short(raw)}, not an id", "WrongType")


def moment_from_unix(raw: Any) -> datetime:
    """``time_stamp`` (unix seconds: int, float or numeric string) → an aware UTC datetime."""
    if isinstance(raw, str) and _NUMERIC.fullmatch(raw.strip()):
        text = raw.strip()
        try:
            raw = float(text) if "." in text else int(text)
        except ValueError:  # more than 4 300 digits
            raise _invalid(f"time_stamp {_short(raw)} is out of range", "WrongType") from None
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise _invalid(f"time_stamp is {type(raw).__name__} {_short(raw)}, not unix seconds", "WrongType")
    try:
        # A float is rounded to the microsecond (half-even) first, then cut to the millisecond.
        return datetime.fromtimestamp(raw, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise _invalid(f"time_stamp {_short(raw)} is out of range: {exc}", "WrongType") from None


def moment_from_iso(raw: Any) -> datetime:
    """The seed's ``timestamp`` (ISO-8601; naive means UTC) → an aware UTC datetime."""
    if not isinstance(raw, str):
        raise _invalid(f"timestamp is {type(raw).__name__} {_short(raw)}, not ISO-8601", "WrongType")
    try:
        moment = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise _invalid(f"timestamp {_short(raw)} is not ISO-8601", "WrongType") from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00
        raise _invalid(f"timestamp {_short(raw)} is out of range", "WrongType") from None


def event_time_from_unix(raw: Any) -> str:
    """``time_stamp`` (unix seconds: int, float or numeric string) → UTC ISO-8601 with ms."""
    return format_utc(moment_from_unix(raw))


def event_time_from_iso(raw: Any) -> str:
    """The seed's ``timestamp`` (ISO-8601; naive means UTC) → UTC ISO-8601 with ms."""
    return format_utc(moment_from_iso(raw))


def normalize_local_time(raw: Any) -> str:
    """``2020-06-04 9:05:11`` or ``2020-06-04T09:05:11.5`` → ``YYYY-MM-DD HH:MM:SS[.ffffff]``."""
    if isinstance(raw, str) and _PADDED_LOCAL_TIME.fullmatch(raw):
        try:  # the common case, already normalized: only check that it is a real time
            datetime(int(raw[:4]), int(raw[5:7]), int(raw[8:10]), int(raw[11:13]), int(raw[14:16]), int(raw[17:19]))
        except ValueError as exc:
            raise _invalid(f"local_time {raw!r} is not a valid time: {exc}", "WrongType") from None
        return raw
    match = _LOCAL_TIME.fullmatch(raw.strip()) if isinstance(raw, str) else None
    if match is None:
        raise _invalid(f"local_time {_short(raw)} is not YYYY-MM-DD HH:MM:SS", "WrongType")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction = match.group(7)
    try:
        datetime(year, month, day, hour, minute, second)
    except ValueError as exc:
        raise _invalid(f"local_time {raw!r} is not a valid time: {exc}", "WrongType") from None
    text = f"{year:04d}-{month:02d}-{day:02d} {hour:02d}:{minute:02d}:{second:02d}"
    return f"{text}.{fraction.ljust(6, '0')}" if fraction else text


def event_id_of(doc: dict[str, Any], topic: str, partition: int, offset: int, source_epoch: int = 0) -> str:
    """The source ``_id`` (also as ``{"$oid": …}``) or the coordinates' hash when it has none
    (:func:`shared.event.event_id_from_coordinates`, with the source partition's reset epoch)."""
    raw = doc.pop("_id", None)
    if isinstance(raw, dict) and set(raw) == {"$oid"}:
        raw = raw["$oid"]
    if raw is None:
        return event_id_from_coordinates(topic, partition, offset, source_epoch)
    if isinstance(raw, str) and raw.strip():
        return raw.strip()
    raise _invalid(f"_id is {type(raw).__name__} {_short(raw)}, not an id string", "WrongType")


def normalize(
    value: bytes | None,
    key: bytes | None,
    *,
    topic: str,
    partition: int,
    offset: int,
    bridged_at: datetime,
    rules: EventRules | None = None,
    source_epoch: int = 0,
) -> dict[str, Any]:
    """The normalized event of one remote record (contract: :mod:`shared.event`).

    Every top-level source field is kept (ids as strings, ``local_time`` zero-padded) under
    :func:`shared.event.kept_field_name` (a source ``event_id`` becomes ``orig_event_id``),
    except ``_id``, which becomes ``event_id``. With ``rules`` an implausible event time is
    refused (``ImplausibleEventTime``); without, any time is taken. ``key`` is not part of the
    event: the output is re-keyed. ``source_epoch`` is the remote partition's reset epoch (the
    offsets topic's ``source_epoch``): it changes only the ``event_id`` of a record without ``_id``.
    """
    del key  # the output is re-keyed by visitor; the source key only travels on the DLQ path
    doc = decode(value)
    if not RESERVED_FIELDS.isdisjoint(doc) or _PREFIX_AFTER_NUL in "\x00" + "\x00".join(doc):
        # Before anything reads the fields: none of the names read below is reserved.
        doc = {kept_field_name(name): v for name, v in doc.items()}
    event_id = event_id_of(doc, topic, partition, offset, source_epoch)

    if "collection" in doc or "time_stamp" in doc:
        shape = SHAPE_GLAMIRA
        collection = doc.get("collection")
        if collection is not None and not isinstance(collection, str):
            raise _invalid(f"collection is {type(collection).__name__} {_short(collection)}, not an event type", "WrongType")
        collection = (collection or "").strip()
        if not collection:
            raise _invalid("collection is missing", "MissingField")
        if "time_stamp" not in doc or doc["time_stamp"] is None:
            raise _invalid("time_stamp is missing", "MissingField")
        moment = moment_from_unix(doc["time_stamp"])
        needs_product = collection in PRODUCT_EVENT_TYPES
    else:
        shape = SHAPE_SEED
        collection = SEED_COLLECTION
        if doc.get("timestamp") is None:
            raise _invalid("neither time_stamp nor timestamp is present", "MissingField")
        moment = moment_from_iso(doc["timestamp"])
        needs_product = True
    if rules is not None:
        check_event_time(moment, bridged_at, rules)

    for field in STRING_ID_FIELDS:
        if field in doc:
            doc[field] = normalize_id(field, doc[field])
    if needs_product and not doc.get("product_id"):
        raise _invalid(f"{collection} event has no product_id", "MissingField")
    if doc.get("local_time") is not None:
        doc["local_time"] = normalize_local_time(doc["local_time"])

    doc["event_id"] = event_id
    doc["collection"] = collection
    doc["source_shape"] = shape
    doc["event_time"] = format_utc(moment)
    doc["source_topic"] = topic
    doc["source_partition"] = partition
    doc["source_offset"] = offset
    doc["bridged_at"] = _format_bridged_at(bridged_at)
    return doc


def output_key(event: dict[str, Any]) -> bytes:
    """The local record key: the visitor (``device_id``) so one visitor's events keep order."""
    device_id = event.get("device_id")
    return (device_id if isinstance(device_id, str) and device_id else event["event_id"]).encode()


def _short(raw: Any, limit: int = 60) -> str:
    text = repr(raw)
    return text if len(text) <= limit else text[: limit - 1] + "…"
