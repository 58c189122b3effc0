"""One soak, start to end.

1. Names: a tag ``soak_<hex>``; topics, groups, database and schema are the tag's.
2. A :class:`~bench.soak.proxy.FaultProxy` in front of FerretDB for the sink (the slow and the
   resetting path), then the ETL API (continuous mode on), bridge, sink and live, each ready.
3. Prometheus on the services, the project's rules at ``time_scale``, scraping every 2 s.
4. The traffic for ``minutes``; faults from the seeded schedule every ``fault_every`` seconds
   (± 20 % jitter), the first after ``warmup_s``; each fault's recovery followed in the background.
   An asked-for number of faults (``faults``) is injected whole, past the traffic's end if slow
   recoveries pushed the last ones there; by default, as many as fit in the traffic.
5. The drain: the traffic is done, every fault healed, bridge and sink lag 0, and the star schema's
   total equals the generator's (or ``drain_timeout_s``).
6. Alerts: Prometheus' firing intervals matched to the faults, as soon as every expected alert
   fired and resolved (or once the rules' longest window has passed).
7. The checker (:mod:`bench.soak.checker`), the report, and the services stopped; the soak's
   topics, database and schema dropped unless ``keep``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from bench.probes import drop_owned
from bench.soak.checker import Finding, Verdict, check, star_views
from bench.soak.faults import KINDS, FaultRecord, Faults, Timing, schedule
from bench.soak.proxy import FaultProxy
from bench.soak.services import Names, Pipeline, free_port
from bench.soak.traffic import Traffic
from bench.soak.watch import RssSampler, all_ready, follow_recovery, lags, match_alerts
from infra.prometheus import Intervals, PrometheusServer
from infra.stack import HOME, load_env
from shared.kafka import KafkaConnection, create_topics

log = logging.getLogger(__name__)

PARTITIONS = 6


@dataclass
class Options:
    minutes: float = 60.0
    rate: float = 1000.0
    fault_every_s: float = 60.0
    faults: int | None = None  # default: as many as fit after the warm-up
    kinds: tuple[str, ...] = KINDS
    seed: int = 28
    bad_fraction: float = 0.001
    warmup_s: float = 30.0
    time_scale: float = 0.1
    drain_timeout_s: float = 900.0
    timing: Timing = field(default_factory=Timing)
    keep: bool = False
    work: Path | None = None
    rss_growth_bound_pct: float | None = 50.0  # None: not checked (a soak too short for two windows)
    # Live's window retention in the soak: its counters fill for this long, then old windows drop;
    # the RSS windows are compared after it (None: live's default of 2 hours, no steady state).
    live_retention_s: int | None = 1200
    # The bridge's and the sink's RSS is compared only while their lag is at most this many
    # seconds of traffic (their buffers follow their backlog).
    rss_rest_lag_s: float = 5.0


@dataclass
class Result:
    options: Options
    tag: str
    started_at: float
    traffic_s: float = 0.0
    produced: int = 0
    faults: list[FaultRecord] = field(default_factory=list)
    verdict: Verdict | None = None
    rss: dict[str, Any] = field(default_factory=dict)
    drained: bool = False
    drain_s: float | None = None
    other_alerts: list[dict[str, Any]] = field(default_factory=list)
    behind: list[dict[str, Any]] = field(default_factory=list)  # per minute: max bridge/sink lag, star delay
    rss_by_minute: list[dict[str, Any]] = field(default_factory=list)  # per minute: max RSS MiB per process
    notes: list[str] = field(default_factory=list)
    # Processes that exited on their own (a crash), each restarted as a supervisor would.
    unexpected_exits: list[dict[str, Any]] = field(default_factory=list)


def proxied(uri: str, port: int) -> str:
    """``uri`` (mongodb://…) pointed at 127.0.0.1:``port`` instead of its host."""
    parts = urlsplit(uri)
    creds = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{creds + '@' if creds else ''}127.0.0.1:{port}"))


def targets(pipeline: Pipeline) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for svc in pipeline.services.values():
        if svc.pid is not None or svc.replica == 1:
            out.setdefault(svc.name, []).append(f"127.0.0.1:{svc.port}")
    return out


async def run_soak(opts: Options) -> Result:
    env = {k: str(v) for k, v in load_env().items()}
    tag = f"soak_{uuid.uuid4().hex[:8]}"
    work = opts.work or HOME / "soak" / tag
    work.mkdir(parents=True, exist_ok=True)
    result = Result(opts, tag, time.time())
    rng = random.Random(opts.seed)
    remote, local = KafkaConnection.from_env(env, "REMOTE_KAFKA_"), KafkaConnection.from_env(env, "LOCAL_KAFKA_")
    mongo = urlsplit(env["MONGODB_URI"])
    proxy = FaultProxy(mongo.hostname or "127.0.0.1", mongo.port or 27017)
    await proxy.start()
    sink_uri = proxied(env["MONGODB_URI"], proxy.port)
    pipeline = Pipeline(Names(tag), work, PARTITIONS, env, mongodb_uri_for_sink=sink_uri, live_retention_s=opts.live_retention_s)
    await create_topics(remote, [pipeline.names.remote_topic], partitions=PARTITIONS, replication_factor=1)
    for name in ("etl-api", "bridge", "sink", "live"):
        pipeline.add(name).start()
    faults = Faults(pipeline, proxy, rng, opts.timing)
    prometheus = PrometheusServer(
        work / "prometheus", targets(pipeline), port=free_port(), time_scale=opts.time_scale, scrape_interval_s=2, evaluation_interval_s=2
    )

    async def follow_targets() -> None:
        await asyncio.to_thread(prometheus.reload, targets(pipeline))

    faults.on_replicas_changed = follow_targets
    halt = asyncio.Event()
    sampler = RssSampler(pipeline)
    try:
        for svc in pipeline.primary():
            await faults.wait_ready(svc, 240)
        await asyncio.to_thread(prometheus.start)
        count = int(opts.minutes * 60 * opts.rate)
        traffic = Traffic(pipeline.names.remote_topic, count, opts.rate, opts.seed, PARTITIONS, opts.bad_fraction)
        producing = asyncio.create_task(traffic.run(remote))
        sampling = asyncio.create_task(sampler.run(halt))
        watching = asyncio.create_task(restart_crashed(pipeline, result, halt))
        result.faults = await inject_all(opts, faults, rng, producing)
        manifest = await producing
        result.produced, result.traffic_s = manifest.total, (traffic.finished or 0) - (traffic.started or 0)
        result.drain_s, result.drained = await drain(pipeline, traffic.expected.total_views, opts.drain_timeout_s)
        intervals = await settle_alerts(prometheus, result, cap_s=20 + 900 * opts.time_scale)
        halt.set()
        await sampling
        await watching
        expected = {(a, j) for f in result.faults for a, j in f.expected_alerts}
        result.other_alerts = [
            {"alert": name, "labels": dict(labels), "intervals_s": [[_since(result, a), _since(result, b)] for a, b in spans]}
            for (name, labels), spans in intervals.items()
            if (name, dict(labels).get("job")) not in expected
        ]
        result.behind = sampler.behind_by_minute(result.started_at)
        result.rss_by_minute = sampler.rss_by_minute(result.started_at)
        result.rss = sampler.summary(**rss_windows(opts))
        result.verdict = await check(pipeline, manifest, traffic.expected, local)
        if opts.rss_growth_bound_pct is not None:
            result.verdict.findings.append(rss_finding(result.rss, opts.rss_growth_bound_pct))
    finally:
        halt.set()
        await stop_all(pipeline, result)
        prometheus.stop()
        await proxy.stop()
        if not opts.keep:
            await drop(pipeline, remote, local)
    return result


async def restart_crashed(pipeline: Pipeline, result: Result, halt: asyncio.Event, every_s: float = 2.0, delay_s: float = 5.0) -> None:
    """A process that exits on its own is a defect the soak must report, not a silent end of its
    hop: each is recorded (``Result.unexpected_exits``, with its log's tail) and started again
    after ``delay_s``, as a supervisor's restart policy would, so the rest of the soak still
    measures a whole pipeline (the hour soak of 2026-12-07 ran on for 8 minutes with its sink
    dead). Any such exit fails the soak."""
    while not halt.is_set():
        for svc in list(pipeline.services.values()):
            code = svc.crashed()
            if code is None:
                continue
            log.error("%s exited on its own with %s: restarting it in %g s", svc.label, code, delay_s)
            result.unexpected_exits.append({"process": svc.label, "code": code, "at_s": _since(result, time.time()), "tail": svc.tail(40)})
            svc.signalled = True  # recorded once
            await asyncio.sleep(delay_s)
            if not halt.is_set():
                svc.start()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(halt.wait(), every_s)


async def settle_alerts(prometheus: PrometheusServer, result: Result, cap_s: float) -> Intervals:
    """Prometheus' firing intervals, matched to the faults (``match_alerts``), once every
    expected alert has fired and resolved, or after ``cap_s`` (the rules' longest window to pass:
    EtlRunFailed's ``increase(…[15m])`` scaled) when one has not: the report says which."""
    deadline = time.monotonic() + cap_s
    while True:
        intervals = await asyncio.to_thread(prometheus.alert_intervals, result.started_at, time.time(), 1.0)
        match_alerts(result.faults, intervals, grace_s=120.0)
        settled = all(a["fired"] and a["resolved"] for f in result.faults for a in f.alerts)
        if settled or time.monotonic() >= deadline:
            return intervals
        await asyncio.sleep(2)


def rss_windows(opts: Options) -> dict[str, float]:
    """The RSS comparison's windows: 10 minutes (a quarter of a shorter soak), the first one after
    live's retention when the soak is long enough for both windows after it."""
    traffic_s = opts.minutes * 60
    window_s = min(600.0, traffic_s / 4)
    warmup_s = float(opts.live_retention_s or 0)
    if warmup_s + 2 * window_s > traffic_s:
        warmup_s = 0.0
    return {"window_s": window_s, "warmup_s": warmup_s, "rest_lag": opts.rate * opts.rss_rest_lag_s}


def rss_finding(rss: dict[str, Any], bound_pct: float) -> Finding:
    """Holds when every process's RSS grew at most ``bound_pct`` between the windows; a process
    with no sample in a window (never caught up there) is not measured, and fails it too."""
    grown = {name: r["growth_pct"] for name, r in rss.items() if r["growth_pct"] is not None and r["growth_pct"] > bound_pct}
    unmeasured = sorted(name for name, r in rss.items() if r["growth_pct"] is None)
    name = f"RSS: no process grew more than {bound_pct:.0f} % from the first window after warm-up to the last, at rest"
    return Finding(name, not grown and not unmeasured, {"grown": grown, "unmeasured": unmeasured})


def _since(result: Result, t: float | None) -> float | None:
    return None if t is None else round(t - result.started_at, 1)


async def inject_all(opts: Options, faults: Faults, rng: random.Random, producing: asyncio.Task[Any]) -> list[FaultRecord]:
    total_s = opts.minutes * 60
    n = opts.faults if opts.faults is not None else max(0, int((total_s - opts.warmup_s) // opts.fault_every_s))
    kinds = schedule(rng, n, opts.kinds)
    t0 = time.monotonic()
    records: list[FaultRecord] = []
    followers: list[asyncio.Task[None]] = []
    lag_bound = int(max(1000, 2 * opts.rate))
    for i, kind in enumerate(kinds):
        at = t0 + opts.warmup_s + i * opts.fault_every_s + rng.uniform(-0.2, 0.2) * opts.fault_every_s
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        # "as many as fit" ends with the traffic; an asked-for number is injected whole, the
        # last ones during the drain if slow recoveries pushed them past the traffic's end
        if producing.done() and opts.faults is None:
            break
        record = FaultRecord(i, kind)
        records.append(record)
        print(f"[soak] {time.strftime('%H:%M:%S')} fault {i + 1}/{n}: {kind}", flush=True)
        await faults.inject(record)
        print(
            f"[soak] {time.strftime('%H:%M:%S')} healed {kind} ({record.target}){' ERROR ' + record.error if record.error else ''}",
            flush=True,
        )
        followers.append(asyncio.create_task(follow_recovery(faults.pipeline, record, lag_bound)))
        # The next fault strikes a whole pipeline: each fault's recovery is its own (only the kind
        # "double" overlaps two on purpose).
        await wait_all_ready(faults.pipeline, 120.0)
    await asyncio.gather(*followers)
    return records


async def wait_all_ready(pipeline: Pipeline, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if await all_ready(pipeline, client):
                return True
            await asyncio.sleep(0.5)
    return False


async def drain(pipeline: Pipeline, views: int, timeout: float) -> tuple[float, bool]:
    """Seconds until bridge and sink lag are 0 and the star counts ``views`` (False: timed out)."""
    t0 = time.monotonic()
    async with httpx.AsyncClient() as client:
        while time.monotonic() - t0 < timeout:
            bridge, sink = await lags(pipeline, client)
            if bridge == 0 and sink == 0:
                star = await star_views(pipeline.stack_env["POSTGRES_DSN"], pipeline.names.tag)
                if sum(star.values()) >= views:
                    return time.monotonic() - t0, True
            await asyncio.sleep(2)
    return time.monotonic() - t0, False


async def stop_all(pipeline: Pipeline, result: Result) -> None:
    etl = pipeline.services.get("etl-api")
    if etl is not None and etl.pid is not None:
        try:
            async with pipeline.client() as client:
                await client.delete(f"http://127.0.0.1:{etl.port}/continuous", timeout=30)
                for _ in range(120):
                    if not (await pipeline.continuous(client)).get("alive"):
                        break
                    await asyncio.sleep(1)
        except (httpx.HTTPError, ValueError) as exc:
            result.notes.append(f"stopping continuous mode: {type(exc).__name__}: {exc}")
    for svc in pipeline.services.values():
        await asyncio.to_thread(svc.stop)


async def drop(pipeline: Pipeline, remote: KafkaConnection, local: KafkaConnection) -> None:
    env, tag = pipeline.stack_env, pipeline.names.tag
    await drop_owned(
        env["POSTGRES_DSN"], env["MONGODB_URI"], schema=tag, database=pipeline.names.database, topic_prefix=tag, clusters=[remote, local]
    )
