"""Fixtures of the sink's integration tests: names per test, sink subprocesses, a private FerretDB."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared.kafka import KafkaConnection
from tests.integration.sink.helpers import REPO, SinkProcess, create_topic, delete_topics, drop_collection, free_port, sink_env

FERRETDB_BIN = REPO / ".cache" / "go" / "bin" / "ferretdb"


@dataclass
class SinkNames:
    topic: str
    group: str
    collection: str
    dlq: str

    def env(self, **knobs: str) -> dict[str, str]:
        return sink_env(self.topic, self.group, self.collection, self.dlq, **knobs)


@pytest.fixture
async def names(unique_name: str, local_kafka: KafkaConnection, mongodb_uri: str) -> AsyncIterator[SinkNames]:
    n = SinkNames(topic=unique_name, group=f"{unique_name}_sink", collection=unique_name, dlq=f"{unique_name}.dlq")
    await create_topic(local_kafka, n.topic)
    yield n
    with contextlib.suppress(Exception):
        await drop_collection(mongodb_uri, n.collection)
    with contextlib.suppress(Exception):
        await delete_topics(local_kafka, [n.topic, n.dlq])


@pytest.fixture
def sinks(tmp_path: Path) -> Iterator[Callable[..., SinkProcess]]:
    """``sinks(name, env)`` starts ``python -m sink``; every one still running is killed at the end."""
    started: list[SinkProcess] = []

    def start(name: str, env: dict[str, str]) -> SinkProcess:
        p = SinkProcess(name, env, tmp_path).start()
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop_quietly()


class PrivateFerretDB:
    """A FerretDB of this test only (SQLite in a temp dir), to stop and restart at will."""

    def __init__(self, tmp: Path) -> None:
        self.dir = tmp / "ferretdb"
        (self.dir / "sqlite").mkdir(parents=True)
        self.port = free_port()
        self.uri = f"mongodb://127.0.0.1:{self.port}/"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [
            str(FERRETDB_BIN),
            "--handler=sqlite",
            f"--sqlite-url=file:{self.dir / 'sqlite'}/",
            f"--listen-addr=127.0.0.1:{self.port}",
            "--telemetry=disable",
            f"--state-dir={self.dir}",
            "--debug-addr=-",
            "--log-level=warn",
        ]
        with (self.dir / "ferretdb.log").open("ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"private FerretDB did not listen on {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


@pytest.fixture
async def private_ferretdb(tmp_path: Path) -> AsyncIterator[PrivateFerretDB]:
    assert FERRETDB_BIN.exists(), f"{FERRETDB_BIN} missing: run `python -m infra.stack up`"
    db = PrivateFerretDB(tmp_path)
    await asyncio.to_thread(db.start)
    yield db
    db.stop()
