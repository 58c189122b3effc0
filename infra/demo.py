"""The end-to-end run a new user starts with (``./pipeline demo``).

Starts the services on the running local stack, the ETL in **continuous mode**
(``ETL_CONTINUOUS=true``: a worker turns new MongoDB documents into the star schema in
micro-batches every ``--interval`` seconds), streams a realistic batch of events (with a
fraction of malformed ones, event times over the last ``--days`` whole UTC days) from the
generator to the remote topic, then a live stream of events stamped with the current time
(``eventgen --now``, ``--live-seconds`` at ``--live-rate``) so the live page's event-time windows
fill while it runs; meanwhile it prints how far behind the star schema is (``GET /continuous``)
and how many views it counts. It waits until bridge and sink copied everything and the star
schema caught up, measures the end-to-end freshness (``--markers`` marker events, each a product
view of a product of its own produced to the remote topic: the time from the remote broker's
acknowledgement until ``fact_product_views`` counts it), runs the Airflow DAG ``pipeline_v1``
for real (``airflow dags test``; with continuous mode on it checks the worker and reconciles,
without a one-off run), then prints the star schema: row counts per table, the top product views
with date, product, country, referrer domain and device type, and its freshness as the API and
the live page say it.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from infra import services
from infra.stack import HOME, REPO, StackError, load_env
from shared.kafka import create_topics
from shared.settings import remote_kafka_from_env

AIRFLOW_BIN = REPO / ".venv-airflow" / "bin" / "airflow"  # Airflow 3 (the default)
AIRFLOW2_BIN = REPO / ".venv-airflow2" / "bin" / "airflow"  # Airflow 2.10 (compatibility)
TABLES = ("dim_date", "dim_product", "dim_country", "dim_referrer", "dim_device", "fact_product_views")
TOP_VIEWS = """
SELECT d.date, p.product_name, c.country_name, r.referrer_domain, dv.device_type, f.view_count, f.unique_visitors
FROM fact_product_views f
JOIN dim_date d ON f.date_key = d.date_key
JOIN dim_product p ON f.product_key = p.product_key
JOIN dim_country c ON f.country_key = c.country_key
JOIN dim_referrer r ON f.referrer_key = r.referrer_key
JOIN dim_device dv ON f.device_key = dv.device_key
ORDER BY f.view_count DESC, d.date, p.product_name
LIMIT 10
"""


def step(n: int, total: int, text: str) -> None:
    print(f"\n\033[1m[{n}/{total}] {text}\033[0m", flush=True)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def wait_until(what: str, check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            ok, last = check()
            if ok:
                print(f"    {what}: {last}", flush=True)
                return
        except OSError as exc:
            last = str(exc)
        print(f"    waiting for {what}: {last}", end="\r", flush=True)
        time.sleep(1)
    raise StackError(f"{what} not reached within {timeout:.0f}s (last: {last})")


def produce_events(count: int, seed: int, bad_fraction: float, topic: str, *, start: date, days: int) -> Any:
    import eventgen

    records = eventgen.generate(count, seed=seed, bad_fraction=bad_fraction, start=start, days=days)
    return asyncio.run(eventgen.produce(records, remote_kafka_from_env(), topic, progress=True))


def stream_now(seconds: int, rate: float, seed: int, topic: str, *, progress: bool = True) -> Any:
    """``seconds × rate`` valid events whose event times are the moment each is produced."""
    import eventgen
    from eventgen.now import stamp_now

    count = int(seconds * rate)
    records = stamp_now(eventgen.generate(count, seed=seed))
    return asyncio.run(eventgen.produce(records, remote_kafka_from_env(), topic, rate=rate, progress=progress, total=count))


def etl_url(path: str) -> str:
    return f"http://127.0.0.1:{services.SERVICES['etl-api'].base_port}{path}"


def put_continuous(token: str) -> dict[str, Any]:
    """``PUT /continuous``: continuous mode on (idempotent: an ETL API started without
    ``ETL_CONTINUOUS`` — already running before the demo — is asked too)."""
    request = urllib.request.Request(etl_url("/continuous"), method="PUT", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        body: dict[str, Any] = json.loads(resp.read())
    return body


async def star_views(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT coalesce(sum(view_count), 0) FROM fact_product_views"))
    except asyncpg.UndefinedTableError:
        return 0
    finally:
        await conn.close()


def freshness_line(status: dict[str, Any], views: int) -> str:
    """``star schema 4 s behind, 37 micro-batches, 18,204 views counted (worker running)``."""
    behind = status.get("behind_seconds")
    ahead = "not loaded yet" if behind is None else f"{behind:.0f} s behind"
    worker = status.get("state") or "?"
    if status.get("reason"):
        worker += f": {str(status['reason']).splitlines()[0][:80]}"
    return f"star schema {ahead}, {status.get('batches', 0)} micro-batches, {views:,} views counted (worker {worker})"


class FreshnessPrinter:
    """Prints :func:`freshness_line` every ``every`` seconds from a thread, while events stream."""

    def __init__(self, dsn: str, every: float) -> None:
        self.dsn, self.every = dsn, every
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> FreshnessPrinter:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)

    def _run(self) -> None:
        while not self.stop.wait(self.every):
            try:
                print(f"    {freshness_line(get_json(etl_url('/continuous')), asyncio.run(star_views(self.dsn)))}", flush=True)
            except (OSError, asyncpg.PostgresError) as exc:
                print(f"    (freshness not readable: {type(exc).__name__}: {exc})", flush=True)


def star_caught_up(dsn: str, target: datetime) -> tuple[bool, str]:
    """The worker is running and its star schema counts every event visible up to ``target``."""
    status = get_json(etl_url("/continuous"))
    as_of = datetime.fromisoformat(status["star_as_of"]) if status.get("star_as_of") else None
    done = bool(status.get("ready")) and as_of is not None and as_of >= target
    return done, freshness_line(status, asyncio.run(star_views(dsn)))


def marker_record(seed: int, n: int) -> Any:
    """One valid product view (a browser's, not a crawler's) of a product of its own, stamped now."""
    import eventgen
    from eventgen.catalog import BOT_AGENTS
    from eventgen.now import restamp

    from shared.event import DEFAULT_PRODUCT_VIEW_TYPES

    for record in eventgen.generate(400, seed=seed + 1000 + n):
        event = record.event
        if (
            record.kind == "glamira"
            and record.collection in DEFAULT_PRODUCT_VIEW_TYPES
            and event
            and event.get("user_agent") not in BOT_AGENTS
        ):
            event = dict(event) | {"product_id": f"demo-marker-{seed}-{n}"}
            return restamp(dataclasses.replace(record, value=json.dumps(event).encode(), event=event), time.time())
    raise StackError("no product view among the generated records")


MARKER_TIMEOUT_S = 120


async def marker_seconds(dsn: str, topic: str, seed: int, n: int) -> float:
    """Produces one marker view to the remote topic; seconds from the broker's acknowledgement
    until ``fact_product_views`` counts it (polled every 0.2 s)."""
    import eventgen

    product = f"demo-marker-{seed}-{n}"
    conn = await asyncpg.connect(dsn)
    try:
        await eventgen.produce([marker_record(seed, n)], remote_kafka_from_env(), topic, progress=False)
        acked = time.monotonic()
        while time.monotonic() - acked < MARKER_TIMEOUT_S:
            counted = await conn.fetchval(
                "SELECT coalesce(sum(f.view_count), 0) FROM fact_product_views f "
                "JOIN dim_product p ON p.product_key = f.product_key WHERE p.product_id = $1",
                product,
            )
            if counted:
                return time.monotonic() - acked
            await asyncio.sleep(0.2)
    finally:
        await conn.close()
    raise StackError(f"marker view of {product} not counted in fact_product_views within {MARKER_TIMEOUT_S}s")


def live_views(minutes: int) -> tuple[bool, str]:
    """The live service's views over the last ``minutes`` (its per-minute windows summed)."""
    live = get_json(f"http://127.0.0.1:{services.SERVICES['live'].base_port}/api/live?minutes={minutes}")
    views = sum(m["views"] for m in live["views_per_minute"])
    return views > 0, f"{views:,} views in the last {minutes} minutes"


def bridge_caught_up() -> tuple[bool, str]:
    lag = get_json(f"http://127.0.0.1:{services.SERVICES['bridge'].base_port}/lag")
    total = lag["total_lag"]
    return total == 0 and bool(lag["partitions"]), f"bridge lag {total} over {len(lag['partitions'])} partitions"


def sink_caught_up() -> tuple[bool, str]:
    lag = get_json(f"http://127.0.0.1:{services.SERVICES['sink'].base_port}/lag")
    return lag["total_lag"] == 0, f"sink lag {lag['total_lag']}"


def airflow_env(token: str, ports: dict[str, int], home: Path) -> dict[str, str]:
    """Airflow's environment: its own home, the repo's DAG folder, the services as connections."""
    home.mkdir(parents=True, exist_ok=True)
    out = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    out |= {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "airflow" / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_BRIDGE_API": f"http://127.0.0.1:{ports['bridge']}",
        "AIRFLOW_CONN_SINK_API": f"http://127.0.0.1:{ports['sink']}",
        "AIRFLOW_CONN_ETL_API": f"http://:{token}@127.0.0.1:{ports['etl-api']}",
        # dags test pokes in-process, without an executor: a short interval is safe (the DAG's
        # default, 30 s, is for a scheduler) and keeps the demo and the tests quick.
        "PIPELINE_V1_POKE_SECONDS": "5",
    }
    return out


def run_dag(
    aenv: dict[str, str],
    log_path: Path,
    *,
    echo: bool = True,
    conf: dict[str, Any] | None = None,
    logical_date: datetime | None = None,
    airflow_bin: Path = AIRFLOW_BIN,
) -> bool:
    """``airflow dags test pipeline_v1`` for real; True when the DAG run succeeded.

    ``conf`` sets the DAG's params (e.g. ``{"mode": "range", ...}``), ``logical_date`` picks the
    data interval (default: now, i.e. the interval that just ended), ``airflow_bin`` the Airflow
    (``AIRFLOW_BIN``: 3.x, ``AIRFLOW2_BIN``: 2.10). Works with both: 3.x exits non-zero when the DAG
    run failed ("DagRun failed"), 2.10 is judged by its "Marking task as FAILED" lines too."""
    migrate = subprocess.run([str(airflow_bin), "db", "migrate"], env=aenv, capture_output=True, text=True)
    if migrate.returncode != 0:
        raise StackError(f"airflow db migrate failed: {migrate.stderr[-2000:]}")
    when = (logical_date or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0).isoformat()
    with log_path.open("w") as log:
        argv = [str(airflow_bin), "dags", "test", "pipeline_v1", when]
        if conf is not None:
            argv += ["--conf", json.dumps(conf)]
        proc = subprocess.Popen(argv, env=aenv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        current, last = "?", ""
        for line in proc.stdout:
            log.write(line)
            started = STARTING_TASK.search(line)
            current = started.group(1) if started else current
            state = STATE_LINE.search(line)
            if echo and state and f"{current}: {state.group(0)}" != last:  # 2.10 prints lines twice
                last = f"{current}: {state.group(0)}"
                print(f"    {current}: {(state.group(1) or state.group(2)).lower()}", flush=True)
        rc = proc.wait()
    text = log_path.read_text()
    return rc == 0 and "DagRun failed" not in text and "failed" not in task_states(text).values()


# Both versions' ``dags test`` run one task at a time, in-process, between "[DAG TEST] starting
# task_id=x" and "[DAG TEST] end task task_id=x". Inside, Airflow 2.10 logs "Marking task as
# SUCCESS. dag_id=pipeline_v1, task_id=x, …" (and "Rescheduling task, marking task as
# UP_FOR_RESCHEDULE" without the task id; 2.10 prints most lines twice), Airflow 3 logs "Task
# instance state updated … new_state=success".
STARTING_TASK = re.compile(r"\[DAG TEST\] starting task_id=([\w.-]+)")
STATE_LINE = re.compile(r"(?:[Mm]arking task as ([A-Z_]+)\b|Task instance state updated.* new_state=([a-z_]+))")


def task_tries(text: str) -> list[tuple[str, str]]:
    """(task_id, state it ended in) for each time ``dags test`` ran a task (each poke of a
    reschedule-mode sensor is one), in order; states in lower case: success, failed, skipped,
    up_for_retry, up_for_reschedule."""
    out: list[tuple[str, str]] = []
    current: str | None = None
    state: str | None = None
    for line in text.splitlines():
        if m := STARTING_TASK.search(line):
            if current is not None and state is not None:
                out.append((current, state))
            current, state = m.group(1), None
        elif current is not None and (m := STATE_LINE.search(line)):
            state = (m.group(1) or m.group(2)).lower()
    if current is not None and state is not None:
        out.append((current, state))
    return out


def task_states(text: str) -> dict[str, str]:
    """The last state each task reached in an ``airflow dags test`` log (2.10 or 3.x)."""
    return dict(task_tries(text))


def state_changes(text: str, task_id: str) -> list[str]:
    """The state each run of ``task_id`` ended in, in order (one per poke of a reschedule sensor)."""
    return [state for task, state in task_tries(text) if task == task_id]


async def print_star_schema(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        print(f"    {'table':<22}{'rows':>10}")
        for t in TABLES:
            print(f"    {t:<22}{await conn.fetchval(f'SELECT count(*) FROM {t}'):>10,}")
        total = await conn.fetchval("SELECT coalesce(sum(view_count), 0) FROM fact_product_views")
        print(f"    sum(view_count) = {total:,}")
        rows = await conn.fetch(TOP_VIEWS)
        print("\n    top product views")
        header = ("date", "product", "country", "referrer", "device", "views", "visitors")
        widths = (12, 34, 16, 22, 10, 6, 9)
        print("    " + "".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
        for r in rows:
            cells = [str(v if v is not None else "")[: w - 1] for v, w in zip(r.values(), widths, strict=True)]
            print("    " + "".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)))
    finally:
        await conn.close()


def print_dead_letters(since: datetime) -> None:
    """This demo's dead letters, as ``./pipeline dlq stats --since`` shows them."""
    print(f"\n    dead letters of this demo (./pipeline dlq stats --since {since.isoformat(timespec='seconds')}):", flush=True)
    done = subprocess.run(
        [sys.executable, "-m", "shared.dlqtool", "stats", "--since", since.isoformat()], capture_output=True, text=True, timeout=120
    )
    for line in (done.stdout or done.stderr).splitlines():
        print(f"    {line}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=20_000, help="events to stream (default 20000)")
    ap.add_argument("--bad-fraction", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=None, help="generator seed (default: from the clock, printed)")
    ap.add_argument("--topic", default="product_views")
    ap.add_argument("--days", type=int, default=3, help="the batch's event times span the last N whole UTC days (default 3)")
    ap.add_argument("--live-seconds", type=int, default=120, help="then stream now-stamped events this long (default 120; 0: none)")
    ap.add_argument("--live-rate", type=float, default=50.0, help="events per second of that stream (default 50)")
    ap.add_argument("--interval", type=float, default=5.0, help="the continuous worker's micro-batch interval, seconds (default 5)")
    ap.add_argument("--markers", type=int, default=3, help="end-to-end freshness samples (marker events; default 3)")
    args = ap.parse_args(argv)
    seed = args.seed if args.seed is not None else int(time.time())
    start = datetime.now(UTC).date() - timedelta(days=args.days)
    env = load_env()
    os.environ.update({k: v for k, v in env.items() if k not in os.environ})
    t0 = time.monotonic()
    began = datetime.now(UTC)
    try:
        dsn = env["POSTGRES_DSN"]
        step(1, 6, f"starting the services: etl-api (continuous mode, a micro-batch every {args.interval:g} s), bridge, sink, live")
        # ETL_CONTINUOUS: the API starts the worker with the service (its warm Spark session turns
        # new documents into the star schema every interval); no settle margin to wait out.
        services.start(["etl-api"], extra_env={"ETL_CONTINUOUS": "true", "ETL_CONTINUOUS_INTERVAL_S": f"{args.interval:g}"})
        worker = put_continuous(env["ETL_API_TOKEN"])
        print(f"    continuous worker: {worker.get('state') or 'starting'} (GET {etl_url('/continuous')})")
        # The remote topic exists before the bridge subscribes to it, as it does in production.
        asyncio.run(create_topics(remote_kafka_from_env(), [args.topic], partitions=6, replication_factor=1))
        services.start(["bridge", "sink", "live"])
        step(2, 6, f"streaming {args.count:,} events (seed {seed}, {args.bad_fraction:.0%} malformed, {start} + {args.days} days)")
        manifest = produce_events(args.count, seed, args.bad_fraction, args.topic, start=start, days=args.days)
        print(f"    produced: {json.dumps(manifest.counts)}")
        step(3, 6, f"live stream: {args.live_seconds} s at {args.live_rate:g} events/s stamped with the current time (eventgen --now)")
        if args.live_seconds > 0:
            print("    meanwhile, every 20 s, the star schema (GET /continuous, sum(view_count) of fact_product_views):", flush=True)
            with FreshnessPrinter(dsn, 20):
                live_manifest = stream_now(args.live_seconds, args.live_rate, seed + 1, args.topic, progress=False)
            print(f"    produced: {json.dumps(live_manifest.counts)}")
        step(4, 6, "bridge and sink copying them (remote → local Kafka → MongoDB), the star schema catching up")
        wait_until("bridge caught up", bridge_caught_up, 600)
        wait_until("sink caught up", sink_caught_up, 600)
        if args.live_seconds > 0:
            wait_until("live counters", lambda: live_views(args.live_seconds // 60 + 2), 120)
        status = get_json(etl_url("/continuous"))
        # The ETL API's "now" (its database's clock) once the sink has stored everything: the star
        # schema has caught up when it counts every event visible up to then.
        target = datetime.now(UTC)
        if status.get("star_as_of") and status.get("behind_seconds") is not None:
            target = datetime.fromisoformat(status["star_as_of"]) + timedelta(seconds=status["behind_seconds"])
        wait_until("star schema caught up", lambda: star_caught_up(dsn, target), 600)
        if args.markers > 0:
            took = [asyncio.run(marker_seconds(dsn, args.topic, seed, n)) for n in range(args.markers)]
            for n, seconds in enumerate(took):
                print(f"    marker {n + 1}: produced → counted in fact_product_views in {seconds:.1f} s")
            print(
                f"    end-to-end freshness (remote Kafka → bridge → local Kafka → sink → MongoDB → micro-batch → PostgreSQL):"
                f" median {statistics.median(took):.1f} s, max {max(took):.1f} s over {len(took)} marker events"
            )
        step(5, 6, "Airflow 3: airflow dags test pipeline_v1 (sensors → continuous worker alive and caught up → reconciliation)")
        ports = {name: services.port_of(services.SERVICES[name], 1) for name in ("bridge", "sink", "etl-api")}
        log_path = HOME / "logs" / "airflow-dags-test.log"
        if not run_dag(airflow_env(env["ETL_API_TOKEN"], ports, HOME / "airflow"), log_path):
            raise StackError(f"the Airflow run of pipeline_v1 failed; see {log_path}")
        print(f"    pipeline_v1 succeeded (log: {log_path})")
        step(6, 6, "the star schema")
        asyncio.run(print_star_schema(dsn))
        print(f"\n    {freshness_line(get_json(etl_url('/continuous')), asyncio.run(star_views(dsn)))}")
        page = get_json(f"http://127.0.0.1:{services.SERVICES['live'].base_port}/api/star/freshness")
        print(f"    the live page says: {page['text']}")
        print_dead_letters(began)
    except StackError as exc:
        print(f"\n[demo] FAILED: {exc}", file=sys.stderr)
        return 1
    print(f"\ndone in {time.monotonic() - t0:.0f}s. Where to look:")
    for name in ("bridge", "sink", "etl-api"):
        port = services.SERVICES[name].base_port
        print(f"  {name:<8} http://127.0.0.1:{port}/metrics  /ready  {'/lag' if name != 'etl-api' else '/runs  /continuous  /docs'}")
    print(f"  page     http://127.0.0.1:{services.SERVICES['live'].base_port}/   (live counters + star schema; JSON API: /docs)")
    print(f"  logs     {HOME / 'logs'}   (./pipeline stack status; python -m infra.services status)")
    print('  psql     set -a; . .stack/stack.env; set +a; psql "$POSTGRES_DSN"')
    print(f"  airflow  AIRFLOW_HOME={HOME / 'airflow'} .venv-airflow/bin/airflow dags list-runs pipeline_v1")
    print("  stop     .venv/bin/python -m infra.services stop all && ./pipeline stack down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
