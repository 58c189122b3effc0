"""Fixtures of the sink's integration tests: names per test, sink subprocesses, a private FerretDB."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared.kafka import KafkaConnection
from tests.integration.sink.helpers import SinkProcess, create_topic, delete_topics, drop_collection, sink_env
from tests.support.ferretdb import FERRETDB_BIN, SqliteFerretDB


@dataclass
class SinkNames:
    topic: str
    group: str
    collection: str
    dlq: str

    def env(self, **knobs: str) -> dict[str, str]:
        return sink_env(self.topic, self.group, self.collection, self.dlq, **knobs)

    def on(self, ferretdb: SqliteFerretDB, **knobs: str) -> dict[str, str]:
        """Settings for a sink writing to a private SQLite FerretDB: no PostgreSQL behind it, so no
        ``_id`` lookup index (the stack's FerretDB-on-PostgreSQL URL would name the wrong store)."""
        env = {**self.env(**knobs), "MONGODB_URI": ferretdb.uri}
        env.pop("SINK_FERRETDB_POSTGRESQL_URL", None)
        return env


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


@pytest.fixture
async def private_ferretdb(tmp_path: Path) -> AsyncIterator[SqliteFerretDB]:
    assert FERRETDB_BIN.exists(), f"{FERRETDB_BIN} missing: run `python -m infra.stack up`"
    db = SqliteFerretDB(tmp_path)
    await asyncio.to_thread(db.start)
    yield db
    db.stop()
