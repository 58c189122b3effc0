"""The pure core of the bridge: one remote record in, one normalized event (or a reason) out.

No clients, no environment, no clock: the caller passes the record's coordinates, the
``bridged_at`` time and the :class:`EventRules`, so the same input always gives the same output
(the rules are in :mod:`shared.event`). Bad input raises :class:`InvalidEventError` whose
``stage`` is ``"decode"`` (bytes that are not one JSON document) or ``"validate"`` (JSON that is
not a valid event) and whose ``error_class`` names the rule that failed; both go into the DLQ
headers. :func:`bridge.records.copy_record` wraps all of it into one step that never raises.
"""

from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any

import orjson

from shared.errors import InvalidEventError
from shared.event import (
    DESCRIPTIVE_FIELD_TYPES,
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
from shared.isotime import parse_iso_instant
from shared.jsonvalues import JsonValueError, loads_checked, out_of_range_int

STAGE_DECODE = "decode"
STAGE_VALIDATE = "validate"

SHAPE_GLAMIRA = "glamira"
SHAPE_SEED = "seed"

_LOCAL_TIME = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})[ Tt](\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.(\d{1,6}))?")
# Zero-padded with the hour, minute and second in range: only the date is left to check.
_PADDED_LOCAL_TIME = re.compile(r"\d{4}-\d\d-\d\d (?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d{6})?")
_NUMERIC = re.compile(r"[+-]?\d+(?:\.\d*)?")
_DESCRIPTIVE_FIELDS = tuple(DESCRIPTIVE_FIELD_TYPES.items())
DEFAULT_EVENT_TIME_FLOOR = datetime.fromisoformat(EVENT_TIME_FLOOR)


@dataclass(frozen=True)
class EventRules:
    """Which event times are plausible: none before ``event_time_floor`` (an aware datetime), none
    later than ``event_time_max_ahead_s`` seconds after the record's ``bridged_at``."""

    event_time_floor: datetime = DEFAULT_EVENT_TIME_FLOOR
    event_time_max_ahead_s: float = EVENT_TIME_MAX_AHEAD_S
    # Integer unix seconds from here on are past the floor (a second of margin: the float
    # cannot misjudge one); derived, for the per-record check of an integer time_stamp.
    plainly_after_floor: float = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.event_time_floor.tzinfo is None:
            raise ValueError("event_time_floor must be timezone-aware")
        if not self.event_time_max_ahead_s >= 0:
            raise ValueError("event_time_max_ahead_s must be >= 0")
        object.__setattr__(self, "plainly_after_floor", self.event_time_floor.timestamp() + 1)


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


# Up to 9999-12-31T23:59:59Z ``%Y`` is four digits, so strftime writes what format_utc would.
_MAX_STRFTIME_STAMP = 253_402_300_799


@lru_cache(maxsize=8)
def _plainly_before_latest(bridged_at: datetime, max_ahead_s: float) -> float:
    """Integer unix seconds up to here are not too far ahead of ``bridged_at`` (a second of
    margin, like :attr:`EventRules.plainly_after_floor`); one value per batch."""
    return _latest_plausible(bridged_at, max_ahead_s).timestamp() - 1


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


def id_text(raw: Any) -> str | None:
    """An id as a string: str stripped, int and integral float → ``str(int)``; None for anything
    else (bool, dict, list, non-integral float: not an id)."""
    kind = type(raw)
    if kind is str:
        return str(raw).strip()
    if kind is int:
        return str(raw)
    if kind is float and raw.is_integer():
        return str(int(raw))
    return None


def moment_from_unix(raw: Any) -> datetime:
    """``time_stamp`` → an aware UTC datetime: unix seconds (int, float or numeric string), or a
    string in any ISO-8601 / RFC 3339 form (naive means UTC)."""
    if type(raw) is str:
        text = raw.strip()
        if not _NUMERIC.fullmatch(text):
            try:
                return _utc(parse_iso_instant(text))
            except ValueError:
                raise _invalid(f"time_stamp is str {_short(raw)}, not unix seconds nor ISO-8601", "WrongType") from None
        try:
            raw = float(text) if "." in text else int(text)
        except ValueError:  # more than 4 300 digits
            raise _invalid(f"time_stamp {_short(raw)} is out of range", "WrongType") from None
    elif type(raw) is not int and type(raw) is not float:
        raise _invalid(f"time_stamp is {type(raw).__name__} {_short(raw)}, not unix seconds", "WrongType")
    try:
        # A float is rounded to the microsecond (half-even) first, then cut to the millisecond.
        return datetime.fromtimestamp(raw, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise _invalid(f"time_stamp {_short(raw)} is out of range: {exc}", "WrongType") from None


def moment_from_iso(raw: Any) -> datetime:
    """The seed's ``timestamp`` (any ISO-8601 / RFC 3339 form; naive means UTC) → an aware UTC datetime."""
    if not isinstance(raw, str):
        raise _invalid(f"timestamp is {type(raw).__name__} {_short(raw)}, not ISO-8601", "WrongType")
    try:
        moment = parse_iso_instant(raw)
    except ValueError:
        raise _invalid(f"timestamp {_short(raw)} is not ISO-8601", "WrongType") from None
    try:
        return _utc(moment)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00
        raise _invalid(f"timestamp {_short(raw)} is out of range", "WrongType") from None


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@lru_cache(maxsize=4096)
def _is_date(text: str) -> bool:
    """``YYYY-MM-DD`` (digits already checked) is a calendar date; a stream holds few dates."""
    try:
        date(int(text[:4]), int(text[5:7]), int(text[8:10]))
    except ValueError:
        return False
    return True


def normalize_local_time(raw: Any) -> str | None:
    """``2020-06-04 9:05:11`` or ``2020-06-04T09:05:11.5`` → ``YYYY-MM-DD HH:MM:SS[.ffffff]``;
    None when ``raw`` is not a local time in one of those forms (the caller keeps it as it came)."""
    if type(raw) is not str:
        return None
    if _PADDED_LOCAL_TIME.fullmatch(raw):  # the common case, already normalized
        return raw if _is_date(raw[:10]) else None
    match = _LOCAL_TIME.fullmatch(raw.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction = match.group(7)
    try:
        datetime(year, month, day, hour, minute, second)
    except ValueError:
        return None
    text = f"{year:04d}-{month:02d}-{day:02d} {hour:02d}:{minute:02d}:{second:02d}"
    return f"{text}.{fraction.ljust(6, '0')}" if fraction else text


def event_id_of(doc: dict[str, Any], topic: str, partition: int, offset: int, source_epoch: int = 0) -> str:
    """The source ``_id`` (also as ``{"$oid": …}``) or the coordinates' hash when it has none
    (:func:`shared.event.event_id_from_coordinates`, with the source partition's reset epoch)."""
    raw = doc.pop("_id", None)
    if type(raw) is str:
        event_id = raw.strip()
        if event_id:
            return str(event_id)
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
    kept_as_came: list[str] | None = None,
) -> dict[str, Any]:
    """The normalized event of one remote record (contract: :mod:`shared.event`).

    Every top-level source field is kept (ids as strings, ``local_time`` zero-padded) under
    :func:`shared.event.kept_field_name` (a source ``event_id`` becomes ``orig_event_id``),
    except ``_id``, which becomes ``event_id``. With ``rules`` an implausible event time is
    refused (``ImplausibleEventTime``); without, any time is taken. ``key`` is not part of the
    event: the output is re-keyed. ``source_epoch`` is the remote partition's reset epoch (the
    offsets topic's ``source_epoch``): it changes only the ``event_id`` of a record without ``_id``.

    Only the event time, the event type, the product id of a product event and ``_id`` refuse an
    event (``shared.event.KEPT_AS_CAME_FIELDS``): any other known field the bridge cannot
    normalize is kept as it came, and its name appended to ``kept_as_came`` (when given).
    """
    del key  # the output is re-keyed by visitor; the source key only travels on the DLQ path
    doc = decode(value)
    layout = _layout_of(doc)
    if layout.rename:
        # Before anything reads the fields: none of the names read below is reserved.
        doc = {kept_field_name(name): v for name, v in doc.items()}
        layout = dataclasses.replace(_layout_of(doc, cache=False), rename=False)
    event_id = event_id_of(doc, topic, partition, offset, source_epoch)

    moment: datetime | None  # None: the integer unix ``seconds`` below, judged without a datetime
    seconds = 0
    if layout.glamira:
        shape = SHAPE_GLAMIRA
        collection = doc.get("collection")
        if type(collection) is not str:
            if collection is not None:
                raise _invalid(f"collection is {type(collection).__name__} {_short(collection)}, not an event type", "WrongType")
            collection = ""
        collection = collection.strip()
        if not collection:
            raise _invalid("collection is missing", "MissingField")
        stamp = doc.get("time_stamp")
        if stamp is None:
            raise _invalid("time_stamp is missing", "MissingField")
        if type(stamp) is int and 0 <= stamp <= _MAX_STRFTIME_STAMP:
            seconds = stamp
            moment = None  # made only if the cheap plausibility bounds do not settle it
            event_time = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(stamp))
        else:
            moment = moment_from_unix(stamp)
            event_time = format_utc(moment)
        needs_product = collection in PRODUCT_EVENT_TYPES
    else:
        shape = SHAPE_SEED
        collection = SEED_COLLECTION
        if doc.get("timestamp") is None:
            raise _invalid("neither time_stamp nor timestamp is present", "MissingField")
        moment = moment_from_iso(doc["timestamp"])
        event_time = format_utc(moment)
        needs_product = True
    if rules is not None:
        if moment is None:  # an integer time_stamp: outside the plain bounds the exact check decides
            if not rules.plainly_after_floor <= seconds <= _plainly_before_latest(bridged_at, rules.event_time_max_ahead_s):
                check_event_time(datetime.fromtimestamp(seconds, UTC), bridged_at, rules)
        else:
            check_event_time(moment, bridged_at, rules)

    for field in layout.ids:
        raw = doc[field]
        if type(raw) is str:  # the common case, id_text's first rule inline
            doc[field] = raw.strip()
            continue
        if raw is None:
            continue
        ident = id_text(raw)
        if ident is not None:
            doc[field] = ident
        elif needs_product and field == "product_id":
            raise _invalid(f"product_id is {_type_name(raw)} {_short(raw)}, not an id", "WrongType")
        else:
            _keep_as_came(field, raw, kept_as_came)
    if needs_product and not doc.get("product_id"):
        raise _invalid(f"{collection} event has no product_id", "MissingField")
    local_time = doc["local_time"] if layout.local_time else None
    if local_time is not None and not (
        type(local_time) is str and _PADDED_LOCAL_TIME.fullmatch(local_time) and _is_date(local_time[:10])
    ):  # what normalize_local_time would give back unchanged is left as it is
        padded = normalize_local_time(local_time)
        if padded is None:
            _keep_as_came("local_time", local_time, kept_as_came)
        else:
            doc["local_time"] = padded
    for field, usable in layout.descriptive:
        raw = doc[field]
        if raw is not None and type(raw) not in usable:
            _keep_as_came(field, raw, kept_as_came)

    doc["event_id"] = event_id
    doc["collection"] = collection
    doc["source_shape"] = shape
    doc["event_time"] = event_time
    doc["source_topic"] = topic
    doc["source_partition"] = partition
    doc["source_offset"] = offset
    doc["bridged_at"] = _format_bridged_at(bridged_at)
    return doc


@dataclass(frozen=True, slots=True)
class _Layout:
    """What :func:`normalize` reads, given an event's top-level names: the same for every event
    with the same names, so it is worked out once per set of names (a stream has few)."""

    rename: bool  # a reserved name, or one starting with the prefix: renamed before anything reads
    glamira: bool  # the Glamira shape ("collection" or "time_stamp" present), else the seed's
    ids: tuple[str, ...]  # the STRING_ID_FIELDS present
    local_time: bool
    descriptive: tuple[tuple[str, tuple[type, ...]], ...]  # the DESCRIPTIVE_FIELD_TYPES present


_LAYOUTS: dict[tuple[str, ...], _Layout] = {}
_MAX_LAYOUTS = 4096  # then the cache starts over
# An event with more top-level names, or longer ones, is worked out and not cached: the cache
# holds at most 4 096 × 4 KiB of names, whatever the records.
_MAX_CACHED_NAMES = 64
_MAX_CACHED_NAME_CHARS = 4096


def _layout_of(doc: dict[str, Any], *, cache: bool = True) -> _Layout:
    names = tuple(doc)
    layout = _LAYOUTS.get(names) if cache else None
    if layout is None:
        layout = _Layout(
            rename=not RESERVED_FIELDS.isdisjoint(names) or any(name.startswith(SOURCE_FIELD_PREFIX) for name in names),
            glamira="collection" in doc or "time_stamp" in doc,
            ids=tuple(name for name in STRING_ID_FIELDS if name in doc),
            local_time="local_time" in doc,
            descriptive=tuple((name, usable) for name, usable in _DESCRIPTIVE_FIELDS if name in doc),
        )
        if cache and len(names) <= _MAX_CACHED_NAMES and sum(map(len, names)) <= _MAX_CACHED_NAME_CHARS:
            if len(_LAYOUTS) >= _MAX_LAYOUTS:
                _LAYOUTS.clear()
            _LAYOUTS[names] = layout
    return layout


def _keep_as_came(field: str, raw: Any, kept_as_came: list[str] | None) -> None:
    """A known field the bridge cannot normalize stays as it came; an id field's nested integers
    were not checked by the decoder (it keeps top-level ids exact), so they are checked here."""
    if type(raw) is dict or type(raw) is list:
        found = out_of_range_int({field: raw})
        if found is not None:
            raise _invalid(f"{found[0]} = {found[1]} is outside the signed 64-bit range BSON can store", "IntegerOutOfRange")
    if kept_as_came is not None:
        kept_as_came.append(field)


def _type_name(raw: Any) -> str:
    return "a bool" if type(raw) is bool else type(raw).__name__


def output_key(event: dict[str, Any]) -> bytes:
    """The local record key: the visitor (``device_id``) so one visitor's events keep order."""
    device_id = event.get("device_id")
    return (device_id if isinstance(device_id, str) and device_id else event["event_id"]).encode()


def _short(raw: Any, limit: int = 60) -> str:
    text = repr(raw)
    return text if len(text) <= limit else text[: limit - 1] + "…"
