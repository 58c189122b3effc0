"""Benchmark (not a test): how fresh the star schema is — continuous mode vs incremental runs once a minute.

    .venv/bin/python -m bench.freshness [--rates 500,2000] [--seconds 300] [--skip-peer] [--out PATH]
        [--drain-timeout 1200] [--keep]

For each rate and each mode, a pipeline of its own on the local stack: a fresh 6-partition remote
topic (``message.timestamp.type=LogAppendTime``, so a record's timestamp is the remote broker's
append time, as ``bench/copy_measure.py`` does; the stack's own ``product_views`` gets the broker's
default, ``CreateTime``, from eventgen: the bench prints what it finds), ``python -m bridge`` (as
``bench/bridge_vs_mirrormaker.py`` starts it), ``python -m sink`` into a fresh MongoDB database,
``python -m etl_api`` on a fresh PostgreSQL schema (``ETL_PG_SCHEMA``), every setting at its
default. The event generator (``python -m eventgen
--now --rate R``: Glamira-shaped events, 10 % in the seed's shape, 2 % from crawlers, event time =
the wall clock) produces R events/s for ``--seconds`` to the remote topic; the ETL side is

- **continuous**: ``PUT /continuous`` — the worker's micro-batches every ``ETL_CONTINUOUS_INTERVAL_S``
  (default 5 s);
- **peer, incremental once a minute**: continuous mode off, ``POST /runs {"mode": "incremental"}``
  at every whole minute after the traffic starts (its best case: requested right when the minute
  elapses, retried every 0.5 s on 409 while the previous run is still going; a run that overran
  its minute is followed at once).

**Freshness**, sampled: every second the bench produces one marker event to each remote partition,
a valid product view (``view_product_detail``, a browser's user agent, event time now) of a product
id of its own (``freshness-<run>-<second>-<partition>``), and keeps its append time from the
produce answer (``RecordMetadata.timestamp``, the broker's LogAppendTime). A poller reads
``sum(view_count)`` of the run's marker products from ``fact_product_views`` every 0.5 s; a
marker's freshness = the start of the first poll that sees it counted − its append time (so up to
0.5 s of it is the poll's resolution). p50/p95/p99/max over all markers of the run. **Where it
goes** (``ingest_lag``, ``etl_part``): each marker's sink ``ingested_at`` − its append time (bridge,
local Kafka and sink), and its freshness minus that (waiting for a micro-batch or run, and its
duration), read from the run's MongoDB database after the drain.

**CPU of the ETL side**: every descendant process of the ETL API (the continuous worker, its Spark
JVM and Spark's Python workers; or each run's job process, its JVM and Python workers), user +
system seconds, sampled from ``/proc`` every 0.25 s (a process's last sample stands after it
exits: its last < 0.25 s is not counted); from the traffic's start until every event is counted
and no run is active, per 1 000 events produced (generator events + markers). The API process
itself is reported apart. **Driver RSS** (continuous): the worker's Python process + its JVM
(``VmRSS``), when the traffic starts and when it is all counted.

**Exact**: after the traffic the bench waits (``--drain-timeout``; ``drained`` says whether in
time) until every marker is counted and ``sum(view_count)`` over the run's schema reaches the valid
views produced (counted by the bench from the generator's own records, regenerated with the same
seed: ``view_product_detail`` and every seed-shape event, minus the crawlers' user agents; plus
the markers); the peer's last run is let finish; then (continuous: three more intervals; peer: one
more incremental run) the sum is read again. Exact: it never exceeded that number, it equals it
at the end, and no marker was ever counted twice.

Writes ``bench/results/freshness.json`` (``--out``): the highest rate's figures at the top level
and every run under ``runs``; prints a Markdown table. Logs of the processes go to
``bench/results/<run>.*.log``; every topic, database and schema of a run is deleted at its end
(``--keep`` keeps them).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.copy_measure import percentile
from bench.freshness_pipeline import COLLECTION, OUT, REPO, Pipeline, timestamp_type
from bench.freshness_probes import (
    PARTITIONS,
    POLL_S,
    Markers,
    Star,
    TreeCpu,
    driver_rss,
    expected_views,
    ingest_lags,
)
from bench.probes import backend_cpu_seconds, cpu_seconds, load_stack_env, loadavg, run_cleaning_up
from shared.kafka import KafkaConnection, create_topics

GEN_SEED = 26
CONTINUOUS, PEER = "continuous", "incremental once a minute"


# ---------------------------------------------------------------- a run


async def wait_run(client: httpx.AsyncClient, run_id: str, timeout: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run: dict[str, Any] = (await client.get(f"/runs/{run_id}")).json()
        if run["status"] in ("succeeded", "failed"):
            return run
        await asyncio.sleep(0.5)
    raise RuntimeError(f"run {run_id} not finished in {timeout:.0f}s")


async def request_run(client: httpx.AsyncClient, halt: asyncio.Event | None = None) -> str | None:
    """``POST /runs`` incremental, retried every 0.5 s while another run is active (409)."""
    while halt is None or not halt.is_set():
        r = await client.post("/runs", json={"mode": "incremental"})
        if r.status_code == 202:
            return str(r.json()["run_id"])
        if r.status_code != 409:
            raise RuntimeError(f"POST /runs: {r.status_code} {r.text}")
        await asyncio.sleep(0.5)
    return None


async def minute_cadence(client: httpx.AsyncClient, t0: float, halt: asyncio.Event, requested: list[dict[str, Any]]) -> None:
    """The peer: an incremental run requested at every whole minute after ``t0`` (at once after a
    run that overran its minute)."""
    k = 1
    while not halt.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(halt.wait(), max(0.0, t0 + 60 * k - time.monotonic()))
        if halt.is_set():
            return
        due = time.monotonic()
        run_id = await request_run(client, halt)
        if run_id is not None:
            requested.append({"minute": k, "run_id": run_id, "waited_s": round(time.monotonic() - due, 1)})
        k = max(k + 1, int((time.monotonic() - t0) // 60) + 1)


async def warm_up(mode: str, client: httpx.AsyncClient, markers: Markers, star: Star, timeout: float = 300) -> float:
    """Continuous mode on (or a first incremental run), until a round of markers is counted:
    Spark started, the first (full) read done. Returns the seconds it took."""
    t = time.monotonic()
    warm = {m.product_id: m for m in await markers.send_round("warm")}
    if mode == CONTINUOUS:
        r = await client.put("/continuous")
        if r.status_code != 200:
            raise RuntimeError(f"PUT /continuous: {r.status_code} {r.text}")
    while time.monotonic() - t < timeout:
        if mode == PEER:
            await asyncio.sleep(3)  # the sink's visibility lease and the ETL's 2 s skew margin
            run_id = await request_run(client)
            assert run_id is not None
            run = await wait_run(client, run_id)
            if run["status"] != "succeeded":
                print(f"  warm-up run {run_id} {run['status']}: {run.get('error')}", flush=True)
        else:
            await asyncio.sleep(POLL_S)
        await star.poll(warm)
        if all(m.seen_at is not None for m in warm.values()):
            return time.monotonic() - t
    raise RuntimeError(f"warm-up: markers not counted in {timeout:.0f}s")


async def continuous_status(client: httpx.AsyncClient) -> dict[str, Any]:
    status: dict[str, Any] = (await client.get("/continuous")).json()
    return status


async def run_summary(dsn: str, schema: str, t_from: datetime) -> dict[str, Any]:
    """The runs (micro-batches) since ``t_from``: counts by status, durations, failures and their errors."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            f"""SELECT run_id::text AS run_id, mode, status, error, started_at, finished_at,
                       extract(epoch FROM finished_at - started_at)::float8 AS seconds, reconciliation, timings
                FROM "{schema}".etl_runs WHERE requested_at >= $1 ORDER BY requested_at""",
            t_from,
        )
    finally:
        await conn.close()
    seconds = sorted(r["seconds"] for r in rows if r["status"] == "succeeded" and r["seconds"] is not None)
    reads = [json.loads(r["reconciliation"]).get("events_read", 0) for r in rows if r["reconciliation"]]
    timings = [json.loads(r["timings"]) for r in rows if r["status"] == "succeeded" and r["timings"]]
    phases = {}
    for phase in ("spark_start_seconds", "extract_seconds", "transform_seconds", "load_seconds"):
        values = sorted(float(t[phase]) for t in timings if isinstance(t.get(phase), int | float))
        if values:
            phases[phase.removesuffix("_seconds")] = {"p50_s": round(percentile(values, 0.5), 2), "max_s": round(values[-1], 2)}
    return {
        "runs": len(rows),
        "by_status": {s: sum(1 for r in rows if r["status"] == s) for s in sorted({r["status"] for r in rows})},
        "seconds_p50": round(percentile(seconds, 0.5), 2) if seconds else None,
        "seconds_max": round(seconds[-1], 2) if seconds else None,
        "events_read_max": max(reads, default=0),
        "phases": phases,
        "failed": [
            {"run_id": r["run_id"], "finished_at": str(r["finished_at"]), "error": (r["error"] or "")[:800]}
            for r in rows
            if r["status"] == "failed"
        ],
    }


def quantiles(values: list[float]) -> dict[str, float | None]:
    v = sorted(values)
    if not v:
        return {"p50_s": None, "p95_s": None, "p99_s": None, "max_s": None, "mean_s": None}
    return {
        "p50_s": round(percentile(v, 0.5), 2),
        "p95_s": round(percentile(v, 0.95), 2),
        "p99_s": round(percentile(v, 0.99), 2),
        "max_s": round(v[-1], 2),
        "mean_s": round(sum(v) / len(v), 2),
    }


async def one_run(
    args: argparse.Namespace, mode: str, rate: int, views: int, base: str, remote: KafkaConnection, local: KafkaConnection
) -> dict[str, Any]:
    tag = f"{base}_{'c' if mode == CONTINUOUS else 'p'}{rate}"
    dsn = os.environ["POSTGRES_DSN"]
    p = Pipeline(tag, f"{tag}.remote")
    prefix = f"freshness-{tag}-"
    count = int(rate * args.seconds)
    result: dict[str, Any] = {"rate": rate, "mode": mode, "seconds": args.seconds, "tag": tag, "load_start": loadavg()}
    print(f"\n== {mode} at {rate} events/s for {args.seconds} s ({tag}), load {result['load_start']}", flush=True)
    await create_topics(
        remote, [p.remote_topic], partitions=PARTITIONS, replication_factor=1, configs={"message.timestamp.type": "LogAppendTime"}
    )
    result["remote_timestamp_type"] = await timestamp_type(remote, p.remote_topic)
    markers = Markers(remote, p.remote_topic, prefix)
    star = Star(dsn, p.schema, prefix)
    halt = asyncio.Event()
    tasks: list[asyncio.Task[Any]] = []
    gen: asyncio.subprocess.Process | None = None
    try:
        await markers.start()
        await p.start(local)
        await star.start()
        assert p.api is not None
        async with p.client() as client:
            result["warm_up_s"] = round(await warm_up(mode, client, markers, star), 1)
            warm = await continuous_status(client) if mode == CONTINUOUS else {}
            worker_pid = warm.get("pid")
            # the driver JVM's heap after the warm-up's last micro-batch (etl_api.spark.jvm_memory)
            heap0 = (warm.get("last_batches") or [{}])[0].get("driver_jvm")
            cpu = TreeCpu(p.api.pid)
            cpu.start()
            cpu0, by0 = cpu.total()
            api0, db0 = cpu_seconds(p.api.pid), backend_cpu_seconds()
            rss0 = driver_rss(worker_pid) if worker_pid else (float("nan"), float("nan"))
            t_from = datetime.now(UTC)
            driver = f"; worker pid {worker_pid}, driver RSS {rss0[0]:.0f} + {rss0[1]:.0f} MB (Python + JVM)" if worker_pid else ""
            print(f"  warm in {result['warm_up_s']} s{driver}", flush=True)

            # traffic: the generator at `rate` and a marker per partition every second
            gen_out = OUT / f"{tag}.eventgen.out"  # not .json: bench/results/*.json are committed
            argv = [sys.executable, "-m", "eventgen", "--count", str(count), "--seed", str(GEN_SEED), "--topic", p.remote_topic]
            argv += ["--rate", str(rate), "--now", "--partitions", str(PARTITIONS), "--no-progress"]
            t0 = time.monotonic()
            with gen_out.open("wb") as out, (OUT / f"{tag}.eventgen.log").open("ab") as err:
                gen = await asyncio.create_subprocess_exec(*argv, env=dict(os.environ), stdout=out, stderr=err, cwd=REPO)
            tasks.append(asyncio.create_task(star.watch(markers.all, halt)))
            requested: list[dict[str, Any]] = []
            cadence = asyncio.Event()
            if mode == PEER:
                tasks.append(asyncio.create_task(minute_cadence(client, t0, cadence, requested)))
            loads: list[list[float]] = []

            async def progress(what: str) -> None:
                seen = [m.freshness_s for m in markers.all.values() if m.freshness_s is not None and "warm" not in m.product_id]
                q = quantiles([s for s in seen if s is not None])
                loads.append([round(time.monotonic() - t0), *(round(x, 1) for x in os.getloadavg())])
                extra = ""
                if mode == CONTINUOUS:
                    st = await continuous_status(client)
                    extra = f", worker {st['state']} batches {st['batches']} behind {st['behind_seconds']} s"
                print(
                    f"  t+{loads[-1][0]}s {what}: {len(seen)} markers counted, p50 {q['p50_s']} max {q['max_s']}{extra}, load {loadavg()}",
                    flush=True,
                )

            sending = asyncio.create_task(markers.every_second(t0, args.seconds))
            while not sending.done():
                await asyncio.wait([sending], timeout=30)
                await progress("traffic")
            measured = sending.result()
            await gen.wait()
            result["traffic_s"] = round(time.monotonic() - t0, 1)
            summary = json.loads(gen_out.read_text() or "{}")
            if gen.returncode != 0 or summary.get("total") != count:
                raise RuntimeError(f"eventgen exited {gen.returncode} with {summary}; see {OUT}/{tag}.eventgen.log")
            result["generator"] = {k: summary.get(k) for k in ("total", "counts", "seconds", "events_per_s")}

            # drain: every marker counted and the total reached (or the timeout); the poller goes on
            expected = views + len(markers.all)
            deadline = time.monotonic() + args.drain_timeout
            total, drained, next_report = -1, False, time.monotonic() + 30
            while time.monotonic() < deadline:
                total = await star.total()
                drained = total >= expected and all(m.seen_at is not None for m in measured)
                if drained:
                    break
                if time.monotonic() > next_report:
                    await progress(f"drain, {total:,}/{expected:,} views counted")
                    next_report += 30
                await asyncio.sleep(1)
            result["drain_s"] = round(time.monotonic() - t0 - result["traffic_s"], 1)
            result["drained"] = drained
            cadence.set()
            if mode == PEER:
                await p.quiesce(client, None, args.drain_timeout)  # the run that counted the last events has exited
            cpu1, by_comm = cpu.total()
            cpu.halt.set()
            api1, db1 = cpu_seconds(p.api.pid), backend_cpu_seconds()
            rss1 = driver_rss(worker_pid) if worker_pid else (float("nan"), float("nan"))
            result["load_end"] = loadavg()
            counted_at_drain = total
            # one more chance to count something twice
            if mode == CONTINUOUS:
                await asyncio.sleep(3 * float((await continuous_status(client))["interval_s"]))
                result["continuous_status"] = {
                    k: v for k, v in (await continuous_status(client)).items() if k not in ("last_batches", "owner_token", "host")
                }
                result["continuous_status"]["last_batches"] = (await continuous_status(client))["last_batches"][:5]
                result["driver_jvm_start_end"] = [heap0, (result["continuous_status"]["last_batches"] or [{}])[0].get("driver_jvm")]
            else:
                run_id = await request_run(client)
                assert run_id is not None
                await wait_run(client, run_id)
                result["requested"] = requested
            halt.set()
            await asyncio.gather(*tasks)
            tasks.clear()
            await star.poll(markers.all)
            counted_after = await star.total()
            result["load_samples"] = loads  # [seconds since the traffic started, load 1/5/15 min]
            result["etl_runs"] = await run_summary(dsn, p.schema, t_from)
            uri = os.environ.get("MONGODB_URI", "mongodb://127.0.0.1:27017/")
            lags = await ingest_lags(uri, p.database, COLLECTION, {m.product_id: m for m in measured})

        events = count + len(measured)
        fresh = [m.freshness_s for m in measured if m.freshness_s is not None]
        types = sorted({m.timestamp_type for m in measured})
        result |= {
            "events": events,
            "markers": len(measured),
            "markers_counted": len(fresh),
            "marker_timestamp_types": ["LogAppendTime" if t == 1 else "CreateTime" for t in types],
            **quantiles([f for f in fresh if f is not None]),
            # where it went: to the sink's ingested_at (bridge + sink), and the rest (the ETL's)
            "ingest_lag": quantiles(list(lags.values())),
            "etl_part": quantiles([f - lags[m.product_id] for m in measured if (f := m.freshness_s) is not None and m.product_id in lags]),
            "expected_views": expected,
            "counted_views": counted_at_drain,
            "counted_views_after": counted_after,
            "markers_counted_twice": sorted(star.twice),
            # the final sum equals the valid views produced, never exceeded them, and every marker was counted once
            "exact": counted_at_drain <= expected and counted_after == expected and not star.twice and len(fresh) == len(measured),
            "cpu_s": round(cpu1 - cpu0, 1),
            "cpu_by_process": {k: round(v - by0.get(k, 0.0), 1) for k, v in sorted(by_comm.items()) if v - by0.get(k, 0.0) >= 0.05},
            "cpu_s_per_1000_events": round((cpu1 - cpu0) / events * 1000, 3),
            "api_cpu_s": round(api1 - api0, 1),
            "db_cpu_s": round(db1 - db0, 1),
            "rss_start_mb": round(rss0[0] + rss0[1], 1) if worker_pid else None,
            "rss_end_mb": round(rss1[0] + rss1[1], 1) if worker_pid else None,
            "rss_python_start_end_mb": [round(rss0[0], 1), round(rss1[0], 1)] if worker_pid else None,
            "rss_jvm_start_end_mb": [round(rss0[1], 1), round(rss1[1], 1)] if worker_pid else None,
        }
        if worker_pid:
            result["driver_rss_growth_pct"] = round((rss1[0] + rss1[1]) / (rss0[0] + rss0[1]) * 100 - 100, 1)
        print(
            f"  {mode} at {rate}/s: p50 {result['p50_s']} p95 {result['p95_s']} p99 {result['p99_s']} max {result['max_s']} s; "
            f"CPU {result['cpu_s']} s ({result['cpu_s_per_1000_events']}/1000 ev); counted {counted_at_drain}/{expected} "
            f"then {counted_after}; exact {result['exact']}; runs {result['etl_runs']['by_status']}; load {result['load_end']}; "
            f"ingest lag p50/p99 {result['ingest_lag']['p50_s']}/{result['ingest_lag']['p99_s']} s, "
            f"the ETL's part {result['etl_part']['p50_s']}/{result['etl_part']['p99_s']} s",
            flush=True,
        )
        for failed in result["etl_runs"]["failed"]:
            print(f"  FAILED run {failed['run_id']} at {failed['finished_at']}: {failed['error'][:300]}", flush=True)
        return result
    finally:
        halt.set()
        for task in tasks:
            task.cancel()
        if gen is not None and gen.returncode is None:
            gen.terminate()
            await gen.wait()
        await star.close()
        await markers.close()
        notes = await p.stop(dsn, remote, local, args.keep)
        result["notes"] = notes
        for note in notes:
            print(f"  note: {note}", flush=True)


def cell(value: Any) -> str:
    return "—" if value is None else f"{value}"


def table(runs: list[dict[str, Any]]) -> Iterator[str]:
    yield "| rate ev/s | mode | markers | p50 s | p95 s | p99 s | max s | ETL CPU s / 1000 ev | driver RSS start → end MB | exact |"
    yield "|---|---|---|---|---|---|---|---|---|---|"
    for r in runs:
        rss = f"{r['rss_start_mb']:.0f} → {r['rss_end_mb']:.0f} ({r['driver_rss_growth_pct']:+.1f} %)" if r.get("rss_start_mb") else "—"
        yield (
            f"| {r['rate']:,} | {r['mode']} | {r['markers_counted']}/{r['markers']} | {cell(r['p50_s'])} | {cell(r['p95_s'])} | "
            f"{cell(r['p99_s'])} | {cell(r['max_s'])} | {r['cpu_s_per_1000_events']:.2f} | {rss} | {'yes' if r['exact'] else '**no**'} |"
        )


def machine() -> dict[str, Any]:
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal:"))
    return {"nproc": os.cpu_count(), "ram_gib": round(mem_kb / 1024 / 1024, 1)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="500,2000", help="comma list of events/s")
    parser.add_argument("--seconds", type=int, default=300, help="traffic per run")
    parser.add_argument("--skip-peer", action="store_true", help="continuous mode only")
    parser.add_argument(
        "--drain-timeout", type=float, default=1200, help="after the traffic, wait at most this long for every event to be counted"
    )
    parser.add_argument("--out", type=Path, default=OUT / "freshness.json")
    parser.add_argument("--keep", action="store_true", help="keep each run's topics, MongoDB database and PostgreSQL schema")
    args = parser.parse_args()
    load_stack_env()
    from shared.settings import local_kafka_from_env, remote_kafka_from_env

    remote, local = remote_kafka_from_env(), local_kafka_from_env()
    OUT.mkdir(parents=True, exist_ok=True)
    rates = [int(r) for r in args.rates.split(",") if r]
    modes = [CONTINUOUS] if args.skip_peer else [CONTINUOUS, PEER]
    base = f"fresh_{uuid.uuid4().hex[:6]}"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    stack_type = await timestamp_type(remote, "product_views")
    out: dict[str, Any] = {
        "command": " ".join([".venv/bin/python -m bench.freshness", *sys.argv[1:]]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "machine": machine(),
        "load_average": {"start": loadavg()},
        "stack_product_views_timestamp_type": stack_type,
        "runs": [],
    }
    print(
        f"freshness {base}: rates {rates}, {args.seconds} s each, modes {modes}, at {commit}, {out['machine']}, load {loadavg()}; "
        f"the stack's remote product_views topic: message.timestamp.type={stack_type} (this bench's topics: LogAppendTime)",
        flush=True,
    )
    failures = []
    for rate in rates:
        t = time.monotonic()
        views = expected_views(int(rate * args.seconds), GEN_SEED)
        n = int(rate * args.seconds)
        print(f"{n:,} generator events at {rate}/s hold {views:,} valid views (counted in {time.monotonic() - t:.0f} s)", flush=True)
        for mode in modes:
            try:
                out["runs"].append(await one_run(args, mode, rate, views, base, remote, local))
            except Exception as exc:  # one run failing must not lose the others' results
                failures.append(f"{mode} at {rate}/s: {type(exc).__name__}: {exc}")
                print(f"FAILED {failures[-1]}", flush=True)
    out["load_average"]["end"] = loadavg()
    out["failures"] = failures
    runs = out["runs"]
    if runs:
        top = max(r["rate"] for r in runs)
        cont = next((r for r in runs if r["rate"] == top and r["mode"] == CONTINUOUS), None)
        peer = next((r for r in runs if r["rate"] == top and r["mode"] == PEER), None)
        if cont:
            out = {
                "rate": top,
                "seconds": args.seconds,
                **{k: cont.get(k) for k in ("p50_s", "p95_s", "p99_s", "max_s", "exact", "driver_rss_growth_pct", "cpu_s_per_1000_events")},
                "peer_p50_s": peer and peer["p50_s"],
                "peer_p99_s": peer and peer["p99_s"],
                "peer_exact": peer and peer["exact"],
                "peer_cpu_s_per_1000_events": peer and peer["cpu_s_per_1000_events"],
                **out,
            }
    args.out.write_text(json.dumps(out, indent=2, default=str))
    print()
    print(*table(runs), sep="\n")
    print(*failures, sep="\n")
    print(f"load average {out['load_average']['start']} → {out['load_average']['end']}; written {args.out}")


if __name__ == "__main__":
    run_cleaning_up(main())
