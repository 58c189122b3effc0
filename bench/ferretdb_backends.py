"""Which FerretDB backend to run: insert throughput of SQLite vs PostgreSQL, same documents, same run.

Starts two private FerretDB 1.24.2 processes (the stack's binary) on free ports — one on a fresh
SQLite directory, one on the stack's PostgreSQL (database ``ferretdb``) — and inserts the same
event-shaped documents into each with ``insert_many(ordered=False)`` in batches, the sink's
write pattern. Prints docs/s per backend and the ratio.

    ./pipeline stack up && .venv/bin/python -m bench.ferretdb_backends --docs 50000 --batch 1000
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from pymongo import MongoClient

from bench.probes import free_port
from infra.stack import ENV_FILE, ferretdb_bin, load_env


def make_docs(n: int, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        eid = f"{i:024x}"
        docs.append(
            {
                "_id": eid,
                "event_id": eid,
                "collection": rng.choice(["view_product_detail", "view_listing_page", "select_product_option"]),
                "product_id": str(rng.randint(1000, 120000)),
                "store_id": str(rng.randint(1, 85)),
                "device_id": str(uuid.UUID(int=rng.getrandbits(128))),
                "ip": ".".join(str(rng.randint(1, 223)) for _ in range(4)),
                "user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 13_3 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko)",
                "current_url": f"https://www.glamira.de/glamira-ring-{rng.randint(1, 5000)}.html?alloy=white-585",
                "referrer_url": rng.choice(["https://www.google.com/", "", "https://www.facebook.com/"]),
                "option": [{"option_label": "alloy", "option_id": "1", "value_label": "white-585", "value_id": "2"}],
                "event_time": "2020-06-04T10:21:27.000Z",
                "local_time": "2020-06-04 12:21:27",
                "ingested_at": "2026-11-27T21:00:00.000Z",
                "ingest_hour": "2026-11-27T21",
                "event_date": "2020-06-04",
                "part": i % 16,
            }
        )
    return docs


def measure(uri: str, docs: list[dict], batch: int) -> tuple[float, float]:
    """(inserted docs/s, docs/s of the ETL's read pattern: one equality query per part)."""
    client: MongoClient = MongoClient(uri, serverSelectionTimeoutMS=10_000)
    try:
        coll = client["bench_backends"][f"c_{uuid.uuid4().hex[:8]}"]
        t0 = time.perf_counter()
        for i in range(0, len(docs), batch):
            coll.insert_many(docs[i : i + batch], ordered=False)
        inserted = len(docs) / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        read = sum(len(list(coll.find({"event_date": "2020-06-04", "part": part}))) for part in range(16))
        assert read == len(docs)
        reads = read / (time.perf_counter() - t0)
        coll.drop()
        return inserted, reads
    finally:
        client.close()


def start(argv: list[str], port: int) -> subprocess.Popen:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"FerretDB did not listen on {port}: {proc.stderr.read().decode() if proc.stderr else ''}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=50_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds per backend; the best is reported")
    args = ap.parse_args()
    if not ENV_FILE.exists():
        raise SystemExit("run ./pipeline stack up first")
    env = load_env()
    docs = make_docs(args.docs)
    binary = str(ferretdb_bin())
    results: dict[str, list[tuple[float, float]]] = {"sqlite": [], "postgresql": []}
    with tempfile.TemporaryDirectory() as tmp:
        procs = {}
        ports = {}
        for backend in results:
            port = free_port()
            state = Path(tmp) / backend
            state.mkdir()
            argv = [
                binary,
                f"--listen-addr=127.0.0.1:{port}",
                "--telemetry=disable",
                f"--state-dir={state}",
                "--debug-addr=-",
                "--log-level=error",
            ]
            if backend == "sqlite":
                argv += ["--handler=sqlite", f"--sqlite-url=file:{state}/"]
            else:
                argv += ["--handler=postgresql", f"--postgresql-url={env['POSTGRES_DSN'].rsplit('/', 1)[0]}/ferretdb"]
            procs[backend] = start(argv, port)
            ports[backend] = port
        try:
            for _ in range(args.rounds):
                for backend, port in ports.items():
                    results[backend].append(measure(f"mongodb://127.0.0.1:{port}/", docs, args.batch))
        finally:
            for p in procs.values():
                p.terminate()
                p.wait(10)
    ins = {b: max(r[0] for r in rs) for b, rs in results.items()}
    rd = {b: max(r[1] for r in rs) for b, rs in results.items()}
    print(
        f"\nFerretDB 1.24.2, {args.docs} docs; insert_many(ordered=False) batch {args.batch}; "
        f"reads: 16 equality queries {{event_date, part}} (the ETL's); best of {args.rounds}"
    )
    print(f"{'backend':<12}{'insert docs/s':>15}{'read docs/s':>15}")
    for b in results:
        print(f"{b:<12}{ins[b]:>15,.0f}{rd[b]:>15,.0f}")
    ratio_insert, ratio_read = ins["sqlite"] / ins["postgresql"], rd["sqlite"] / rd["postgresql"]
    print(f"sqlite / postgresql: insert {ratio_insert:.2f}x, read {ratio_read:.2f}x  (cpus={os.cpu_count()})")


if __name__ == "__main__":
    main()
