"""``sink.compare.same_content``, the duplicate check's fast path, decides exactly what the exact
element-by-element comparison decides, on generated documents and their mutations."""

from __future__ import annotations

from typing import Any

import bson
from hypothesis import given, settings
from hypothesis import strategies as st
from sink.compare import differing_fields, same_content

from shared.event import DELIVERY_FIELDS
from tests.support.bson_values import KEY, VALUES

CONTENT = st.dictionaries(KEY, VALUES, max_size=6)
DELIVERY = st.dictionaries(st.sampled_from(sorted(DELIVERY_FIELDS)), VALUES, max_size=3)


def mutations(doc: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Copies of ``doc`` that are the same event or almost: other delivery fields, a value
    replaced, a key dropped or added, the key order turned, a -0.0 for a 0.0, ``_id`` moved."""
    keys = [k for k in doc if k != "_id"]
    same_event = DELIVERY.map(lambda d: {**{k: v for k, v in doc.items() if k not in DELIVERY_FIELDS}, **d})
    options = [same_event, st.just(dict(reversed(list(doc.items())))), st.just({**doc, "zz_added": 0.0})]
    if keys:
        key = st.sampled_from(keys)
        options += [
            st.tuples(key, VALUES).map(lambda kv: {**doc, kv[0]: kv[1]}),
            key.map(lambda k: {n: v for n, v in doc.items() if n != k}),
            key.map(lambda k: {n: (-0.0 if v == 0.0 and type(v) is float else v) for n, v in doc.items()}),
            key.map(lambda k: {n: ({**v, "_id": 1} if type(v) is dict else v) for n, v in doc.items()}),
        ]
    return st.one_of(options)


@st.composite
def pairs(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    stored = {"_id": draw(st.text(max_size=4)), **draw(CONTENT), **draw(DELIVERY)}
    new = draw(mutations(stored) | st.builds(lambda c, d: {"_id": stored["_id"], **c, **d}, CONTENT, DELIVERY))
    return stored, new


@settings(max_examples=400)
@given(pairs())
def test_same_content_is_exactly_the_exact_comparison(pair: tuple[dict[str, Any], dict[str, Any]]) -> None:
    stored, new = pair
    assert same_content(stored, new) == (differing_fields(bson.encode(stored), bson.encode(new)) == [])


def test_same_content_examples() -> None:
    base = {"_id": "e", "a": 1, "b": {"c": "x"}, "ingested_at": "2026-12-07T00:00:00.000Z"}
    assert same_content(base, {**base, "ingested_at": "2030-01-01T00:00:00.000Z", "source_offset": 4})
    assert not same_content(base, {**base, "a": bson.Int64(1)})  # int32 vs int64
    assert not same_content(base, {"_id": "e", "b": {"c": "x"}, "a": 1})  # field order
    assert same_content({"_id": "e", "z": 0.0}, {"_id": "e", "z": -0.0})  # FerretDB stores -0.0 as 0.0
