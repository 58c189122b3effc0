"""What one micro-batch costs when 100, 1 000 or 10 000 events are new, beside a one-off run.

    python -m bench.microbatch_cost [--base 200000] [--sizes 100,1000,10000] [--reps 3]

On the local stack (FerretDB with its read indexes, PostgreSQL): a collection of ``--base``
sink documents ingested over the last 72 hours is loaded by a full run; then

- **continuous**: the worker (``python -m etl_api.worker``, launched as the API's supervisor does:
  the ``etl_continuous`` row taken over with a token of the bench's) runs with its warm Spark
  session; for each size, that many documents are inserted with one ``ingested_at`` a few seconds
  ahead, so they become visible together and one micro-batch reads exactly them. Its split
  (extract, transform, load, total) comes from ``GET /continuous``'s ``last_batches`` row in
  ``etl_continuous``;
- **one-off** (the peer, the existing way): the worker stopped, the same number of documents
  inserted, then ``python -m etl_api.job`` for an incremental run (process and Spark start
  included in its wall time).

Writes ``bench/results/microbatch_cost.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "services" / "etl-api"), str(REPO / "services" / "sink"), str(REPO / "tools" / "eventgen")]

import asyncpg  # noqa: E402
from etl_api.schema import apply_ddl  # noqa: E402
from eventgen.samples import star_events  # noqa: E402
from pymongo import MongoClient  # noqa: E402
from sink.documents import IngestStamp, build_document  # noqa: E402
from sink.mongo import INDEXES  # noqa: E402

from bench.etl_full_vs_incremental import insert_events, past_stamps, run_job  # noqa: E402
from bench.probes import load_stack_env, loadavg  # noqa: E402
from infra.stack import ferretdb_postgresql_url  # noqa: E402
from shared.event import DEFAULT_PRODUCT_VIEW_TYPES  # noqa: E402

DATES = [date(2026, 11, 20) + timedelta(days=i) for i in range(14)]


def insert_visible_together(coll: Any, n: int, seed: int, ahead_s: float) -> int:
    """n documents stamped with one instant ``ahead_s`` from now: visible to the ETL together
    (0: stamped now, for a run started after the insert)."""
    stamp = datetime.now(UTC) + timedelta(seconds=ahead_s)
    rng = random.Random(seed)
    docs = [build_document(e, IngestStamp.at(stamp)) for e, _, _ in star_events(rng, n, DATES, stamp, devices=5000)]
    for i in range(0, n, 2000):
        coll.insert_many(docs[i : i + 2000], ordered=False)
    if ahead_s > 0 and datetime.now(UTC) >= stamp:
        raise SystemExit(f"inserting {n} documents took longer than {ahead_s}s: raise --ahead")
    return sum(1 for d in docs if d.get("collection") in DEFAULT_PRODUCT_VIEW_TYPES)  # what a run reads of them


async def wait_batch(conn: asyncpg.Connection, schema: str, n: int, seen: int, timeout: float = 300) -> dict[str, Any]:
    """The micro-batch after ``seen`` batches that read n events."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = await conn.fetchrow(f'SELECT batches, last_batches FROM "{schema}".etl_continuous WHERE id = 1')
        if row and row["batches"] > seen:
            for b in json.loads(row["last_batches"]):
                if b["events_read"] == n:
                    return dict(b) | {"batches": row["batches"]}
        await asyncio.sleep(0.2)
    raise SystemExit(f"no micro-batch read {n} events within {timeout}s")


def start_worker(env: dict[str, str], token: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "etl_api.worker", "--owner-token", token], env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=int, default=200_000)
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--ahead", type=float, default=8.0, help="seconds ahead the inserted documents are stamped")
    parser.add_argument("--out", default=str(REPO / "bench/results/microbatch_cost.json"))
    args = parser.parse_args()
    load_stack_env()
    sizes = [int(s) for s in args.sizes.split(",")]
    uid = uuid.uuid4().hex[:8]
    db, collection, schema = "bench_microbatch", f"events_{uid}", f"bench_mb_{uid}"
    dsn = os.environ["POSTGRES_DSN"]
    env = {
        **os.environ,
        "MONGODB_DATABASE": db,
        "MONGODB_COLLECTION": collection,
        "ETL_PG_SCHEMA": schema,
        "ETL_SETTLE_SECONDS": "1",
        "ETL_SPARK_SHUFFLE_PARTITIONS": "4",
        "ETL_CONTINUOUS_INTERVAL_S": "1",
        "ETL_HEARTBEAT_SECONDS": "2",
        "ETL_FERRETDB_POSTGRESQL_URL": str(ferretdb_postgresql_url(dict(os.environ))),
    }
    client: MongoClient[dict[str, Any]] = MongoClient(os.environ["MONGODB_URI"])
    coll = client[db][collection]
    coll.create_indexes(list(INDEXES))
    conn = await asyncpg.connect(dsn)
    worker: subprocess.Popen[bytes] | None = None
    load_start = loadavg()
    try:
        await apply_ddl(conn, schema)
        t = insert_events(coll, args.base, DATES, past_stamps(datetime.now(UTC) - timedelta(minutes=5)), 1, batch=2000, in_flight=2)
        print(f"{args.base} base documents in {t:.1f}s", flush=True)
        full = await run_job(dsn, schema, "full", env)
        print(f"full run over the base: {full['wall']:.1f}s", flush=True)

        token = f"bench:{os.getpid()}:{uid}"
        await conn.execute(
            f'UPDATE "{schema}".etl_continuous SET desired = true, owner_token = $1, heartbeat_at = now() WHERE id = 1',
            token,
        )
        log = Path(f"/tmp/microbatch_cost_{uid}.log")
        worker = start_worker(env, token, log)
        rows: list[dict[str, Any]] = []
        seed = 100
        seen = 0
        # warm-up: the worker's first micro-batch with events runs the heal check too
        await wait_batch(conn, schema, insert_visible_together(coll, 10, seed, args.ahead), 0)
        for n in sizes:
            for rep in range(args.reps):
                seed += 1
                row = await conn.fetchrow(f'SELECT batches FROM "{schema}".etl_continuous WHERE id = 1')
                seen = int(row["batches"])
                b = await wait_batch(conn, schema, insert_visible_together(coll, n, seed, args.ahead), seen)
                rows.append({"mode": "continuous", "events": n, "rep": rep, **{k: b.get(k) for k in PHASES}, "total": b["seconds"]})
                print(f"continuous {n:>6} rep {rep}: {b['seconds']:.2f}s {[b.get(k) for k in PHASES]}", flush=True)
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
        worker = None
        await conn.execute(f'UPDATE "{schema}".etl_continuous SET desired = false WHERE id = 1')
        for n in sizes:
            for rep in range(args.reps):
                seed += 1
                readable = insert_visible_together(coll, n, seed, 0.0)
                await asyncio.sleep(1.5)  # past ETL_SETTLE_SECONDS: visible to the run
                r = await run_job(dsn, schema, "incremental", env)
                if r["rec"]["events_new"] != readable:
                    raise SystemExit(f"the one-off run read {r['rec']['events_new']} new events, not {readable}")
                tm = r["timings"]
                rows.append(
                    {
                        "mode": "one-off",
                        "events": n,
                        "rep": rep,
                        **{k: tm.get(k) for k in PHASES},
                        "spark_start_seconds": tm.get("spark_start_seconds"),
                        "total": round(r["wall"], 3),
                    }
                )
                print(f"one-off    {n:>6} rep {rep}: {r['wall']:.2f}s {[tm.get(k) for k in PHASES]}", flush=True)
    finally:
        if worker is not None:
            worker.kill()
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()
        client[db].drop_collection(collection)
        client.close()
    summary = summarize(rows)
    result = {
        "command": "python -m bench.microbatch_cost " + " ".join(sys.argv[1:]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores",
        "load": f"{load_start} → {loadavg()}",
        "base_events": args.base,
        "summary": summary,
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print_table(summary, result)


PHASES = ("extract_seconds", "transform_seconds", "load_seconds")


def median(values: list[float]) -> float:
    s = sorted(values)
    return s[len(s) // 2] if len(s) % 2 else (s[len(s) // 2 - 1] + s[len(s) // 2]) / 2


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for mode in ("continuous", "one-off"):
        for n in sorted({r["events"] for r in rows}):
            mine = [r for r in rows if r["mode"] == mode and r["events"] == n]
            if mine:
                keys = (*PHASES, "total")
                out.append({"mode": mode, "events": n, **{k: round(median([float(r[k] or 0) for r in mine]), 3) for k in keys}})
    return out


def print_table(summary: list[dict[str, Any]], result: dict[str, Any]) -> None:
    print(f"\n{result['command']} — {result['date']}, {result['machine']}, load {result['load']}, base {result['base_events']} events")
    print("| new events | mode | extract s | transform s | load s | total s |")
    print("|---|---|---|---|---|---|")
    for s in summary:
        print(
            f"| {s['events']:,} | {s['mode']} | {s['extract_seconds']:.2f} | {s['transform_seconds']:.2f} | "
            f"{s['load_seconds']:.2f} | {s['total']:.2f} |"
        )


if __name__ == "__main__":
    asyncio.run(main())
