"""Hypothesis strategies for document values of every BSON type FerretDB 1.24 stores (the tests of
its direct table reads: the ETL's rows, the sink's duplicate copies)."""

from __future__ import annotations

import string
from datetime import datetime

from bson import Binary, Int64, ObjectId, Regex, Timestamp
from hypothesis import strategies as st

KEY = st.text(string.ascii_letters + string.digits + "_-é ", min_size=1, max_size=6)
SCALARS = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12),
    st.integers(-(2**31), 2**31 - 1),
    st.integers(-(2**63), 2**63 - 1).map(Int64),
    st.floats(allow_nan=False, allow_infinity=False),  # FerretDB refuses both
    st.booleans(),
    st.none(),
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)).map(
        lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000)
    ),
    st.binary(max_size=8).map(lambda b: ObjectId(b.ljust(12, b"\x01")[:12])),
    st.tuples(st.binary(max_size=8), st.sampled_from([0, 4, 128])).map(lambda t: Binary(*t)),
    st.sampled_from([Regex("ab+c", "i"), Regex("^x", "")]),
    st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)).map(lambda t: Timestamp(*t)),
)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEY, inner, max_size=3), max_leaves=6)
