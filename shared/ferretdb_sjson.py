"""FerretDB 1.24's storage format ("sjson") decoded: one convention for every reader of
FerretDB's PostgreSQL tables (the ETL's direct read, the sink's duplicate check).

A stored document is a ``jsonb`` object whose values are plain JSON, with its own type schema
under ``$s``: ``{"$s": {"p": {field: {"t": type, …}}, "$k": [field order]}, field: value, …}``;
a nested object carries its schema under its property's ``$s``, an array its items' schemas under
``i``. :func:`decode_document` gives what PyMongo would return for the same document; with
``exact=True`` it keeps what PyMongo's default decoding loses, so that ``bson.encode`` of the
result is byte for byte the BSON FerretDB itself sends: an int64 ("long") stays an int64, a date
a BSON date in milliseconds, and a key missing from its value or its schema is an error instead
of being skipped. The BSON types themselves are the caller's (:class:`BsonTypes`): ``shared``
ships in images without PyMongo (the bridge's, live's), so nothing here imports ``bson``.

A stored form this module does not know (a type FerretDB may add later, a double stored as
text) raises :class:`UnknownStoredType`: the caller then reads that document through FerretDB.
Only the FerretDB-on-PostgreSQL stand-in needs this; MongoDB is read through its driver.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

from shared.errors import PipelineError

EPOCH = datetime(1970, 1, 1)  # PyMongo decodes BSON dates as naive UTC datetimes


class UnknownStoredType(PipelineError, ValueError):
    """A stored value whose sjson type this module does not decode (the document is then read
    through FerretDB; not retriable: the same bytes decode the same way)."""


@dataclass(frozen=True)
class BsonTypes:
    """The constructors of the BSON types a decoded document holds, from the caller's ``bson``."""

    object_id: Callable[[str], Any]
    binary: Callable[[bytes, int], Any]  # (data, subtype); subtype 0 is returned as bytes
    regex: Callable[[str, str], Any]  # (pattern, options as stored)
    timestamp: Callable[[int, int], Any]  # (time, increment)
    int64: Callable[[int], Any]  # exact mode: an int64 that stays one when encoded
    date_ms: Callable[[int], Any]  # exact mode: a BSON date of these milliseconds


def _value(raw: Any, schema: dict[str, Any], types: BsonTypes, exact: bool) -> Any:  # noqa: PLR0911
    kind = schema.get("t")
    if kind == "string" and isinstance(raw, str):
        return raw
    if kind == "int" and isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if kind == "long" and isinstance(raw, int) and not isinstance(raw, bool):
        return types.int64(raw) if exact else raw
    if kind == "double" and isinstance(raw, int | float) and not isinstance(raw, bool):
        return float(raw)
    if kind == "bool" and isinstance(raw, bool):
        return raw
    if kind == "null" and raw is None:
        return None
    if kind == "date" and isinstance(raw, int) and not isinstance(raw, bool):
        if exact:
            return types.date_ms(raw)
        try:
            return EPOCH + timedelta(milliseconds=raw)
        except OverflowError as exc:
            raise UnknownStoredType(f"date {raw} ms is out of Python's range") from exc
    if kind == "objectId" and isinstance(raw, str):
        return types.object_id(raw)
    if kind == "object" and isinstance(raw, dict):
        return _document(raw, schema.get("$s", {}), None, types, exact)
    if kind == "array" and isinstance(raw, list) and len(raw) == len(schema.get("i", ())):
        return [_value(v, s, types, exact) for v, s in zip(raw, schema["i"], strict=True)]
    if kind == "binData" and isinstance(raw, str):
        data, subtype = base64.b64decode(raw), int(schema.get("s", 0))
        return data if subtype == 0 else types.binary(data, subtype)
    if kind == "regex" and isinstance(raw, str):
        return types.regex(raw, str(schema.get("o", "")))
    if kind == "timestamp" and isinstance(raw, int):
        return types.timestamp(raw >> 32, raw & 0xFFFFFFFF)
    raise UnknownStoredType(f"stored type {kind!r} with a {type(raw).__name__} value")


def _document(raw: dict[str, Any], schema: dict[str, Any], only: frozenset[str] | None, types: BsonTypes, exact: bool) -> dict[str, Any]:
    props = schema.get("p", {})
    keys = schema.get("$k", [])
    if exact and (set(keys) != set(props) or set(keys) != set(raw) - {"$s"}):
        raise UnknownStoredType("the stored keys, their schema and their order do not agree")
    return {k: _value(raw[k], props[k], types, exact) for k in keys if (only is None or k in only) and k in raw and k in props}


def decode_document(text: str | bytes, types: BsonTypes, only: frozenset[str] | None = None, *, exact: bool = False) -> dict[str, Any]:
    """A stored document (``_jsonb::text``) as PyMongo would return it (``exact``: as FerretDB
    would encode it, see the module); ``only``: the top-level fields to decode (None: all).
    Raises :class:`UnknownStoredType`."""
    try:
        raw = orjson.loads(text)
    except orjson.JSONDecodeError:  # e.g. an integer past 64 bits (a huge double, stored by value)
        raw = json.loads(text)
    if not isinstance(raw, dict) or not isinstance(raw.get("$s"), dict):
        raise UnknownStoredType("not a FerretDB sjson document (no $s schema)")
    return _document(raw, raw["$s"], only, types, exact)


def stored_id(text: str | bytes, types: BsonTypes) -> Any:
    """The decoded ``_id`` of a stored document."""
    raw = json.loads(text)
    return _value(raw.get("_id"), raw["$s"]["p"]["_id"], types, False)
