"""Decoding a record's JSON without silent changes: one convention for the bridge and the sink.

orjson is fast and strict, but it turns an integer literal beyond the 64-bit range into a double
(``18446744073709551616`` → ``1.8446744073709552e+19``) without a word, and an object nested
deeper than it can encode later crashes whoever encodes it. :func:`loads_checked` keeps orjson's
speed on ordinary records and refuses, with a reason, what no store can hold exactly:

- nesting deeper than ``max_depth`` (objects and arrays; the top level is 1): ``TooDeep``;
- an integer outside BSON's signed 64-bit range: ``IntegerOutOfRange`` — except in the
  top-level ``exact_int_fields`` (ids), where the caller turns it into its exact string.

Both checks cost one C-level scan of the bytes in the common case: only a record with more
``{``/``[`` than ``max_depth`` is walked for depth, and only a record holding a run of 19 or more
digits is parsed a second time (by the standard library, which keeps integers exact).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import orjson

from shared.errors import PipelineError
from shared.event import INT64_MAX, INT64_MIN

# Digits → "0", "{" and "[" → "{", every other byte → " ": one pass over the text, after which a
# run of 19 digits (the shortest integer beyond int64 has 19) is a plain substring search (~1 µs on
# a 700-byte event where re's \d{19} took 15-20 µs) and the openings are one count.
_SKETCH = bytes(0x30 if 0x30 <= b <= 0x39 else 0x7B if b in (0x7B, 0x5B) else 0x20 for b in range(256))
_LONG_DIGITS_RUN = b"0" * 19


class JsonValueError(PipelineError, ValueError):
    """A JSON document no store can hold exactly (not retriable). ``error_class`` names the rule."""

    def __init__(self, error_class: str, reason: str) -> None:
        super().__init__(reason)
        self.error_class = error_class
        self.reason = reason


def depth_of(value: Any, limit: int) -> int:
    """Nesting depth of ``value`` (a scalar is 0, ``{}`` and ``[]`` are 1), counted without
    recursion; stops counting once past ``limit`` (returns ``limit + 1``)."""
    if type(value) is not dict and type(value) is not list:
        return 0
    deepest = 1
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                return deepest
        children = node.values() if type(node) is dict else node
        for child in children:
            if type(child) is dict or type(child) is list:
                stack.append((child, depth + 1))
    return deepest


def out_of_range_int(value: Any, skip_top: frozenset[str] = frozenset()) -> tuple[str, int] | None:
    """The path and value of the first integer outside BSON's int64 in ``value``, or None.
    Top-level keys in ``skip_top`` are not looked at. Iterative (safe at any depth)."""
    stack: list[tuple[str, Any]] = []
    if type(value) is dict:
        stack.extend((k, v) for k, v in value.items() if k not in skip_top)
    else:
        stack.append(("", value))
    while stack:
        path, node = stack.pop()
        if type(node) is int:
            if not INT64_MIN <= node <= INT64_MAX:
                return path, node
        elif type(node) is dict:
            stack.extend((f"{path}.{k}", v) for k, v in node.items())
        elif type(node) is list:
            stack.extend((f"{path}[{i}]", v) for i, v in enumerate(node))
    return None


def loads_checked(value: bytes, *, max_depth: int, exact_int_fields: Iterable[str] = ()) -> Any:
    """``orjson.loads(value)`` refusing what cannot be stored exactly (see the module docstring).

    Raises ``orjson.JSONDecodeError`` for text that is not JSON, :class:`JsonValueError` for
    JSON that is refused. Integers in the top-level ``exact_int_fields`` come back exact (as
    Python ints, however large); the caller decides how to keep them.
    """
    doc = orjson.loads(value)
    sketch = value.translate(_SKETCH)
    if sketch.count(b"{") > max_depth:
        depth = depth_of(doc, max_depth)
        if depth > max_depth:
            raise JsonValueError("TooDeep", f"objects/arrays nested {depth}+ levels deep, more than {max_depth}")
    if _LONG_DIGITS_RUN not in sketch:
        return doc
    # A run of 19+ digits: perhaps an integer orjson turned into a double. The text is valid
    # JSON (orjson took it) and at most max_depth deep, so the standard library parses it the
    # same way, except that its integers are exact.
    try:
        doc = json.loads(value)
    except ValueError as exc:  # e.g. an integer of more than 4 300 digits
        raise JsonValueError("IntegerOutOfRange", f"an integer cannot be read exactly: {exc}") from None
    found = out_of_range_int(doc, frozenset(exact_int_fields))
    if found is not None:
        path, number = found
        text = str(number)
        shown = text if len(text) <= 40 else f"{text[:37]}…"
        raise JsonValueError("IntegerOutOfRange", f"{path or 'value'} = {shown} is outside the signed 64-bit range BSON can store")
    return doc
