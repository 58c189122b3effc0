"""A request that finds PostgreSQL away is answered 503 with the reason (an outage the client
retries), not a 500 with a traceback: the hour soak of 2026-12-07 logged "Exception in ASGI
application" twice while its PostgreSQL restarted."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import asyncpg
import pytest
from etl_api.app import connection
from fastapi import HTTPException


class Pool:
    def __init__(self, error: BaseException | None) -> None:
        self.error, self.released = error, 0

    async def acquire(self, timeout: float) -> str:
        if self.error is not None:
            raise self.error
        return "conn"

    async def release(self, conn: Any) -> None:
        self.released += 1
        raise asyncpg.InternalClientError("cannot switch to state 15")  # a broken connection on release


def request(pool: Pool) -> Any:
    state = SimpleNamespace(pool=pool, ddl_applied=True, not_ready_reason="")
    return SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(etl=state)), method="GET", url=SimpleNamespace(path="/runs"))


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 55432)"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        TimeoutError(),
    ],
)
async def test_no_connection_is_a_503_with_the_reason(error: BaseException) -> None:
    with pytest.raises(HTTPException) as caught:
        await anext(connection(request(Pool(error))))
    assert caught.value.status_code == 503
    assert caught.value.detail.startswith(f"postgres unavailable: {type(error).__name__}")
    assert caught.value.headers == {"Retry-After": "5"}


async def test_a_connection_is_released_even_when_its_release_fails() -> None:
    pool = Pool(None)
    gen = connection(request(pool))
    assert await anext(gen) == "conn"
    with pytest.raises(StopAsyncIteration):
        await anext(gen)
    assert pool.released == 1
