"""shared.kafka.refused_connections: a remote cluster that is gone is told from one that is slow
by a TCP connect, on real loopback sockets; bootstrap lists parse in every form Kafka takes."""

from __future__ import annotations

import asyncio
import socket

from hypothesis import given
from hypothesis import strategies as st

from shared.kafka import KafkaConnection, bootstrap_addresses, refused_connections


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_none_when_one_server_accepts_even_if_another_is_gone() -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        conn = KafkaConnection(bootstrap_servers=f"127.0.0.1:{_closed_port()},127.0.0.1:{port}")
        assert await refused_connections(conn, 2) is None


async def test_a_listener_that_never_reads_still_accepts() -> None:
    """A starved broker: the kernel completes the handshake from the listen backlog."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # never accept()ed
        conn = KafkaConnection(bootstrap_servers=f"127.0.0.1:{listener.getsockname()[1]}")
        assert await refused_connections(conn, 2) is None


async def test_every_server_refusing_names_each() -> None:
    a, b = _closed_port(), _closed_port()
    reason = await refused_connections(KafkaConnection(bootstrap_servers=f"127.0.0.1:{a}, 127.0.0.1:{b}"), 2)
    assert reason is not None
    assert reason.startswith("no bootstrap server accepts a connection: ")
    assert f"127.0.0.1:{a} ConnectionRefusedError" in reason
    assert f"127.0.0.1:{b} ConnectionRefusedError" in reason


_hosts = st.one_of(
    st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,10}){0,3}", fullmatch=True),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
)


@given(st.lists(st.tuples(_hosts, st.integers(1, 65535), st.booleans()), min_size=1, max_size=5))
def test_bootstrap_lists_parse_back(servers: list[tuple[str, int, bool]]) -> None:
    """host:port, [v6]:port, and a host without a port (Kafka's 9092), comma-separated with spaces."""

    def written(host: str, port: int, with_port: bool) -> str:
        shown = f"[{host}]" if ":" in host else host
        return f"{shown}:{port}" if with_port else shown

    text = " , ".join(written(*s) for s in servers)
    assert bootstrap_addresses(text) == [(host, port if with_port else 9092) for host, port, with_port in servers]
