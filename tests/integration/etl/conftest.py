"""Fixtures for the ETL integration tests: a MongoDB collection and a PostgreSQL schema per test,
and the real service (``python -m etl_api``) started as a process against them."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from pymongo import MongoClient

from tests.conftest import REPO

TEST_DB = "etl_tests"
TOKEN = "test-token-etl"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class EtlService:
    """A running ``python -m etl_api`` process and an HTTP client for it."""

    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> EtlService:
        env = {**os.environ, **self.env, "ETL_PORT": str(self.port)}
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "etl_api"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etl-api exited with {self.proc.returncode}:\n{self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"etl-api not ready in {timeout}s:\n{self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def client(self, token: str | None = TOKEN) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30)


@pytest.fixture
def mongo_collection(mongodb_uri: str, unique_name: str) -> Iterator[Any]:
    client: MongoClient[dict[str, Any]] = MongoClient(mongodb_uri)
    coll = client[TEST_DB][unique_name]
    try:
        yield coll
    finally:
        coll.drop()
        client.close()


@pytest.fixture
async def pg(postgres_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(postgres_dsn)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
def schemas(postgres_dsn: str) -> Iterator[list[str]]:
    """Schemas a test creates (append to the list); dropped at the end."""
    created: list[str] = []
    yield created

    async def drop() -> None:
        conn = await asyncpg.connect(postgres_dsn)
        try:
            for s in created:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{s}" CASCADE')
        finally:
            await conn.close()

    import asyncio

    asyncio.run(drop())


@pytest.fixture
def services(tmp_path: Path) -> Iterator[list[EtlService]]:
    started: list[EtlService] = []
    yield started
    for svc in started:
        svc.stop()
    # a continuous worker outlives its API by design: a test that failed before stopping it leaves it
    for schema in {svc.env["ETL_PG_SCHEMA"] for svc in started}:
        for pid in workers_of(schema):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def java_children_rss_mb(pid: int) -> list[float]:
    """The RSS (MB) of each ``java`` child process of ``pid`` (a worker's Spark driver JVM)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = dict(line.split(":", 1) for line in (entry / "status").read_text().splitlines() if ":" in line)
        except OSError:
            continue
        if fields.get("Name", "").strip() == "java" and int(fields.get("PPid", "0")) == pid:
            out.append(int(fields["VmRSS"].split()[0]) / 1024)
    return out


def workers_of(schema: str) -> list[int]:
    """Pids of continuous worker processes of this schema (from their environment: tests run in parallel)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if b"etl_api.worker" not in (entry / "cmdline").read_bytes():
                continue
            if f"ETL_PG_SCHEMA={schema}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.fixture
def make_service(services: list[EtlService], schemas: list[str], tmp_path: Path, mongo_collection: Any, postgres_dsn: str) -> Any:
    def make(schema: str, **extra: str) -> EtlService:
        if schema not in schemas:
            schemas.append(schema)
        env = {
            "ETL_PG_SCHEMA": schema,
            "MONGODB_DATABASE": TEST_DB,
            "MONGODB_COLLECTION": mongo_collection.name,
            "ETL_API_TOKEN": TOKEN,
            "ETL_SETTLE_SECONDS": "1",
            "ETL_SPARK_MASTER": "local[2]",
            "ETL_SPARK_SHUFFLE_PARTITIONS": "1",  # tiny data: fewer tasks
            "ETL_READ_PARTS": "2",  # 2 `part` slices per hour/date: the real read path, fewer tiny tasks
            "ETL_RUN_LOG_DIR": str(tmp_path / "runs"),
            "ETL_REAPER_INTERVAL_SECONDS": "1",
            # the local stack's FerretDB runs on this PostgreSQL server (database ferretdb): runs add the read index
            "ETL_FERRETDB_POSTGRESQL_URL": postgres_dsn.rsplit("/", 1)[0] + "/ferretdb",
            **extra,
        }
        svc = EtlService(env=env, log_path=tmp_path / f"api-{schema}-{len(services)}.log")
        services.append(svc)
        return svc.start()

    return make
