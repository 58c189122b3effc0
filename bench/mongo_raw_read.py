"""The ETL extract's ceiling in ``bench/etl_full_vs_incremental.py``: the same documents read with
nothing but PyMongo, serially and in parallel processes.

A full run reads the slices :func:`etl_api.extract.plan_all_tasks` plans (one Spark task per part
slice and event type, each making one equality query per part), with the job's projection, on
Spark's executors; :func:`raw_read` makes exactly those queries, with the same projection and a
larger batch size, and only decodes and counts the documents: no row conversion, no Spark, no
Python ↔ JVM transfer. ``processes=1`` is the serial read; ``processes`` = Spark's parallelism
(``local[*]``: the cores) is the partitioned read the job could at best match.
"""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from typing import Any

from etl_api.extract import READ_PROJECTION, ReadTask, plan_all_tasks, task_queries


def read_queries(uri: str, database: str, collection: str, queries: list[dict[str, Any]], batch_size: int) -> int:
    """Every document of ``queries`` (the job's projection), decoded and counted."""
    from pymongo import MongoClient
    from pymongo.collection import Collection

    client: MongoClient[dict[str, Any]]
    n = 0
    with MongoClient(uri) as client:
        coll: Collection[dict[str, Any]] = client[database][collection]
        for query in queries:
            for _ in coll.find(query, READ_PROJECTION, batch_size=batch_size):
                n += 1
    return n


def _warm(_: int) -> None:
    import pymongo  # noqa: F401

    time.sleep(0.5)  # keeps this worker busy so the next warm-up goes to another one


def full_run_tasks(types: list[str], read_parts: int) -> list[ReadTask]:
    """The tasks of a full run now (the same plan as the job's)."""
    return plan_all_tasks(datetime.now(UTC), types, read_parts)


def raw_read(
    uri: str, database: str, collection: str, tasks: list[ReadTask], processes: int, batch_size: int = 10_000
) -> tuple[float, int]:
    """(seconds, documents) to read every task's queries, ``processes`` tasks at a time in
    separate processes (one process reads all of them in order when ``processes`` is 1)."""
    t = time.monotonic()
    if processes == 1:
        n = read_queries(uri, database, collection, [q for task in tasks for q in task_queries(task)], batch_size)
        return time.monotonic() - t, n
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        # the workers' start is not the read's (Spark's Python workers are up before the read too)
        list(pool.map(_warm, range(processes)))
        t = time.monotonic()
        futures = [pool.submit(read_queries, uri, database, collection, task_queries(task), batch_size) for task in tasks]
        n = sum(f.result() for f in futures)
    return time.monotonic() - t, n
