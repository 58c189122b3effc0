"""Private FerretDB processes for tests: the stack's binary, a port and a state dir of their own.

- :class:`SqliteFerretDB`: FerretDB on SQLite in a temp dir, to stop and restart at will.
- :class:`ProxiedPgFerretDB`: FerretDB on the stack's PostgreSQL (database ``ferretdb``) reached
  through a TCP proxy of its own, so that FerretDB (kill it) or its PostgreSQL (kill the proxy)
  can be taken away without touching the shared stack. The PostgreSQL backend is the one that
  refuses a NUL in a string.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from tests.support.processes import free_port

REPO = Path(__file__).resolve().parents[2]
FERRETDB_BIN = REPO / ".cache" / "go" / "bin" / "ferretdb"

# A TCP relay: python -c PROXY <listen port> <target host> <target port>.
PROXY = r"""
import asyncio, sys
async def pipe(r, w):
    try:
        while data := await r.read(65536):
            w.write(data); await w.drain()
    except Exception:
        pass
    finally:
        w.close()
async def handle(r, w):
    try:
        tr, tw = await asyncio.open_connection(sys.argv[2], int(sys.argv[3]))
    except Exception:
        w.close(); return
    await asyncio.gather(pipe(r, tw), pipe(tr, w))
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]))
    await server.serve_forever()
asyncio.run(main())
"""


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def kill(proc: subprocess.Popen[bytes] | None) -> None:
    """kill -9 and reap (no-op for None or an exited process)."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)


def start_ferretdb(backend: list[str], port: int, state_dir: Path) -> subprocess.Popen[bytes]:
    """FerretDB with ``backend`` flags (``--handler=…`` and its URL) on ``port``; returns once it listens."""
    argv = [
        str(FERRETDB_BIN),
        *backend,
        f"--listen-addr=127.0.0.1:{port}",
        "--telemetry=disable",
        f"--state-dir={state_dir}",
        "--debug-addr=-",
        "--log-level=warn",
    ]
    with (state_dir / "ferretdb.log").open("ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    wait_port(port)
    return proc


class SqliteFerretDB:
    """A FerretDB of one test only (SQLite in a temp dir), to stop and restart at will."""

    def __init__(self, tmp: Path) -> None:
        self.dir = tmp / "ferretdb"
        (self.dir / "sqlite").mkdir(parents=True)
        self.port = free_port()
        self.uri = f"mongodb://127.0.0.1:{self.port}/"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = start_ferretdb(["--handler=sqlite", f"--sqlite-url=file:{self.dir / 'sqlite'}/"], self.port, self.dir)

    def stop(self) -> None:
        """SIGTERM (kill after 10 s)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


class ProxiedPgFerretDB:
    """A FerretDB of one test only on the stack's PostgreSQL, behind a proxy (module docstring)."""

    def __init__(self, tmp: Path, postgres_dsn: str) -> None:
        url = urlsplit(postgres_dsn)
        self.pg_host, self.pg_port = url.hostname or "127.0.0.1", url.port or 5432
        self.proxy_port, self.port = free_port(), free_port()
        self.pg_url = f"postgres://{url.username}:{url.password}@127.0.0.1:{self.proxy_port}/ferretdb"
        self.uri = f"mongodb://127.0.0.1:{self.port}/"
        self.dir = tmp / "pg-ferretdb"
        self.dir.mkdir()
        self.ferretdb: subprocess.Popen[bytes] | None = None
        self.proxy: subprocess.Popen[bytes] | None = None

    def start_proxy(self) -> None:
        argv = [sys.executable, "-c", PROXY, str(self.proxy_port), self.pg_host, str(self.pg_port)]
        self.proxy = subprocess.Popen(argv, start_new_session=True)
        wait_port(self.proxy_port)

    def start_ferretdb(self) -> None:
        self.ferretdb = start_ferretdb(["--handler=postgresql", f"--postgresql-url={self.pg_url}"], self.port, self.dir)

    def stop_ferretdb(self) -> None:
        kill(self.ferretdb)
        self.ferretdb = None

    def stop_proxy(self) -> None:
        kill(self.proxy)
        self.proxy = None

    def stop(self) -> None:
        self.stop_ferretdb()
        self.stop_proxy()


async def scan_counts(pg_url: str, database: str, collection: str, index_prefix: str) -> tuple[int, int]:
    """PostgreSQL's own counters for a FerretDB collection's table: its sequential scans, and the
    scans of its indexes whose name starts with ``index_prefix`` (``pg_stat_user_*``; a backend
    publishes its counters when idle, up to about 10 s late)."""
    import asyncpg

    from shared.ferretdb import collection_table

    conn = await asyncpg.connect(pg_url)
    try:
        table = await collection_table(conn, database, collection)
        assert table is not None, f"FerretDB has no table for {database}.{collection}"
        seq = await conn.fetchval("SELECT seq_scan FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = $2", database, table)
        idx = await conn.fetchval(
            "SELECT coalesce(sum(idx_scan), 0) FROM pg_stat_user_indexes WHERE schemaname = $1 AND relname = $2 AND indexrelname LIKE $3",
            database,
            table,
            index_prefix.replace("_", "\\_") + "%",
        )
        return int(seq), int(idx)
    finally:
        await conn.close()


async def table_indexes(pg_url: str, database: str, collection: str) -> dict[str, str]:
    """Every index of a FerretDB collection's table in PostgreSQL, name → definition (``pg_indexes``)."""
    import asyncpg

    from shared.ferretdb import collection_table

    conn = await asyncpg.connect(pg_url)
    try:
        table = await collection_table(conn, database, collection)
        assert table is not None, f"FerretDB has no table for {database}.{collection}"
        rows = await conn.fetch("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $1 AND tablename = $2", database, table)
        return {row["indexname"]: row["indexdef"].split(" USING ", 1)[1] for row in rows}
    finally:
        await conn.close()
