"""A fault-injection TCP proxy on loopback: a path between a service and a store that the soak can
slow down, reset or cut while traffic flows.

Every connection accepted on ``127.0.0.1:<port>`` is forwarded to one upstream ``(host, port)``.
The faults, switchable at run time and cumulative until :meth:`FaultProxy.clear`:

- :meth:`~FaultProxy.set_delay` — a slow path: every chunk, in either direction, reaches the other
  side ``seconds`` after the proxy read it (latency, not a bandwidth cap: chunks are pipelined).
- :meth:`~FaultProxy.reset_all` — a crashed middlebox or peer: every open connection is closed at
  once with a TCP RST (``SO_LINGER (1, 0)``) on both sides; clients see "connection reset".
- :meth:`~FaultProxy.refuse` — a dead listener: new connections are accepted and reset at once.
- :meth:`~FaultProxy.blackhole` — a silent network partition: connections stay open, nothing
  passes either way, no error is raised; clients only notice through their own timeouts. Bytes
  sent meanwhile are *held* (left in the kernel's socket buffers, or in the proxy's queue if read
  before the cut) and delivered in order when the partition ends. That is what TCP does: a real
  partition drops packets, but the sender retransmits them until its retransmission timeout
  (about 15 min on Linux), so a partition that heals before that loses no byte and the stream
  resumes. Dropping bytes while keeping the connection would corrupt the stream, something no
  network does to TCP; model a partition longer than the retransmission timeout as
  ``blackhole(True)`` then ``reset_all()``. New connections during a partition complete their
  handshake (the proxy's kernel accepts them) but carry nothing.

What it is for: a client that connects to exactly the address it is given — a service and MongoDB
(FerretDB, 127.0.0.1:27017; use ``directConnection=true``) or PostgreSQL (127.0.0.1:55432). Kafka
clients only bootstrap through the address they are given and then connect to the brokers'
*advertised* listeners, which bypass the proxy: in front of Kafka it is useful only for a
single-broker cluster whose advertised listener is the proxy's address.

The fault methods are plain (sync) methods: on the proxy's event loop they act at once, from any
other thread they are handed to that loop (``call_soon_threadsafe``) and act right after.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

CHUNK = 64 * 1024
QUEUE_CHUNKS = 64  # chunks read but not yet forwarded, per direction (backpressure beyond that)


@dataclass(frozen=True)
class ProxyStats:
    """Connections accepted (refused ones too), open, reset by ``reset_all``, refused; bytes forwarded each way."""

    accepted: int
    active: int
    reset: int
    refused: int
    bytes_up: int
    bytes_down: int


def _rst(writer: asyncio.StreamWriter) -> None:
    """Close ``writer``'s socket with a TCP RST instead of a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass(eq=False)
class _Conn:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def kill(self, rst: bool) -> None:
        for writer in (self.client, self.upstream):
            if rst:
                _rst(writer)
            else:
                writer.transport.abort()
        current = asyncio.current_task()
        for task in self.tasks:
            if task is not current:
                task.cancel()


class FaultProxy:
    """``async with FaultProxy("127.0.0.1", 27017) as proxy:`` then connect to ``proxy.port``."""

    def __init__(self, upstream_host: str, upstream_port: int, *, port: int = 0, host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listen = (host, port)
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conns: set[_Conn] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._flowing = asyncio.Event()  # cleared while blackholed
        self._flowing.set()
        self._delay = 0.0
        self._refusing = False
        self._accepted = self._reset = self._refused = self._bytes_up = self._bytes_down = 0

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FaultProxy not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def stats(self) -> ProxyStats:
        return ProxyStats(self._accepted, len(self._conns), self._reset, self._refused, self._bytes_up, self._bytes_down)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(self._handle, *self._listen)

    async def stop(self) -> None:
        """Stop listening and close every connection (plain close, no RST)."""
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            conn.kill(rst=False)
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=5)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()

    def _on_loop(self, action: Callable[[], None]) -> None:
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if self._loop is None or here is self._loop:
            action()
        else:
            self._loop.call_soon_threadsafe(action)

    def set_delay(self, seconds: float) -> None:
        """Delay every chunk read from now on, either way, by ``seconds`` (0 = no delay)."""
        if seconds < 0:
            raise ValueError("delay must be >= 0")

        def apply() -> None:
            self._delay = seconds

        self._on_loop(apply)

    def reset_all(self) -> None:
        """RST every open connection, both sides, at once."""

        def apply() -> None:
            for conn in list(self._conns):
                self._conns.discard(conn)
                self._reset += 1
                conn.kill(rst=True)

        self._on_loop(apply)

    def refuse(self, on: bool) -> None:
        """While on, reset each new connection as soon as it is accepted."""

        def apply() -> None:
            self._refusing = on

        self._on_loop(apply)

    def blackhole(self, on: bool) -> None:
        """While on, forward nothing either way; held bytes flow again, in order, when off."""
        self._on_loop(self._flowing.clear if on else self._flowing.set)

    def clear(self) -> None:
        """No fault: no delay, no refusal, no partition (connections already reset stay closed)."""

        def apply() -> None:
            self._delay, self._refusing = 0.0, False
            self._flowing.set()

        self._on_loop(apply)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._accepted += 1
        if self._refusing:
            self._refused += 1
            _rst(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            _rst(writer)  # upstream down: the client sees a reset, as with a refused connection
            return
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        conn = _Conn(writer, up_writer)
        conn.tasks = [
            asyncio.create_task(self._pump(reader, up_writer, conn, up=True)),
            asyncio.create_task(self._pump(up_reader, writer, conn, up=False)),
        ]
        self._conns.add(conn)
        try:
            await asyncio.gather(*conn.tasks, return_exceptions=True)
        finally:
            self._conns.discard(conn)
            for w in (writer, up_writer):
                w.close()
            self._handlers.discard(handler)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, conn: _Conn, *, up: bool) -> None:
        """One direction: read chunks, stamp them with their due time, and let ``_send`` deliver
        them; an error on either side resets both (a reset travels through, as it would end to end)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUE_CHUNKS)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._send(queue, dst, up=up))
                while True:
                    await self._flowing.wait()
                    data = await src.read(CHUNK)
                    await queue.put((loop.time() + self._delay, data))
                    if not data:
                        return
        except* OSError:
            self._conns.discard(conn)
            conn.kill(rst=True)

    async def _send(self, queue: asyncio.Queue[tuple[float, bytes]], dst: asyncio.StreamWriter, *, up: bool) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, data = await queue.get()
            await asyncio.sleep(max(0.0, due - loop.time()))
            await self._flowing.wait()
            if not data:
                if dst.can_write_eof():
                    dst.write_eof()  # half-close passes through
                return
            dst.write(data)
            await dst.drain()
            if up:
                self._bytes_up += len(data)
            else:
                self._bytes_down += len(data)
