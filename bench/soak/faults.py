"""The soak's faults: a menu of kinds and a seeded scheduler.

Each kind is an async function that injects its fault, holds it, and heals it (restarts what it
killed, resumes what it paused, starts what it stopped), recording in its :class:`FaultRecord`
when each step happened. A killed service stays down ``down_s`` before it is started again, as a
supervisor's restart delay would keep it: long enough for the alert that should see it.

What each kind models, and the alert Prometheus should raise for it (rule names from
``infra/compose/prometheus/alerts.yml``, evaluated at the soak's time scale):

==================  ===================================================================  =========================
kind                fault                                                                expected alert
==================  ===================================================================  =========================
kill-bridge         kill -9 the bridge; started again after ``down_s``                   PipelineServiceDown
term-sink           SIGTERM the sink (a clean stop mid-stream); started again            PipelineServiceDown
kill-sink           kill -9 the sink                                                     PipelineServiceDown
kill-live           kill -9 the live service                                             PipelineServiceDown
kill-etl-api        kill -9 the ETL API (its continuous worker keeps running)            PipelineServiceDown
kill-etl-worker     kill -9 the continuous worker mid-micro-batch (the API relaunches)   EtlRunFailed
pause-bridge        SIGSTOP the bridge past its session timeout while a second bridge    PipelineServiceDown
                    takes its partitions; SIGCONT: the zombie must be fenced
pause-sink          the same for the sink                                                PipelineServiceDown
replica-bridge      a second bridge joins, then leaves (two rebalances)                  —
replica-sink        a second sink joins, then leaves                                     —
broker-local        one local broker stopped, started again after ``outage_s``           —
pause-broker        one local broker SIGSTOPped past its controller session, SIGCONT     —
broker-remote       the remote broker stopped ``outage_s``                               PipelineServiceNotReady
ferretdb-kill       kill -9 FerretDB, started again after ``outage_s``                   PipelineServiceNotReady
postgres-restart    PostgreSQL (the star schema's and FerretDB's store) stopped, started  —
proxy-slow          the sink's path to MongoDB delays every chunk ``slow_s``              —
proxy-reset         every connection of the sink to MongoDB reset (TCP RST)               —
double              one of the above, and while it recovers another one                   both kinds'
==================  ===================================================================  =========================
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.soak.proxy import FaultProxy
from bench.soak.services import Pipeline, Service
from infra.stack import procs, wait_for

KINDS = (
    "kill-bridge",
    "term-sink",
    "kill-sink",
    "kill-live",
    "kill-etl-api",
    "kill-etl-worker",
    "pause-bridge",
    "pause-sink",
    "replica-bridge",
    "replica-sink",
    "broker-local",
    "pause-broker",
    "broker-remote",
    "ferretdb-kill",
    "postgres-restart",
    "proxy-slow",
    "proxy-reset",
    "double",
)

EXPECTED_ALERTS: dict[str, tuple[tuple[str, str | None], ...]] = {
    "kill-bridge": (("PipelineServiceDown", "bridge"),),
    "term-sink": (("PipelineServiceDown", "sink"),),
    "kill-sink": (("PipelineServiceDown", "sink"),),
    "kill-live": (("PipelineServiceDown", "live"),),
    "kill-etl-api": (("PipelineServiceDown", "etl-api"),),
    "kill-etl-worker": (("EtlRunFailed", None),),  # the reaper marks its micro-batch failed
    "pause-bridge": (("PipelineServiceDown", "bridge"),),
    "pause-sink": (("PipelineServiceDown", "sink"),),
    "broker-remote": (("PipelineServiceNotReady", "bridge"),),
    "ferretdb-kill": (("PipelineServiceNotReady", "sink"),),
}


@dataclass
class Timing:
    """How long each fault holds (seconds)."""

    down_s: float = 20.0  # a killed service's restart delay
    pause_s: float = 25.0  # SIGSTOP → SIGCONT: past the consumer session (10 s) and the scaled alert
    outage_s: float = 40.0  # a stopped store or broker
    replica_s: float = 15.0  # how long a second replica stays after it is ready
    slow_s: float = 0.2  # the slow path's delay per chunk
    slow_for_s: float = 30.0


@dataclass
class FaultRecord:
    index: int
    kind: str
    target: str = ""
    injected_at: float = 0.0  # wall clock (Prometheus' time)
    healed_at: float | None = None  # when the heal step (restart, resume, start) was issued
    ready_at: float | None = None  # the restarted process (or, else, every service) ready again
    recovered_at: float | None = None  # every service ready and lag back under the bound
    restart_ready_s: float | None = None  # a restarted service: from its start to ready
    waited_for: dict[str, str] = field(default_factory=dict)  # service → reason, last seen before all were ready
    expected_alerts: list[tuple[str, str | None]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)  # filled after the run from Prometheus
    error: str | None = None
    restarted: Service | None = None
    # times restart_ready_s from the restart itself, while the fault goes on (a double's second
    # half can take a minute; a poll that starts after it would count that minute as the restart's)
    restart_watch: asyncio.Task[None] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "kind": self.kind,
            "target": self.target,
            "injected_at": self.injected_at,
            "healed_at": self.healed_at,
            "ready_s": None if self.ready_at is None or self.healed_at is None else round(self.ready_at - self.healed_at, 1),
            "restart_ready_s": None if self.restart_ready_s is None else round(self.restart_ready_s, 1),
            "recovered_s": None if self.recovered_at is None else round(self.recovered_at - self.injected_at, 1),
            "waited_for": self.waited_for,
            "expected_alerts": [{"alert": a, "job": j} for a, j in self.expected_alerts],
            "alerts": self.alerts,
            "error": self.error,
        }


async def time_restart(svc: Service, record: FaultRecord, timeout_s: float = 600.0, every_s: float = 0.25) -> None:
    """``record.restart_ready_s``: from ``svc``'s start to its first ready answer (polled every
    ``every_s``; left None when it is not ready within ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if await svc.ready(client):
                record.restart_ready_s = time.monotonic() - svc.started_at
                return
            await asyncio.sleep(every_s)


async def slowest_restart(record: FaultRecord, parts: tuple[FaultRecord, ...]) -> None:
    """A double fault's ``restart_ready_s``: the slowest of its two halves' restarts."""
    await asyncio.gather(*(p.restart_watch for p in parts if p.restart_watch is not None))
    times = [p.restart_ready_s for p in parts if p.restart_ready_s is not None]
    record.restart_ready_s = max(times) if times else None


@dataclass
class Faults:
    """Injects faults into one soak's pipeline and the stack under it."""

    pipeline: Pipeline
    proxy: FaultProxy | None
    rng: random.Random
    timing: Timing = field(default_factory=Timing)
    on_replicas_changed: Callable[[], Awaitable[None]] | None = None  # Prometheus' targets follow the replicas

    async def inject(self, record: FaultRecord) -> None:
        record.injected_at = time.time()
        record.expected_alerts = list(EXPECTED_ALERTS.get(record.kind, ()))
        try:
            if record.kind == "double":
                first, second = self.rng.sample([k for k in KINDS if k not in ("double", "postgres-restart")], 2)
                record.target = f"{first}+{second}"
                record.expected_alerts = [*EXPECTED_ALERTS.get(first, ()), *EXPECTED_ALERTS.get(second, ())]
                one = FaultRecord(record.index, first)
                task = asyncio.create_task(self.run(one))
                await self.until_healed(one, task)  # the second arrives while the first recovers
                two = FaultRecord(record.index, second)
                await self.run(two)
                await task
                record.healed_at, record.restarted = two.healed_at, two.restarted or one.restarted
                if one.restart_watch or two.restart_watch:
                    record.restart_watch = asyncio.create_task(slowest_restart(record, (one, two)))
                record.error = one.error or two.error
                return
            await self.run(record)
        except Exception as exc:  # a fault that could not be injected or healed is reported, not fatal
            record.error = f"{type(exc).__name__}: {exc}"

    @staticmethod
    async def until_healed(record: FaultRecord, task: asyncio.Task[None]) -> None:
        while record.healed_at is None and not task.done():  # noqa: ASYNC110 - the heal is a field another task sets
            await asyncio.sleep(0.2)

    async def run(self, record: FaultRecord) -> None:
        if not record.injected_at:
            record.injected_at = time.time()
        verb = record.kind.partition("-")[0]
        handlers: dict[str, Callable[[FaultRecord], Awaitable[None]]] = {
            "kill": self.kill,
            "term": self.kill,
            "pause": self.pause,
            "replica": self.replica,
            "broker": self.broker,
            "ferretdb": self.ferretdb,
            "postgres": self.postgres,
            "proxy": self.proxy_fault,
        }
        await handlers[verb](record)

    # ---- the pipeline's own processes --------------------------------------------------------

    async def kill(self, record: FaultRecord) -> None:
        what = record.kind.partition("-")[2]
        sig = signal.SIGKILL if record.kind.startswith("kill") else signal.SIGTERM
        if what == "etl-worker":
            await self.kill_worker(record)
            return
        svc = self.pipeline.services[what]
        record.target = svc.label
        svc.signal(sig)
        await asyncio.to_thread(svc.wait_exit, 30)
        await asyncio.sleep(self.timing.down_s)
        svc.start()
        record.healed_at, record.restarted = time.time(), svc
        record.restart_watch = asyncio.create_task(time_restart(svc, record))

    async def kill_worker(self, record: FaultRecord) -> None:
        """kill -9 of the continuous worker while one of its micro-batches runs (waits up to a
        minute for one: a worker killed between two micro-batches leaves no run to fail)."""
        etl = self.pipeline.services["etl-api"]
        async with self.pipeline.client() as client:
            pid = (await self.pipeline.continuous(client)).get("pid")
            if not pid:
                raise RuntimeError("GET /continuous names no worker pid")
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                running = (await etl.get(client, "/runs", params={"status": "running", "limit": 5})).json()
                if any(r.get("pid") == pid for r in running):
                    break
                await asyncio.sleep(0.2)
            else:
                record.expected_alerts = []  # no micro-batch ran: nothing to fail
        record.target = f"etl worker {pid}"
        os.kill(int(pid), signal.SIGKILL)
        record.healed_at = time.time()  # the API's supervisor relaunches it

    async def pause(self, record: FaultRecord) -> None:
        name = record.kind.partition("-")[2]
        if name == "broker":
            await self.pause_broker(record)
            return
        svc = self.pipeline.services[name]
        other = self.pipeline.services.get(f"{name}-2") or self.pipeline.add(name, 2)
        other.start()
        await self.replicas_changed()
        await self.wait_ready(other, 180)
        record.target = svc.label
        svc.signal(signal.SIGSTOP)
        await asyncio.sleep(self.timing.pause_s)
        svc.signal(signal.SIGCONT)
        record.healed_at = time.time()
        await asyncio.sleep(self.timing.replica_s)
        await asyncio.to_thread(other.stop)
        await self.replicas_changed()

    async def replica(self, record: FaultRecord) -> None:
        name = record.kind.partition("-")[2]
        other = self.pipeline.services.get(f"{name}-2") or self.pipeline.add(name, 2)
        record.target = other.label
        other.start()
        await self.replicas_changed()
        await self.wait_ready(other, 180)
        await asyncio.sleep(self.timing.replica_s)
        await asyncio.to_thread(other.stop)
        await self.replicas_changed()
        record.healed_at = time.time()

    async def replicas_changed(self) -> None:
        if self.on_replicas_changed is not None:
            await self.on_replicas_changed()

    # ---- the stack under the pipeline ------------------------------------------------------

    async def broker(self, record: FaultRecord) -> None:
        name = "kafka-remote-1" if record.kind == "broker-remote" else f"kafka-local-{self.rng.randint(1, 3)}"
        record.target = name
        await asyncio.to_thread(procs()[name].stop)
        await self.hold_then_start(name, self.timing.outage_s)
        record.healed_at = time.time()

    async def pause_broker(self, record: FaultRecord) -> None:
        name = f"kafka-local-{self.rng.randint(1, 3)}"
        record.target = name
        pid = procs()[name].pid()
        if pid is None:
            raise RuntimeError(f"{name} is not running")
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(self.timing.pause_s)
        finally:
            os.kill(pid, signal.SIGCONT)
        record.healed_at = time.time()

    async def ferretdb(self, record: FaultRecord) -> None:
        record.target = "ferretdb"
        pid = procs()["ferretdb"].pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        await self.hold_then_start("ferretdb", self.timing.outage_s)
        record.healed_at = time.time()

    async def postgres(self, record: FaultRecord) -> None:
        record.target = "postgres"
        await asyncio.to_thread(procs()["postgres"].stop)
        await self.hold_then_start("postgres", 5)
        record.healed_at = time.time()

    async def hold_then_start(self, name: str, seconds: float) -> None:
        """The stopped stack part ``name`` stays down ``seconds``, then starts, even when the soak
        is interrupted meanwhile: a soak stopped by hand must leave the stack whole (one stopped
        during a FerretDB outage left FerretDB down for whatever ran next)."""
        try:
            await asyncio.sleep(seconds)
        finally:
            await self.start_stack_part(name)

    async def start_stack_part(self, name: str) -> None:
        p = procs()[name]
        await asyncio.to_thread(p.start)
        await asyncio.to_thread(wait_for, name, p.ready, log_file=p.log_file)

    async def proxy_fault(self, record: FaultRecord) -> None:
        if self.proxy is None:
            raise RuntimeError("no proxy between the sink and MongoDB")
        record.target = "sink→mongodb"
        try:
            if record.kind == "proxy-slow":
                self.proxy.set_delay(self.timing.slow_s)
                await asyncio.sleep(self.timing.slow_for_s)
            else:
                self.proxy.reset_all()
        finally:
            self.proxy.clear()
        record.healed_at = time.time()

    # ---- readiness ---------------------------------------------------------------------------

    async def wait_ready(self, svc: Service, timeout: float) -> float:
        """Seconds from now until ``svc`` answers ``/ready``; raises after ``timeout``."""
        t0 = time.monotonic()
        async with httpx.AsyncClient() as client:
            while time.monotonic() - t0 < timeout:
                if await svc.ready(client):
                    return time.monotonic() - t0
                if svc.pid is None:
                    raise RuntimeError(f"{svc.label} exited: {svc.tail(10)}")
                await asyncio.sleep(0.5)
        raise RuntimeError(f"{svc.label} not ready in {timeout:.0f}s: {svc.tail(10)}")


def schedule(rng: random.Random, count: int, kinds: tuple[str, ...] = KINDS) -> list[str]:
    """``count`` kinds: every kind once per round, each round shuffled (seeded)."""
    out: list[str] = []
    while len(out) < count:
        round_ = list(kinds)
        rng.shuffle(round_)
        out.extend(round_)
    return out[:count]
