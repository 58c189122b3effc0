"""A redelivered batch: what ``N`` documents the sink has already stored cost when they come again
(a restart or rebalance re-reads what was written but not committed), on the stack's store.

Compared in one run, on the same documents in the same collection:
- ``sink``: :func:`sink.writes.write_documents` through :class:`sink.mongo.MongoWriter` as the
  sink runs it (on FerretDB with ``SINK_FERRETDB_POSTGRESQL_URL``: stored ids asked of the table,
  copies read from it and compared in a worker thread);
- ``insert_many`` (the peer, what a plain writer does): ``insert_many(ordered=False)`` of the same
  batch, every document refused as a duplicate by the store, nothing compared.

Reported: wall seconds, this process's CPU µs per document, and the longest stall of the event
loop (a 10 ms ticker), which is what the sink's health endpoint and heartbeats wait for.

    .venv/bin/python -m bench.sink_redelivery --documents 5000 20000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from eventgen.samples import bridged_events
from pymongo.errors import BulkWriteError
from sink.documents import IngestStamp, build_document
from sink.mongo import MongoWriter
from sink.settings import SinkSettings
from sink.writes import WallClock, write_documents

from infra.stack import ferretdb_backend, ferretdb_postgresql_url

DATABASE = "bench_redelivery"


async def timed(work: Callable[[], Awaitable[Any]]) -> tuple[float, float, float]:
    """(wall s, CPU s of this process, longest event-loop stall s) of ``work``."""
    worst, stop = 0.0, False

    async def tick() -> None:
        nonlocal worst
        last = time.perf_counter()
        while not stop:
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            worst, last = max(worst, now - last - 0.01), now

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.05)
    cpu, wall = time.process_time(), time.perf_counter()
    await work()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    stop = True
    await ticker
    return wall, cpu, worst


async def one_size(uri: str, n: int) -> dict[str, dict[str, float]]:
    env = dict(os.environ)
    url = ferretdb_postgresql_url(env) if ferretdb_backend() == "postgresql" else None
    writer = MongoWriter(SinkSettings(mongodb_uri=uri, mongodb_database=DATABASE, mongodb_collection=f"c{n}", ferretdb_postgresql_url=url))
    await writer.prepare()
    try:
        docs = [build_document(e, IngestStamp.at(datetime.now(UTC))) for e in bridged_events(n, seed=n)]
        await writer.insert([dict(d) for d in docs])
        again = [dict(d, ingested_at="2030-01-01T00:00:00.000Z") for d in docs]
        out: dict[str, dict[str, float]] = {}

        async def sink() -> None:
            result = await write_documents(writer, [dict(d) for d in again], attempts=WallClock())
            assert len(result.duplicates) == n and not result.conflicts and not result.inserted, "not all duplicates"

        async def plain() -> None:
            try:
                await writer.collection.insert_many([dict(d) for d in again], ordered=False)
            except BulkWriteError as exc:
                codes = {e["code"] for e in exc.details["writeErrors"]}
                assert len(exc.details["writeErrors"]) == n and codes == {11000}, codes
            else:
                raise AssertionError("the store took duplicates")

        for name, work in (("sink", sink), ("insert_many", plain)):
            wall, cpu, stall = await timed(work)
            out[name] = {"wall_s": wall, "cpu_us_per_doc": 1e6 * cpu / n, "loop_stall_ms": 1000 * stall}
        return out
    finally:
        await writer.collection.drop()
        await writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, nargs="+", default=[5000, 20000])
    args = parser.parse_args()
    uri = os.environ["MONGODB_URI"]
    print(f"{'documents':>9} | {'writer':<11} | {'wall s':>7} | {'CPU µs/doc':>10} | {'loop stall ms':>13}")
    for n in args.documents:
        for name, row in asyncio.run(one_size(uri, n)).items():
            print(f"{n:>9} | {name:<11} | {row['wall_s']:>7.2f} | {row['cpu_us_per_doc']:>10.0f} | {row['loop_stall_ms']:>13.0f}")


if __name__ == "__main__":
    main()
