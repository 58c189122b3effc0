"""How a run reads: the raw rows into Spark, partition counts, the one-pass row and date count,
the rows back out to the load in async chunks, and the dates that must be recomputed rather
than merged. Used by :mod:`etl_api.job`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import date
from typing import Any

import asyncpg
import pymongo
import pymongo.errors
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from etl_api import extract, transform
from etl_api.ferretdb_rows import any_document_sql, read_tasks_sql
from etl_api.load import date_key
from etl_api.settings import EtlSettings

log = logging.getLogger("etl_api.job")


def _rss_peak_mb(pid: int | str = "self") -> float | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def read_events(spark: SparkSession, settings: EtlSettings, tasks: list[extract.ReadTask], partitions: int = 0) -> DataFrame:
    """The raw rows of every task, one Spark partition per task, read on the executors; spread
    over ``partitions`` partitions (a streaming shuffle) when that is more than the tasks."""
    uri, db, coll = settings.mongodb_uri, settings.mongodb_database, settings.mongodb_collection
    if not tasks:
        return spark.createDataFrame([], transform.RAW_SCHEMA)
    pg = settings.ferretdb_postgresql_url.get_secret_value() if settings.ferretdb_postgresql_url else None
    if pg is not None:  # FerretDB on PostgreSQL: its table read directly (etl_api.ferretdb_rows)
        read: Callable[[extract.ReadTask], Iterator[tuple[str | None, ...]]] = lambda task: read_tasks_sql([task], pg, uri, db, coll)  # noqa: E731
    else:
        read = lambda task: extract.read_task(task, uri, db, coll)  # noqa: E731
    rdd = spark.sparkContext.parallelize(tasks, len(tasks)).flatMap(read)
    df = spark.createDataFrame(rdd, transform.RAW_SCHEMA)
    # hashed on event_id (a round-robin repartition would sort every read partition first)
    return df.repartition(partitions, "event_id") if partitions > len(tasks) else df


def any_new_document(settings: EtlSettings, tasks: list[extract.ReadTask]) -> bool:
    """Whether any task would read a document: the continuous worker's probe, in the driver."""
    uri, db, coll = settings.mongodb_uri, settings.mongodb_database, settings.mongodb_collection
    if settings.ferretdb_postgresql_url is not None:
        return any_document_sql(tasks, settings.ferretdb_postgresql_url.get_secret_value(), uri, db, coll)
    return extract.any_document(tasks, uri, db, coll)


def read_partitions(documents: int, rows_per_partition: int) -> int:
    """Spark partitions for reading ``documents``: none under ``rows_per_partition`` each."""
    return -(-documents // rows_per_partition)


def shuffle_partitions(setting: int, read: int) -> int:
    """Shuffle partitions for a full run: never fewer than its read partitions, so the rows per
    aggregated partition stay bounded as the collection grows."""
    return max(setting, read)


def estimated_documents(settings: EtlSettings) -> int:
    """The collection's document count from its storage statistics (``collStats``: MongoDB's
    metadata, PostgreSQL's row estimate under FerretDB); 0 when unknown. Not
    ``estimated_document_count()``: FerretDB 1.24 answers it by reading every document (minutes
    for a million, which first doubled a 1 M-event full run's extract)."""
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(settings.mongodb_uri, serverSelectionTimeoutMS=10_000)
    try:
        return int(client[settings.mongodb_database].command("collStats", settings.mongodb_collection).get("count", 0))
    except pymongo.errors.PyMongoError as exc:
        log.warning("could not estimate the collection's size (%s): one Spark partition per read task", exc)
        return 0
    finally:
        client.close()


def count_by_date(df: DataFrame, never_counted: Column | None = None) -> tuple[int, list[date]]:
    """Rows of ``df`` and its distinct non-null ``event_date`` values, sorted: one Spark job (was a
    count and a distinct, two passes). ``never_counted``: rows that can never be counted (an
    implausible event time); a date that has only such rows is not listed (its sink date, e.g.
    2099-01-01, would otherwise become a touched date and a ``dim_date`` row)."""
    if never_counted is None:
        rows = df.groupBy("event_date").count().collect()
        return sum(int(r["count"]) for r in rows), sorted(r["event_date"] for r in rows if r["event_date"] is not None)
    counts = df.groupBy("event_date").agg(
        F.count(F.lit(1)).alias("count"), F.count(F.when(~F.coalesce(never_counted, F.lit(False)), 1)).alias("countable")
    )
    rows = counts.collect()
    return sum(int(r["count"]) for r in rows), sorted(r["event_date"] for r in rows if r["event_date"] is not None and r["countable"])


async def _chunks(rows: Iterator[Any], size: int, convert: Callable[[Any], tuple[Any, ...]]) -> AsyncIterator[list[tuple[Any, ...]]]:
    """Spark's row iterator (blocking, one partition in memory at a time) as async chunks."""

    def next_chunk() -> list[tuple[Any, ...]]:
        out = []
        for row in rows:
            out.append(convert(row))
            if len(out) >= size:
                break
        return out

    while True:
        chunk = await asyncio.to_thread(next_chunk)
        if not chunk:
            return
        yield chunk


async def unmergeable_dates(conn: asyncpg.Connection, dates: list[date]) -> list[date]:
    """Of ``dates``, those with fact rows written before ``view_time_sum_ms`` existed (NULL): their
    facts cannot be merged with new events exactly, so the run recomputes them from all events."""
    rows = await conn.fetch(
        """SELECT DISTINCT to_date(date_key::text, 'YYYYMMDD') AS d FROM fact_product_views
           WHERE date_key = ANY($1::int[]) AND view_time_sum_ms IS NULL ORDER BY 1""",
        [date_key(d) for d in dates],
    )
    return [r["d"] for r in rows]
