"""The stored-``_id`` check is an optimization: whatever its PostgreSQL connection does, it answers
None (the caller inserts the whole batch) and never ends the sink. The hour soak of 2026-12-07
lost its sink on a PostgreSQL restart: a query cancelled by its timeout while the postmaster
exited, then the pool's reset on release raised asyncpg's ``InternalClientError`` ("cannot
switch to state 15; another operation (2) is in progress"), which no ``except`` named."""

from __future__ import annotations

from types import TracebackType
from typing import Any

import asyncpg
import pytest
from sink.ferretdb import StoredIds


class BrokenRelease:
    """``pool.acquire()`` whose connection's query fails with ``during`` and whose release fails
    with ``on_release`` (asyncpg's pool re-raises the reset's error from ``release``)."""

    def __init__(self, during: BaseException | None, on_release: BaseException | None) -> None:
        self.during, self.on_release = during, on_release

    def acquire(self, timeout: float) -> BrokenRelease:
        return self

    async def __aenter__(self) -> BrokenRelease:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.on_release is not None:
            raise self.on_release

    async def fetch(self, *args: Any, **kwargs: Any) -> list[Any]:
        if self.during is not None:
            raise self.during
        return [{"id": "a"}]

    async def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("during", "on_release"),
    [
        (TimeoutError(), asyncpg.InternalClientError("cannot switch to state 15; another operation (2) is in progress")),
        (None, asyncpg.InternalClientError("cannot switch to state 15; another operation (2) is in progress")),
        (asyncpg.InternalClientError("protocol state"), None),
        (ConnectionResetError(), None),
        (asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"), None),
        (asyncpg.InterfaceError("connection is closed"), None),
    ],
)
async def test_a_connection_broken_mid_query_or_on_release_answers_none(
    during: BaseException | None, on_release: BaseException | None
) -> None:
    stored = StoredIds("postgresql://unused", "db", "coll")
    stored._pool = BrokenRelease(during, on_release)  # type: ignore[assignment]
    stored._table = '"db"."coll_1"'
    assert await stored.present(["a", "b"]) is None
    assert await stored.documents(["a"]) is None


async def test_an_answer_is_the_ids_found() -> None:
    stored = StoredIds("postgresql://unused", "db", "coll")
    stored._pool = BrokenRelease(None, None)  # type: ignore[assignment]
    stored._table = '"db"."coll_1"'
    assert await stored.present(["a", "b"]) == {"a"}
