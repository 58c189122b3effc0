"""Exact comparison of a stored document with a new one, as BSON: the duplicate-or-conflict
judgement of :mod:`sink.writes` (types, values, nesting and key order count; outside
``shared.event.DELIVERY_FIELDS``; a ``-0.0`` equals the ``0.0`` FerretDB stores for it)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

import bson

from shared.event import DELIVERY_FIELDS

P = ParamSpec("P")
T = TypeVar("T")

# One thread for the duplicate judgement's CPU work (decoding stored copies, comparing): off the
# event loop, serialized (the GIL runs one at a time anyway), and one malloc arena, not one per
# thread of the default executor, each keeping its own high-water mark.
_JUDGE = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sink-judge")


async def off_loop(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)`` in the sink's one judgement thread (CPU only, no I/O)."""
    return await asyncio.get_running_loop().run_in_executor(_JUDGE, lambda: fn(*args, **kwargs))


_FIXED = {0x01: 8, 0x06: 0, 0x07: 12, 0x08: 1, 0x09: 8, 0x0A: 0, 0x10: 4, 0x11: 8, 0x12: 8, 0x13: 16, 0x7F: 0, 0xFF: 0}


def bson_elements(data: bytes) -> Iterator[tuple[str, bytes]]:
    """The top-level elements of a BSON document as (field name, the element's exact bytes: type,
    name and value), in stored order. Comparing these compares types and values exactly (an int32
    is not an int64, 1 is not 1.0, key order inside objects counts)."""
    view = memoryview(data)
    pos, end = 4, len(data) - 1
    while pos < end:
        kind = data[pos]
        name_end = data.index(b"\x00", pos + 1)
        value = name_end + 1
        if kind in _FIXED:
            size = _FIXED[kind]
        elif kind in (0x02, 0x0D, 0x0E):  # string, code, symbol: int32 length + bytes
            size = 4 + int.from_bytes(data[value : value + 4], "little")
        elif kind in (0x03, 0x04, 0x0F):  # document, array, code with scope: int32 total length
            size = int.from_bytes(data[value : value + 4], "little", signed=True)
        elif kind == 0x05:  # binary: int32 length, subtype, bytes
            size = 5 + int.from_bytes(data[value : value + 4], "little")
        elif kind == 0x0B:  # regex: two C strings
            second = data.index(b"\x00", data.index(b"\x00", value) + 1)
            size = second + 1 - value
        elif kind == 0x0C:  # DBPointer: string + 12-byte ObjectId
            size = 4 + int.from_bytes(data[value : value + 4], "little") + 12
        else:
            raise ValueError(f"unknown BSON element type 0x{kind:02x}")
        yield data[pos + 1 : name_end].decode("utf-8", "surrogateescape"), bytes(view[pos : value + size])
        pos = value + size


def content_of(data: bytes) -> list[tuple[str, bytes]]:
    """The elements that say what the event is: every top-level field but ``DELIVERY_FIELDS``."""
    return [(name, element) for name, element in bson_elements(data) if name not in DELIVERY_FIELDS]


def differing_fields(stored: bytes, new: bytes) -> list[str]:
    """Field names whose value (or place) differs between two documents outside
    ``DELIVERY_FIELDS``; empty when they are the same event.

    Byte-equal elements are equal. Elements that differ in bytes are decoded and compared by
    type and value (:func:`same_value`), which differs from bytes in one case only: a double
    ``-0.0``, which FerretDB stores as ``0.0`` (captured on 1.24.2), equals ``0.0``."""
    a, b = content_of(stored), content_of(new)
    if a == b:
        return []
    da, db = dict(a), dict(b)
    out = []
    for name in dict.fromkeys([*da, *db]):
        ea, eb = da.get(name), db.get(name)
        if ea != eb and (ea is None or eb is None or not same_value(_element_value(ea), _element_value(eb))):
            out.append(name)
    if not out and [n for n, _ in a] != [n for n, _ in b]:
        out.append("(field order)")
    return out


def same_content(stored: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """``differing_fields(bson.encode(stored), bson.encode(new)) == []``, for decoded documents,
    mostly without parsing elements in Python (~100 µs a document for the two parses).

    When the two documents' encodings outside ``DELIVERY_FIELDS`` are byte-equal they are the
    same event: those bytes are exactly the elements :func:`content_of` lists, in the same order
    (``bson.encode`` puts a top-level ``_id`` first in both). Only when they differ does the exact
    comparison decide (a ``-0.0``, an ``_id`` moved inside a nested object)."""
    if bson.encode(_outside_delivery(stored)) == bson.encode(_outside_delivery(new)):
        return True
    return not differing_fields(bson.encode(stored), bson.encode(new))


def _outside_delivery(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in DELIVERY_FIELDS}


def same_value(a: Any, b: Any) -> bool:
    """Type-aware equality of decoded BSON values: same Python types (int32 ``int`` vs int64
    ``Int64``, ``float``, ``str`` …), same keys in the same order (an ``_id`` counts as first, see
    :func:`_key_order`), equal values (so ``-0.0 == 0.0``)."""
    if type(a) is not type(b):
        return False
    if type(a) is dict:
        return _key_order(a) == _key_order(b) and all(same_value(a[k], b[k]) for k in a)
    if type(a) is list:
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _key_order(doc: dict[str, Any]) -> list[str]:
    """Key order as a store may keep it: FerretDB 1.24 moves ``_id`` to the front of every
    document, nested ones included (found by the process fuzz test: a redelivered event whose
    nested object had ``_id`` last was taken for a conflict with itself); MongoDB keeps it."""
    keys = list(doc)
    return ["_id", *(k for k in keys if k != "_id")] if "_id" in doc else keys


def _element_value(element: bytes) -> Any:
    """The decoded value of one BSON element (as :func:`bson_elements` yields it)."""
    doc = bson.decode((len(element) + 5).to_bytes(4, "little") + element + b"\x00")
    return next(iter(doc.values()))


def stored_stamp(raw: bytes) -> str | None:
    for name, element in bson_elements(raw):
        if name == "ingested_at":
            value = _element_value(element)
            return value if isinstance(value, str) else None
    return None


_SOURCE_FIELDS = ("source_topic", "source_partition", "source_offset")


def same_source(stored: bytes, doc: dict[str, Any]) -> bool:
    """The stored document came from the same record as ``doc`` (equal source coordinates)."""
    if any(doc.get(name) is None for name in _SOURCE_FIELDS):
        return False
    found = {name: _element_value(element) for name, element in bson_elements(stored) if name in _SOURCE_FIELDS}
    return all(found.get(name) == doc[name] for name in _SOURCE_FIELDS)


def conflict_message(stored: bytes, differing: list[str]) -> str:
    shown = ", ".join(differing[:10]) + (f" (+{len(differing) - 10} more)" if len(differing) > 10 else "")
    return (
        f"an event with this _id is already stored (ingested_at {stored_stamp(stored)}) with different content "
        f"outside the delivery fields: {shown}; the stored one is kept"
    )
