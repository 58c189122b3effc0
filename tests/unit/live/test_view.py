"""The changelog view applies the agent's changelog records (JSON key ``[key, [start, end]]``,
value ``[count, offset]``) as faust's recovery would, and expires windows by faust's rule."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from live.counting import counts_by_window
from live.view import ChangelogView

from shared.kafka import KafkaConnection


def view(retention_s: int = 7200) -> ChangelogView:
    conn = KafkaConnection(bootstrap_servers="127.0.0.1:1")
    topics = {"views_per_product": "app-views_per_product-changelog", "views_per_store": "app-views_per_store-changelog"}
    return ChangelogView(conn, topics, 6, window_s=60, retention_s=retention_s)


def record(key: str, start: float, value: list[int] | None) -> tuple[bytes, bytes | None]:
    return orjson.dumps([key, [start, start + 59.9]]), None if value is None else orjson.dumps(value)


def test_records_apply_in_order_last_value_wins_and_tombstones_delete() -> None:
    v = view()
    table = v.tables["views_per_product"]
    for key, value in [
        record("0/p1", 120.0, [1, 5]),
        record("3/p1", 120.0, [2, 9]),
        record("0/p1", 120.0, [4, 17]),  # a later batch: the running total replaces the earlier one
        record("0/p2", 180.0, [1, 18]),
        record("0/p2", 180.0, None),
    ]:
        ChangelogView._apply(table, key, value)
    ChangelogView._apply(table, None, b"[1, 1]")  # no key: not ours, ignored
    assert table == {("0/p1", (120.0, 179.9)): [4, 17], ("3/p1", (120.0, 179.9)): [2, 9]}
    # Partitions are summed on read, in faust's entry shape.
    assert counts_by_window(v.entries("views_per_product"), 0, 600) == {120: {"p1": 6}}
    assert list(v.entries("views_per_store")) == []


def test_prune_drops_what_faust_expires_and_keeps_the_rest() -> None:
    v = view(retention_s=3600)
    table = v.tables["views_per_store"]
    now = 10_000.0  # stale bound: start of the window holding now - retention = 6360
    for start in (6240.0, 6300.0, 6360.0, 9960.0):
        ChangelogView._apply(table, *record("1/7", start, [1, 1]))
    assert v.prune(now) == 2  # windows ending 6299.9 and 6359.9 (<= 6360)
    assert sorted(k[1][0] for k in table) == [6360.0, 9960.0]


async def test_a_reader_that_died_is_reported() -> None:
    v = view()
    v.raise_if_failed()  # not started: nothing to report

    async def broken() -> None:
        raise ValueError("undecodable changelog record")

    v._task = asyncio.create_task(broken())
    await asyncio.sleep(0)
    with pytest.raises(ValueError, match="undecodable"):
        v.raise_if_failed()
