"""FerretDB through PyMongo's async API, PostgreSQL through asyncpg, Spark writing to PostgreSQL."""

from __future__ import annotations

import subprocess
import sys

import asyncpg
import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import BulkWriteError

from tests.conftest import REPO

pytestmark = pytest.mark.timeout(300)


async def test_insert_many_unordered_reports_exactly_the_duplicate(mongodb_uri: str, unique_name: str) -> None:
    client: AsyncMongoClient = AsyncMongoClient(mongodb_uri, serverSelectionTimeoutMS=5000)
    try:
        coll = client["stack_tests"][unique_name]
        await coll.insert_one({"_id": "b", "v": 0})
        docs = [{"_id": "a", "v": 1}, {"_id": "b", "v": 2}, {"_id": "c", "v": 3}]
        with pytest.raises(BulkWriteError) as err:
            await coll.insert_many(docs, ordered=False)
        details = err.value.details
        assert [(e["index"], e["code"]) for e in details["writeErrors"]] == [(1, 11000)]
        assert details["nInserted"] == 2
        assert await coll.find({}, sort=[("_id", 1)]).to_list() == [{"_id": "a", "v": 1}, {"_id": "b", "v": 0}, {"_id": "c", "v": 3}]
        await coll.drop()
    finally:
        await client.close()


async def test_asyncpg_round_trip(postgres_dsn: str, unique_name: str) -> None:
    conn = await asyncpg.connect(postgres_dsn)
    try:
        await conn.execute(f"CREATE TEMP TABLE {unique_name} (id int primary key, name text)")
        await conn.copy_records_to_table(unique_name, records=[(1, "ä"), (2, None)])
        assert [tuple(r) for r in await conn.fetch(f"SELECT id, name FROM {unique_name} ORDER BY id")] == [(1, "ä"), (2, None)]
    finally:
        await conn.close()


SPARK_JOB = r"""
import os, sys
from pyspark.sql import SparkSession
from urllib.parse import urlparse
jar, table = sys.argv[1], sys.argv[2]
dsn = urlparse(os.environ["POSTGRES_DSN"])
builder = SparkSession.builder.master("local[2]").appName("stack-test").config("spark.jars", jar)
spark = builder.config("spark.ui.enabled", "false").getOrCreate()
df = spark.range(0, 1000).selectExpr("id", "id % 7 AS bucket").groupBy("bucket").count()
url = f"jdbc:postgresql://{dsn.hostname}:{dsn.port}{dsn.path}"
df.write.jdbc(url, table, mode="overwrite", properties={"user": dsn.username, "password": dsn.password, "driver": "org.postgresql.Driver"})
spark.stop()
"""


async def test_spark_local_session_writes_to_postgres(postgres_dsn: str, unique_name: str) -> None:
    jar = subprocess.run(
        [sys.executable, "-m", "infra.stack", "jdbc-jar"], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout.strip()
    res = subprocess.run([sys.executable, "-c", SPARK_JOB, jar, unique_name], capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    conn = await asyncpg.connect(postgres_dsn)
    try:
        rows = await conn.fetch(f"SELECT bucket, count FROM {unique_name} ORDER BY bucket")
        expected = [(b, len([i for i in range(1000) if i % 7 == b])) for b in range(7)]
        assert [tuple(r) for r in rows] == expected
        await conn.execute(f"DROP TABLE {unique_name}")
    finally:
        await conn.close()
