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
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from bridge.event_times import (
    MAX_STRFTIME_STAMP,
    EventRules,
    check_event_time,
    event_time_of_seconds,
    format_bridged_at,
    format_utc,
    moment_from_iso,
    moment_from_unix,
    normalize_local_time,
)
from bridge.event_times import invalid as _invalid
from bridge.event_times import short as _short
from shared.event import (
    DESCRIPTIVE_FIELD_TYPES,
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
from shared.jsonvalues import JsonValueError, loads_checked, out_of_range_int

STAGE_DECODE = "decode"

SHAPE_GLAMIRA = "glamira"
SHAPE_SEED = "seed"

_DESCRIPTIVE_FIELDS = tuple(DESCRIPTIVE_FIELD_TYPES.items())


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
        moment: datetime | None = None  # None: an integer stamp, written and judged without a datetime
        if type(stamp) is int and 0 <= stamp <= MAX_STRFTIME_STAMP:
            event_time = event_time_of_seconds(stamp, bridged_at, rules)
        else:
            moment = moment_from_unix(stamp)
        needs_product = collection in PRODUCT_EVENT_TYPES
    else:
        shape = SHAPE_SEED
        collection = SEED_COLLECTION
        if doc.get("timestamp") is None:
            raise _invalid("neither time_stamp nor timestamp is present", "MissingField")
        moment = moment_from_iso(doc["timestamp"])
        needs_product = True
    if moment is not None:
        if rules is not None:
            check_event_time(moment, bridged_at, rules)
        event_time = format_utc(moment)

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
    if local_time is not None:
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
    doc["bridged_at"] = format_bridged_at(bridged_at)
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
