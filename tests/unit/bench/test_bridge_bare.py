"""``bench.peers.bridge_bare.passthrough``: the source value, unchanged, plus the two fields the
benchmark's measuring consumer matches a copy by; expectations by ``json`` here."""

from __future__ import annotations

import json

from eventgen.generate import generate
from hypothesis import given
from hypothesis import strategies as st

from bench.peers.bridge_bare import passthrough

names = st.text(max_size=8).filter(lambda k: k not in ("source_partition", "source_offset"))
values = st.dictionaries(names, st.integers() | st.text(), max_size=5)


@given(doc=values, partition=st.integers(0, 63), offset=st.integers(0, 2**62), spaced=st.booleans())
def test_the_value_is_the_source_plus_where_it_came_from(doc: dict[str, object], partition: int, offset: int, spaced: bool) -> None:
    value = json.dumps(doc, indent=1 if spaced else None).encode() + (b" \n" if spaced else b"")
    key, out = passthrough(value, b"k", topic="t", partition=partition, offset=offset, bridged_at=None)
    assert key == b"k"
    assert json.loads(out) == {**doc, "source_partition": partition, "source_offset": offset}


def test_generated_events_pass_whole() -> None:
    for offset, record in enumerate(generate(200, seed=7)):
        _, out = passthrough(record.value, record.key, partition=3, offset=offset)
        assert json.loads(out) == {**json.loads(record.value), "source_partition": 3, "source_offset": offset}
