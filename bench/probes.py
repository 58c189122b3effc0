"""What the benchmarks measure with and set up alike: the stack's environment, a free port,
stopping a process, a process's peak RSS and CPU seconds, the stack's FerretDB process, the load
average, and dropping what a run owned (its schema, database and topics)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient
from pymongo import AsyncMongoClient

from infra.stack import ENV_FILE, ferretdb_proc, load_env
from shared.kafka import KafkaConnection

T = TypeVar("T")


def run_cleaning_up(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``, where SIGTERM and SIGINT cancel ``main``: its ``finally`` blocks run
    (the benchmark's processes stopped, its topics, database and schema dropped) before the exit.
    Without this, a benchmark stopped by ``timeout`` or ``kill`` leaves its run's data behind."""

    async def guarded() -> T:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        return await main

    return asyncio.run(guarded())


def load_stack_env() -> None:
    """The running stack's addresses and credentials (``stack.env``) into ``os.environ``; what the
    environment already sets wins."""
    if not ENV_FILE.exists():
        raise SystemExit(f"{ENV_FILE} missing: start the stack first (./pipeline stack up)")
    for key, value in load_env().items():
        os.environ.setdefault(key, value)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """SIGTERM (a clean shutdown), then SIGKILL if it has not exited within ``timeout`` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def peak_rss_mib(pid: int) -> float:
    """A process's peak resident set (``VmHWM``) in MiB; NaN when the process is gone. A JVM is one
    process, so for Kafka Connect or MirrorMaker 2 this is the whole worker."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return float("nan")


def cpu_seconds(pid: int | None, *, children: bool = False) -> float:
    """User + system CPU seconds a process used so far (NaN when unknown); ``children``: plus
    those of its exited children it waited for."""
    if pid is None:
        return float("nan")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    ticks = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if children else 0)
    return ticks / os.sysconf("SC_CLK_TCK")


def ferretdb_pid() -> int | None:
    """The stack's FerretDB process, from its PID file (None when it is not running)."""
    return ferretdb_proc().pid()


def backend_cpu_seconds() -> float:
    """CPU seconds used so far by FerretDB plus every PostgreSQL process (its backends,
    checkpointer, autovacuum workers, …, and through the postmaster's children times those that
    exited meanwhile): the database side of a phase, as a difference."""
    total = cpu_seconds(ferretdb_pid())
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "comm").read_text().startswith("postgres"):
                    total += cpu_seconds(int(proc.name), children=True)
            except OSError:
                continue
    return total


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages, as ``1.2/0.9/0.7``."""
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


async def drop_owned(dsn: str, mongodb_uri: str, *, schema: str, database: str, topic_prefix: str, clusters: list[KafkaConnection]) -> None:
    """Drops a run's PostgreSQL schema, MongoDB database and every topic named ``topic_prefix…``
    on each of ``clusters``."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongodb_uri)
    try:
        await client.drop_database(database)
    finally:
        await client.close()
    await drop_topics(clusters, lambda name: name.startswith(topic_prefix))


async def drop_topics(clusters: list[KafkaConnection], owned: Callable[[str], bool]) -> list[str]:
    """Deletes every topic of ``clusters`` whose name is ``owned``; returns the names deleted.

    A benchmark's topics left behind are not free: 138 of them on the local cluster kept its three idle brokers at
    ~20 % CPU each, enough to skew the next benchmark."""
    dropped: list[str] = []
    for cluster in clusters:
        admin = AIOKafkaAdminClient(**cluster.client_kwargs())
        await admin.start()
        try:
            mine = [t for t in await admin.list_topics() if owned(t)]
            if mine:
                await admin.delete_topics(mine)
                dropped += mine
        finally:
            await admin.close()
    return dropped
