"""bench/soak/proxy.py's FaultProxy: exact bytes both ways (a plain echo server, Hypothesis chunks),
then each fault between a real client and the stack's FerretDB (pymongo) and PostgreSQL (asyncpg)."""

from __future__ import annotations

import asyncio
import random
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pymongo
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo import AsyncMongoClient
from pymongo.errors import AutoReconnect, PyMongoError

from bench.soak.proxy import FaultProxy

# -- plain sockets: an echo server behind the proxy, on a loop of its own in a thread ----------------


@pytest.fixture(scope="module")
def echo_proxy() -> Iterator[FaultProxy]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def start() -> tuple[asyncio.Server, FaultProxy]:
        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        proxy = FaultProxy("127.0.0.1", server.sockets[0].getsockname()[1])
        await proxy.start()
        return server, proxy

    server, proxy = asyncio.run_coroutine_threadsafe(start(), loop).result(5)
    yield proxy
    asyncio.run_coroutine_threadsafe(proxy.stop(), loop).result(10)
    loop.call_soon_threadsafe(server.close)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def recv_all(sock: socket.socket) -> bytes:
    out = bytearray()
    while data := sock.recv(65536):
        out += data
    return bytes(out)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chunks=st.lists(st.binary(min_size=1, max_size=20_000), max_size=12))
def test_bytes_pass_exactly_both_ways_and_half_close_too(echo_proxy: FaultProxy, chunks: list[bytes]) -> None:
    before = echo_proxy.stats
    sent = b"".join(chunks)
    with socket.create_connection(("127.0.0.1", echo_proxy.port), timeout=10) as sock:
        for chunk in chunks:
            sock.sendall(chunk)
        sock.shutdown(socket.SHUT_WR)  # the echo server sees EOF only if the proxy passes it on
        assert recv_all(sock) == sent  # and the client sees EOF once the server closed
    after = echo_proxy.stats
    assert after.bytes_up - before.bytes_up == len(sent)
    assert after.bytes_down - before.bytes_down == len(sent)
    assert after.accepted == before.accepted + 1


def test_a_delay_is_latency_not_a_bandwidth_cap(echo_proxy: FaultProxy) -> None:
    payload = random.Random(7).randbytes(8 * 1024 * 1024)
    echo_proxy.set_delay(0.05)
    try:
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", echo_proxy.port), timeout=10) as sock:

            def send() -> None:
                sock.sendall(payload)
                sock.shutdown(socket.SHUT_WR)

            sender = threading.Thread(target=send)
            sender.start()
            assert recv_all(sock) == payload
            sender.join()
        took = time.monotonic() - started
    finally:
        echo_proxy.clear()
    # 128+ chunks of 64 KiB each way: one after the other at 0.05 s each that would be > 12 s
    assert 0.1 <= took < 4, took


def test_blackhole_holds_bytes_and_delivers_them_in_order_when_it_ends(echo_proxy: FaultProxy) -> None:
    with socket.create_connection(("127.0.0.1", echo_proxy.port), timeout=10) as sock:
        sock.sendall(b"before ")
        assert sock.recv(100) == b"before "
        echo_proxy.blackhole(True)  # from another thread than the proxy's loop: handed over
        time.sleep(0.05)
        sock.sendall(b"during ")
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(100)
        echo_proxy.blackhole(False)
        sock.settimeout(5)
        sock.sendall(b"after")
        got = b""
        while len(got) < len(b"during after"):
            got += sock.recv(100)
        assert got == b"during after"


# -- real clients to the stack's stores --------------------------------------------------------------


@dataclass
class Store:
    """A store behind a proxy: ``connect(timeout)`` opens a client through it, ``ping(client, timeout)``
    makes one round trip; its client raises one of ``connection_errors`` when the path is reset or
    refused, and an error that ``is_timeout`` when it times out."""

    proxy: FaultProxy
    connect: Callable[[float], Awaitable[Any]]
    ping: Callable[[Any, float], Coroutine[Any, Any, None]]
    close: Callable[[Any], Awaitable[None]]
    connection_errors: tuple[type[BaseException], ...]
    is_timeout: Callable[[BaseException], bool]


def _mongo(proxy: FaultProxy) -> Store:
    async def connect(timeout: float = 5) -> AsyncMongoClient[dict[str, Any]]:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            "127.0.0.1",
            proxy.port,
            directConnection=True,
            retryReads=False,
            retryWrites=False,
            serverSelectionTimeoutMS=int(timeout * 1000),
        )
        try:
            await ping(client, timeout)
        except PyMongoError:
            await client.close()
            raise
        return client

    async def ping(client: AsyncMongoClient[dict[str, Any]], timeout: float) -> None:
        with pymongo.timeout(timeout):
            await client.admin.command("ping")

    async def close(client: AsyncMongoClient[dict[str, Any]]) -> None:
        await client.close()

    return Store(proxy, connect, ping, close, (AutoReconnect,), lambda e: isinstance(e, PyMongoError) and e.timeout)


def _postgres(proxy: FaultProxy, dsn: str) -> Store:
    async def connect(timeout: float = 5) -> asyncpg.Connection:
        return await asyncpg.connect(dsn, host="127.0.0.1", port=proxy.port, timeout=timeout)

    async def ping(conn: asyncpg.Connection, timeout: float) -> None:
        assert await conn.fetchval("SELECT 1", timeout=timeout) == 1

    async def close(conn: asyncpg.Connection) -> None:
        conn.terminate()

    errors = (ConnectionError, asyncpg.ConnectionDoesNotExistError)
    return Store(proxy, connect, ping, close, errors, lambda e: isinstance(e, TimeoutError))


@pytest.fixture(params=["mongodb", "postgres"])
async def store(request: pytest.FixtureRequest, mongodb_uri: str, postgres_dsn: str) -> AsyncIterator[Store]:
    url = urlsplit(mongodb_uri if request.param == "mongodb" else postgres_dsn)
    assert url.hostname is not None and url.port is not None
    async with FaultProxy(url.hostname, url.port) as proxy:
        yield _mongo(proxy) if request.param == "mongodb" else _postgres(proxy, postgres_dsn)


async def test_round_trips_and_a_slow_path(store: Store) -> None:
    client = await store.connect(5)
    try:
        for _ in range(3):
            await store.ping(client, 5)
        store.proxy.set_delay(0.3)
        started = time.monotonic()
        await store.ping(client, 5)
        assert time.monotonic() - started >= 0.3
        store.proxy.clear()
        started = time.monotonic()
        await store.ping(client, 5)
        assert time.monotonic() - started < 0.3
        stats = store.proxy.stats
        assert stats.bytes_up > 0 and stats.bytes_down > 0 and stats.active >= 1 and stats.reset == 0
    finally:
        await store.close(client)


async def test_reset_fails_the_operation_in_flight_then_the_client_reconnects(store: Store) -> None:
    client = await store.connect(5)
    try:
        store.proxy.set_delay(0.5)  # keeps the request in the proxy long enough to reset it in flight
        in_flight = asyncio.create_task(store.ping(client, 5))
        await asyncio.sleep(0.15)
        store.proxy.reset_all()
        with pytest.raises(store.connection_errors):
            await in_flight
        assert store.proxy.stats.reset >= 1
        store.proxy.clear()
        if isinstance(client, asyncpg.Connection):
            assert client.is_closed()
            await store.close(client)
            client = await store.connect(5)  # asyncpg's connection is gone for good; a pool would reconnect
        await store.ping(client, 5)  # pymongo reconnects by itself
    finally:
        await store.close(client)


async def test_refuse_fails_new_connections_only(store: Store) -> None:
    client = await store.connect(5)
    try:
        store.proxy.refuse(True)
        with pytest.raises(store.connection_errors):
            await store.connect(1)
        assert store.proxy.stats.refused >= 1
        await store.ping(client, 5)  # an open connection is not affected
        store.proxy.clear()
        await store.close(await store.connect(5))
    finally:
        await store.close(client)


async def test_blackhole_times_the_operation_out_then_it_works_after_clear(store: Store) -> None:
    client = await store.connect(5)
    try:
        store.proxy.blackhole(True)
        started = time.monotonic()
        with pytest.raises((PyMongoError, TimeoutError)) as raised:
            await store.ping(client, 0.5)
        assert store.is_timeout(raised.value), repr(raised.value)
        assert 0.4 < time.monotonic() - started < 3
        store.proxy.clear()
        await store.ping(client, 5)
    finally:
        await store.close(client)
