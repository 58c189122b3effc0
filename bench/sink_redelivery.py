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

``--stored`` measures the same batch size in one growing collection at each of the given sizes
(other events stored first, in chunks): a redelivered batch's cost must not grow with the
collection (every query on the sink's per-batch path is served by an index).

    .venv/bin/python -m bench.sink_redelivery --documents 5000 20000
    .venv/bin/python -m bench.sink_redelivery --documents 5000 --stored 0 250000 1000000
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
Row = tuple[int, int, dict[str, dict[str, float]]]  # (stored before, batch size, per writer)


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


def writer_for(uri: str, collection: str) -> MongoWriter:
    url = ferretdb_postgresql_url(dict(os.environ)) if ferretdb_backend() == "postgresql" else None
    return MongoWriter(SinkSettings(mongodb_uri=uri, mongodb_database=DATABASE, mongodb_collection=collection, ferretdb_postgresql_url=url))


async def redelivered(writer: MongoWriter, docs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """``docs`` stored, then written again by the sink and by ``insert_many``: both timed."""
    n = len(docs)
    await writer.insert([dict(d) for d in docs])
    again = [dict(d, ingested_at="2030-01-01T00:00:00.000Z") for d in docs]

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

    out: dict[str, dict[str, float]] = {}
    for name, work in (("sink", sink), ("insert_many", plain)):
        wall, cpu, stall = await timed(work)
        out[name] = {"wall_s": wall, "cpu_us_per_doc": 1e6 * cpu / n, "loop_stall_ms": 1000 * stall}
    return out


def stamped(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    stamp = IngestStamp.at(datetime.now(UTC))
    return [build_document(e, stamp) for e in events]


async def by_batch_size(uri: str, sizes: list[int]) -> list[Row]:
    rows = []
    for n in sizes:
        writer = writer_for(uri, f"c{n}")
        await writer.prepare()
        try:
            rows.append((0, n, await redelivered(writer, stamped(bridged_events(n, seed=n)))))
        finally:
            await writer.collection.drop()
            await writer.close()
    return rows


async def by_collection_size(uri: str, n: int, stored: list[int], chunk: int = 20_000) -> list[Row]:
    """One collection grown to each size of ``stored`` (filler events, seeds from 1 000), a fresh
    batch of ``n`` (seed 60 000 + level) stored and redelivered at each."""
    writer = writer_for(uri, "grown")
    await writer.collection.drop()
    await writer.prepare()
    rows, count, seed = [], 0, 1000
    try:
        for level, size in enumerate(sorted(stored)):
            while count < size:
                take = min(chunk, size - count)
                outcome = await writer.insert(stamped(bridged_events(take, seed=seed)))
                assert outcome.inserted == take, outcome
                count, seed = count + take, seed + 1
            rows.append((count, n, await redelivered(writer, stamped(bridged_events(n, seed=60_000 + level)))))
            count += n
    finally:
        await writer.collection.drop()
        await writer.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, nargs="+", default=[5000, 20000], help="redelivered batch sizes")
    parser.add_argument("--stored", type=int, nargs="+", help="collection sizes to measure the (first) batch size at")
    args = parser.parse_args()
    uri = os.environ["MONGODB_URI"]
    if args.stored:
        rows = asyncio.run(by_collection_size(uri, args.documents[0], args.stored))
    else:
        rows = asyncio.run(by_batch_size(uri, args.documents))
    print(f"{'stored before':>13} | {'documents':>9} | {'writer':<11} | {'wall s':>7} | {'CPU µs/doc':>10} | {'loop stall ms':>13}")
    for stored, n, result in rows:
        for name, row in result.items():
            cost = f"{row['wall_s']:>7.2f} | {row['cpu_us_per_doc']:>10.0f} | {row['loop_stall_ms']:>13.0f}"
            print(f"{stored:>13} | {n:>9} | {name:<11} | {cost}")


if __name__ == "__main__":
    main()
