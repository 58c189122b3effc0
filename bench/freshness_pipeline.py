"""One pipeline of its own per freshness run (:mod:`bench.freshness`): bridge, sink and ETL API
processes on the run's topics, MongoDB database and PostgreSQL schema, each waited for until ready,
and everything of the run stopped and dropped at its end."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from bench.bridge_vs_mirrormaker import bridge
from bench.copy_measure import wait_topic
from bench.freshness_probes import PARTITIONS
from bench.probes import drop_owned, free_port, stop
from infra.stack import ferretdb_backend, ferretdb_postgresql_url
from shared.kafka import KafkaConnection

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "results"
COLLECTION = "product_views_records"


# ---------------------------------------------------------------- one pipeline per run


def spawn(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)


async def wait_ready(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{log.name}: exited with {proc.returncode}:\n{log.read_text(errors='replace')[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"http://127.0.0.1:{port}/ready")).status_code == 200:
                    return
            await asyncio.sleep(0.5)
    raise RuntimeError(f"{log.name}: not ready in {timeout:.0f}s")


@dataclass
class Pipeline:
    tag: str
    remote_topic: str
    local_topic: str = ""
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    api_port: int = field(default_factory=free_port)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    api: subprocess.Popen[bytes] | None = None

    @property
    def schema(self) -> str:
        return self.tag

    @property
    def database(self) -> str:
        return self.tag

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.api_port}", headers={"Authorization": f"Bearer {self.token}"}, timeout=30
        )

    async def start(self, local: KafkaConnection) -> None:
        copier = bridge(PARTITIONS)
        procs, self.local_topic = copier.start(self.remote_topic, self.tag)
        self.procs += procs
        await wait_topic(local, self.local_topic, procs, time.monotonic() + 180)
        assert copier.port is not None
        await wait_ready(copier.port, procs[0], OUT / f"{self.tag}.bridge.log")
        fdb = {"SINK_FERRETDB_POSTGRESQL_URL": ferretdb_postgresql_url(dict(os.environ))} if ferretdb_backend() == "postgresql" else {}
        sink_port, sink_log = free_port(), OUT / f"{self.tag}.sink.log"
        sink_env = {
            **os.environ,
            "SINK_TOPIC": self.local_topic,
            "SINK_GROUP_ID": f"{self.tag}.sink",
            "SINK_DLQ_TOPIC": f"{self.tag}.sink.dlq",
            "MONGODB_DATABASE": self.database,
            "MONGODB_COLLECTION": COLLECTION,
            "SINK_HTTP_HOST": "127.0.0.1",
            "SINK_HTTP_PORT": str(sink_port),
            **fdb,
        }
        self.procs.append(sink := spawn([sys.executable, "-m", "sink"], sink_log, sink_env))
        await wait_ready(sink_port, sink, sink_log)
        api_env = {
            **os.environ,
            "ETL_HOST": "127.0.0.1",
            "ETL_PORT": str(self.api_port),
            "ETL_API_TOKEN": self.token,
            "ETL_PG_SCHEMA": self.schema,
            "MONGODB_DATABASE": self.database,
            "MONGODB_COLLECTION": COLLECTION,
            "ETL_RUN_LOG_DIR": str(OUT / f"{self.tag}.etl-runs"),
        }
        if ferretdb_backend() == "postgresql":
            api_env["ETL_FERRETDB_POSTGRESQL_URL"] = ferretdb_postgresql_url(dict(os.environ))
        api_log = OUT / f"{self.tag}.etl-api.log"
        self.api = spawn([sys.executable, "-m", "etl_api"], api_log, api_env)
        await wait_ready(self.api_port, self.api, api_log)

    async def stop(self, dsn: str, remote: KafkaConnection, local: KafkaConnection, keep: bool) -> list[str]:
        """Continuous mode off and its worker gone, no run active, every process stopped; the
        run's topics, database and schema deleted unless ``keep``. Returns what went wrong."""
        notes: list[str] = []
        if self.api is not None and self.api.poll() is None:
            try:
                async with self.client() as client:
                    status = (await client.get("/continuous")).json()
                    if status.get("desired"):
                        await client.delete("/continuous")
                    notes += await self.quiesce(client, status.get("pid"))
            except (httpx.HTTPError, ValueError) as exc:
                notes.append(f"stopping the ETL: {type(exc).__name__}: {exc}")
            stop(self.api)
        for proc in reversed(self.procs):
            stop(proc)
        if not keep:
            await drop(self, dsn, remote, local)
        return notes

    async def quiesce(self, client: httpx.AsyncClient, worker_pid: int | None, timeout: float = 300) -> list[str]:
        """Waits until the continuous worker has exited and no run is queued or running."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            worker_alive = worker_pid is not None and Path(f"/proc/{worker_pid}").exists()
            active = [r for r in (await client.get("/runs", params={"limit": 5})).json() if r["status"] in ("queued", "running")]
            if not worker_alive and not active:
                return []
            await asyncio.sleep(1)
        if worker_pid is not None and Path(f"/proc/{worker_pid}").exists():
            os.kill(worker_pid, signal.SIGTERM)  # the worker this run's API launched
            return [f"continuous worker {worker_pid} still alive {timeout:.0f}s after DELETE /continuous: SIGTERM"]
        return [f"a run still active {timeout:.0f}s after the traffic"]


async def drop(p: Pipeline, dsn: str, remote: KafkaConnection, local: KafkaConnection) -> None:
    uri = os.environ.get("MONGODB_URI", "mongodb://127.0.0.1:27017/")
    await drop_owned(dsn, uri, schema=p.schema, database=p.database, topic_prefix=p.tag, clusters=[remote, local])


async def timestamp_type(conn: KafkaConnection, topic: str) -> str:
    """``message.timestamp.type`` of ``topic`` as the broker reports it; for a topic that does not
    exist yet, the broker's default (``log.message.timestamp.type``) it would be created with."""
    admin = AIOKafkaAdminClient(**conn.client_kwargs())
    await admin.start()
    try:
        broker = min(b["node_id"] for b in (await admin.describe_cluster())["brokers"])
        asked = [
            ConfigResource(ConfigResourceType.TOPIC, topic, configs={"message.timestamp.type": None}),
            ConfigResource(ConfigResourceType.BROKER, str(broker), configs={"log.message.timestamp.type": None}),
        ]
        found: dict[str, str] = {}
        for response in await admin.describe_configs(asked):
            for code, _msg, _type, _name, entries in response.resources:
                for entry in entries if code == 0 else ():
                    found[entry[0]] = str(entry[1])
        if "message.timestamp.type" in found:
            return found["message.timestamp.type"]
        return f"{found.get('log.message.timestamp.type', 'unknown')} (topic not created yet: the broker's default)"
    finally:
        await admin.close()
