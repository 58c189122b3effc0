"""The ETL's read of new events: through FerretDB (PyMongo) vs FerretDB's PostgreSQL table directly.

    python -m bench.ferretdb_read [--events 20000] [--seconds 10] [--reps 3]

On the local stack (FerretDB 1.24 on PostgreSQL): ``--events`` sink documents ingested over
``--seconds`` seconds are inserted into a fresh collection with the sink's indexes and the ETL's
GIN indexes; then the same read tasks (the continuous worker's: ``{ingest_second, collection}``
equalities, :func:`etl_api.extract.plan_second_tasks`) are read both ways, in the same process,
alternating, ``--reps`` times:

- **peer**: :func:`etl_api.extract.read_task`, PyMongo through FerretDB (the read without
  ``ETL_FERRETDB_POSTGRESQL_URL``);
- **direct**: :func:`etl_api.ferretdb_rows.read_tasks_sql`, the table's rows decoded here.

Both must return the same rows (checked on every rep); reports documents/s of each, the ratio,
and writes ``bench/results/ferretdb_read.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "services" / "etl-api"), str(REPO / "services" / "sink"), str(REPO / "tools" / "eventgen")]

from etl_api.extract import plan_second_tasks, read_task  # noqa: E402
from etl_api.ferretdb import ensure_read_indexes  # noqa: E402
from etl_api.ferretdb_rows import read_tasks_sql  # noqa: E402
from etl_api.worker import SECOND_INDEX_EXPRESSIONS  # noqa: E402
from eventgen.samples import star_events  # noqa: E402
from pymongo import MongoClient  # noqa: E402
from sink.documents import IngestStamp, build_document  # noqa: E402
from sink.mongo import INDEXES  # noqa: E402

from bench.probes import load_stack_env, loadavg  # noqa: E402
from infra.stack import ferretdb_postgresql_url  # noqa: E402
from shared.event import DEFAULT_PRODUCT_VIEW_TYPES  # noqa: E402
from shared.ferretdb import ensure_collection_index  # noqa: E402

DATABASE = "bench_ferretdb_read"
OUT = REPO / "bench" / "results" / "ferretdb_read.json"


def insert(coll: Any, events: int, seconds: int, start: datetime) -> None:
    rng = random.Random(7)
    per_second = max(1, events // seconds)
    docs = []
    for i, (event, _, _) in enumerate(star_events(rng, events, [date(2026, 11, 20), date(2026, 11, 21)], start, devices=5000)):
        docs.append(build_document(event, IngestStamp.at(start + timedelta(seconds=i // per_second, microseconds=i % 1000))))
    for i in range(0, len(docs), 5000):
        coll.insert_many(docs[i : i + 5000], ordered=False)


async def indexes(pg_url: str, collection: str) -> None:
    import asyncpg

    await ensure_read_indexes(pg_url, DATABASE, collection)
    conn = await asyncpg.connect(pg_url)
    try:
        await ensure_collection_index(conn, DATABASE, collection, "etl_second_", SECOND_INDEX_EXPRESSIONS)
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    load_stack_env()
    uri, pg_url = os.environ.get("MONGODB_URI", "mongodb://127.0.0.1:27017/"), ferretdb_postgresql_url(dict(os.environ))
    collection = f"events_{uuid.uuid4().hex[:8]}"
    client: MongoClient[dict[str, Any]] = MongoClient(uri)
    coll = client[DATABASE][collection]
    load_start = loadavg()
    try:
        coll.create_indexes(list(INDEXES))
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
        insert(coll, args.events, args.seconds, start)
        asyncio.run(indexes(pg_url, collection))
        tasks = plan_second_tasks(start - timedelta(seconds=1), start + timedelta(seconds=args.seconds + 1), DEFAULT_PRODUCT_VIEW_TYPES)
        reps = []
        for rep in range(args.reps):
            t0 = time.perf_counter()
            peer = sorted((row for t in tasks for row in read_task(t, uri, DATABASE, collection)), key=str)
            t1 = time.perf_counter()
            direct = sorted(read_tasks_sql(tasks, pg_url, uri, DATABASE, collection), key=str)
            t2 = time.perf_counter()
            if direct != peer:
                raise SystemExit(f"rep {rep}: the direct read differs from the read through FerretDB ({len(direct)} vs {len(peer)} rows)")
            reps.append({"rows": len(peer), "peer_s": round(t1 - t0, 3), "direct_s": round(t2 - t1, 3)})
            print(f"rep {rep}: {len(peer)} rows, through FerretDB {t1 - t0:.2f} s, direct {t2 - t1:.2f} s", flush=True)
    finally:
        coll.drop()
        client.close()
    rows = reps[0]["rows"]
    peer_s, direct_s = sorted(r["peer_s"] for r in reps)[len(reps) // 2], sorted(r["direct_s"] for r in reps)[len(reps) // 2]
    result = {
        "command": "python -m bench.ferretdb_read " + " ".join(sys.argv[1:]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "load": f"{load_start} → {loadavg()}",
        "events": args.events,
        "rows_read": rows,
        "peer_docs_per_s": round(rows / peer_s),
        "direct_docs_per_s": round(rows / direct_s),
        "speedup": round(peer_s / direct_s, 2),
        "reps": reps,
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "reps"}, indent=1))


if __name__ == "__main__":
    main()
