"""``MongoWriter.insert`` with the stored ``_id`` s asked first: the documents found stored are
duplicates at their own indices, and what ``insert_many`` said of the others is mapped back from
their indices in the smaller attempt to their indices in the batch."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sink.mongo import InsertOutcome, MongoWriter
from sink.settings import SinkSettings

VERDICTS = ("inserted", "duplicate", "retry", "resend", "refused", "uncertain")


class Stored:
    def __init__(self, ids: set[str] | None) -> None:
        self.ids = ids

    async def present(self, ids: list[Any]) -> set[str] | None:
        return None if self.ids is None else {i for i in ids if i in self.ids}


@settings(max_examples=100, deadline=None)  # a client per example; the machine is shared
@given(
    st.lists(st.tuples(st.booleans(), st.sampled_from(VERDICTS)), max_size=30),
    st.booleans(),
)
async def test_outcomes_map_back_to_the_batch(rows: list[tuple[bool, str]], answers: bool) -> None:
    # per document: stored already?, and what insert_many would say of it when sent
    docs = [{"_id": f"e{i}"} for i in range(len(rows))]
    stored = {d["_id"] for d, (is_stored, _) in zip(docs, rows, strict=True) if is_stored}
    writer = MongoWriter(SinkSettings(mongodb_uri="mongodb://127.0.0.1:1", mongodb_database="d", mongodb_collection="c"))
    writer.stored_ids = Stored(stored if answers else None)  # type: ignore[assignment]
    verdict = {d["_id"]: v for d, (_, v) in zip(docs, rows, strict=True)}
    sent: list[list[str]] = []

    async def selectable() -> None:
        return None

    async def insert_many(batch: list[dict[str, Any]]) -> InsertOutcome:
        sent.append([d["_id"] for d in batch])
        out = InsertOutcome()
        for j, d in enumerate(batch):
            v = verdict[d["_id"]]
            if v == "inserted":
                out.inserted += 1
            elif v == "duplicate":
                out.duplicates.append(j)
            elif v in ("retry", "resend"):
                getattr(out, v).append(j)
            else:
                getattr(out, v)[j] = ("sink.write", v, d["_id"])
        return out

    writer._server_selectable = selectable  # type: ignore[method-assign]
    writer._insert_many = insert_many  # type: ignore[method-assign]
    out = await writer.insert(docs)
    asked = answers and bool(stored)
    expected_sent = [d["_id"] for d in docs if not (asked and d["_id"] in stored)]
    assert sent == ([expected_sent] if expected_sent or not asked else [])
    # independently: a stored document is a duplicate when asked first, else what insert_many says
    said = {d["_id"]: ("duplicate" if asked and d["_id"] in stored else verdict[d["_id"]]) for d in docs}
    index = {d["_id"]: i for i, d in enumerate(docs)}
    assert out.inserted == sum(1 for v in said.values() if v == "inserted")
    assert out.duplicates == sorted(index[i] for i, v in said.items() if v == "duplicate")
    assert sorted(out.retry) == sorted(index[i] for i, v in said.items() if v == "retry")
    assert sorted(out.resend) == sorted(index[i] for i, v in said.items() if v == "resend")
    assert out.refused == {index[i]: ("sink.write", "refused", i) for i, v in said.items() if v == "refused"}
    assert out.uncertain == {index[i]: ("sink.write", "uncertain", i) for i, v in said.items() if v == "uncertain"}


@pytest.mark.parametrize("ids", [[], [1, 2], [b"x"]])
async def test_non_string_ids_are_never_asked(ids: list[Any]) -> None:
    from sink.ferretdb import StoredIds

    # no connection is made for ids the table could not hold as the sink's string _id
    assert await StoredIds("postgresql://nobody@127.0.0.1:1/x", "d", "c").present(ids) == set()
