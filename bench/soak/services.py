"""The pipeline's processes for one soak: bridge, sink, live and the ETL API (continuous mode on),
each ``python -m <service>`` with the soak's own topics, consumer groups, MongoDB database and
PostgreSQL schema (all named after its tag), so a soak shares the stack with nothing of its own.

A :class:`Service` is one replica: start, kill with a signal, pause and resume, its pid, its
``/ready``, ``/lag`` and RSS. Replica 2 of the bridge or the sink joins the same consumer group
(a rebalance), on a port of its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.probes import free_port
from infra.stack import ferretdb_backend, ferretdb_postgresql_url

REPO = Path(__file__).resolve().parents[2]
MODULES = {"bridge": "bridge", "sink": "sink", "live": "live", "etl-api": "etl_api"}


def rss_mib(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@dataclass
class Service:
    """One replica of one service: a process, its port and its log."""

    name: str
    replica: int
    env: dict[str, str]
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    paused: bool = False
    # A kill or stop was sent (by a fault or the soak's end): its exit is expected, not a crash.
    signalled: bool = False

    @property
    def label(self) -> str:
        return self.name if self.replica == 1 else f"{self.name}-{self.replica}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def start(self) -> None:
        with self.log.open("ab") as out:
            out.write(f"\n===== start {self.label} {time.strftime('%H:%M:%S')} =====\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", MODULES[self.name]], env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO
            )
        self.started_at = time.monotonic()
        self.paused = False
        self.signalled = False

    def signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)
        self.paused = sig == signal.SIGSTOP
        self.signalled = self.signalled or sig in (signal.SIGKILL, signal.SIGTERM)

    def crashed(self) -> int | None:
        """The exit code of a process that exited without being sent a kill or a stop, else None."""
        if self.proc is None or self.signalled:
            return None
        return self.proc.poll()

    def wait_exit(self, timeout: float) -> int | None:
        """Waits for the process to exit; kill -9 after ``timeout``. Returns its exit code."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def stop(self, timeout: float = 30) -> None:
        if self.paused:
            self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        self.wait_exit(timeout)

    async def get(self, client: httpx.AsyncClient, path: str, **kwargs: Any) -> httpx.Response:
        return await client.get(f"http://127.0.0.1:{self.port}{path}", **kwargs)

    async def ready(self, client: httpx.AsyncClient) -> bool:
        return await self.not_ready(client) is None

    async def not_ready(self, client: httpx.AsyncClient) -> str | None:
        """None when ``/ready`` answers 200; else why not: no process, paused, the answer's body
        (the service's own reason) or the request's error."""
        if self.pid is None:
            return "no process"
        if self.paused:
            return "paused"
        try:
            resp = await self.get(client, "/ready", timeout=2)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"[:300]
        return None if resp.status_code == 200 else f"{resp.status_code} {resp.text}"[:300]

    async def lag(self, client: httpx.AsyncClient) -> int | None:
        try:
            resp = await self.get(client, "/lag", timeout=5)
        except httpx.HTTPError:
            return None
        body = resp.json() if resp.status_code == 200 else None
        return int(body["total_lag"]) if isinstance(body, dict) and body.get("total_lag") is not None else None

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Names:
    """Every name a soak's pipeline owns: derived from its tag."""

    tag: str

    @property
    def remote_topic(self) -> str:
        return f"{self.tag}_product_views"

    @property
    def local_topic(self) -> str:
        return f"{self.tag}_processed"

    @property
    def dlq_topic(self) -> str:
        return f"{self.tag}_processed.dlq"

    @property
    def offsets_topic(self) -> str:
        return f"{self.tag}_processed.bridge-offsets"

    database: str = field(init=False)
    collection: str = "product_views_records"

    def __post_init__(self) -> None:
        self.database = self.tag


@dataclass
class Pipeline:
    """The four services of one soak, with the soak's names and ports."""

    names: Names
    work: Path
    partitions: int
    stack_env: dict[str, str]
    mongodb_uri_for_sink: str | None = None
    live_retention_s: int | None = None  # None: live's default (2 hours)
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    services: dict[str, Service] = field(default_factory=dict)

    def env(self, name: str, port: int, replica: int) -> dict[str, str]:
        n = self.names
        env = {**self.stack_env, "MONGODB_DATABASE": n.database, "MONGODB_COLLECTION": n.collection}
        fdb_pg = ferretdb_postgresql_url(self.stack_env) if ferretdb_backend() == "postgresql" else None
        if name == "bridge":
            env |= {
                "BRIDGE_REMOTE_TOPIC": n.remote_topic,
                "BRIDGE_LOCAL_TOPIC": n.local_topic,
                "BRIDGE_DLQ_TOPIC": n.dlq_topic,
                "BRIDGE_OFFSETS_TOPIC": n.offsets_topic,
                "BRIDGE_GROUP_ID": f"{n.tag}_bridge",
                "BRIDGE_LOCAL_PARTITIONS": str(self.partitions),
                "BRIDGE_HTTP_HOST": "127.0.0.1",
                "BRIDGE_HTTP_PORT": str(port),
            }
        elif name == "sink":
            env |= {
                "SINK_TOPIC": n.local_topic,
                "SINK_DLQ_TOPIC": n.dlq_topic,
                "SINK_GROUP_ID": f"{n.tag}_sink",
                "SINK_HTTP_HOST": "127.0.0.1",
                "SINK_HTTP_PORT": str(port),
            }
            if self.mongodb_uri_for_sink:
                env["MONGODB_URI"] = self.mongodb_uri_for_sink
            if fdb_pg:
                env["SINK_FERRETDB_POSTGRESQL_URL"] = fdb_pg
        elif name == "live":
            env |= {
                "LIVE_LOCAL_TOPIC": n.local_topic,
                "LIVE_DLQ_TOPIC": n.dlq_topic,
                "LIVE_APP_ID": f"{n.tag}_live",
                "LIVE_TOPIC_PARTITIONS": str(self.partitions),
                "LIVE_DATA_DIR": str(self.work / f"live-{replica}"),
                "LIVE_PG_SCHEMA": n.tag,
                "LIVE_HTTP_HOST": "127.0.0.1",
                "LIVE_HTTP_PORT": str(port),
            }
            if self.live_retention_s is not None:  # its longest top-N span within it
                spans = sorted({5, self.live_retention_s // 60})
                env |= {"LIVE_RETENTION_S": str(self.live_retention_s), "LIVE_TOP_SPANS_MIN": json.dumps(spans)}
            etl = self.services.get("etl-api")
            if etl is not None:
                env["LIVE_ETL_API_URL"] = f"http://127.0.0.1:{etl.port}"
        else:
            env |= {
                "ETL_HOST": "127.0.0.1",
                "ETL_PORT": str(port),
                "ETL_API_TOKEN": self.token,
                "ETL_PG_SCHEMA": n.tag,
                "ETL_CONTINUOUS": "true",
                "ETL_RUN_LOG_DIR": str(self.work / "etl-runs"),
                "ETL_BRIDGE_OFFSETS_TOPIC": n.offsets_topic,
            }
            if fdb_pg:
                env["ETL_FERRETDB_POSTGRESQL_URL"] = fdb_pg
        return env

    def add(self, name: str, replica: int = 1) -> Service:
        port = free_port()
        svc = Service(name, replica, self.env(name, port, replica), port, self.work / "logs" / f"{name}-{replica}.log")
        svc.log.parent.mkdir(parents=True, exist_ok=True)
        self.services[svc.label] = svc
        return svc

    def primary(self) -> list[Service]:
        return [s for s in self.services.values() if s.replica == 1]

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(headers={"Authorization": f"Bearer {self.token}"}, timeout=30)

    async def continuous(self, client: httpx.AsyncClient) -> dict[str, Any]:
        """GET /continuous with the token (so it names the worker's pid)."""
        resp = await self.services["etl-api"].get(client, "/continuous", timeout=10)
        resp.raise_for_status()
        body: dict[str, Any] = resp.json()
        return body
