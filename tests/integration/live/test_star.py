"""The star-schema reader on PostgreSQL: exact breakdowns for known rows (default range, filters),
names of products, one pool reused; a missing schema or empty tables give "no data yet", an
unreachable database StarUnavailable, never another exception."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import asyncpg
import pytest
from live.star import DIMENSIONS, DataRange, StarFilter, StarReader, StarUnavailable
from live.star_api import star_request

from tests.integration.live.star_fixture import (
    EXPECTED_DAYS,
    EXPECTED_RANGE,
    EXPECTED_RUN_STATUSES,
    EXPECTED_TOP,
    LAST_DAY,
    create_star,
    drop_schema,
)

pytestmark = pytest.mark.timeout(60)


def reader(dsn: str, schema: str, name: str = "live-test") -> StarReader:
    return StarReader(dsn, schema, timeout_s=5, pool_max=2, application_name=name)


async def test_known_rows_give_exact_breakdowns_and_runs(postgres_dsn: str, unique_name: str) -> None:
    await create_star(postgres_dsn, unique_name)
    star = reader(postgres_dsn, unique_name)
    try:
        req = await star_request(star, 7, None, None, None, None)
        assert req.filter == StarFilter(date(2026, 11, 16), LAST_DAY)
        assert replace(req.data, loaded_at=None) == DataRange(**EXPECTED_RANGE)  # type: ignore[arg-type]
        assert req.data.loaded_at is not None  # the rows' processed_at: written just now, UTC
        assert abs(req.data.loaded_at - datetime.now(UTC).replace(tzinfo=None)) < timedelta(minutes=5)
        assert {d: await star.top(d, req.filter, 10) for d in DIMENSIONS} == EXPECTED_TOP
        assert await star.views_per_day(req.filter) == EXPECTED_DAYS
        # Filters: France on the 21st-22nd holds one fact (p1, social, desktop, 7 views).
        france = StarFilter(date(2026, 11, 21), LAST_DAY, "France", None)
        assert await star.top("product", france, 10) == [("p1", "ring", 7)]
        assert await star.top("medium", france, 10) == [("social", "social", 7)]
        assert await star.views_per_day(france) == [(date(2026, 11, 21), 7), (LAST_DAY, 0)]
        # Mobile over everything: p2 in Germany (5) and Italy (20); top-1 keeps the largest.
        mobile = StarFilter(date(2026, 11, 1), LAST_DAY, None, "mobile")
        assert await star.top("country", mobile, 10) == [("Italy", "Italy", 20), ("Germany", "Germany", 5)]
        assert await star.top("country", mobile, 1) == [("Italy", "Italy", 20)]
        # The unnamed store is filtered by its label, the store id.
        assert await star.top("device", StarFilter(date(2026, 11, 21), LAST_DAY, "99", None), 10) == [("tablet", "tablet", 3)]
        assert await star.product_names(["p1", "p2", "p9"]) == {"p1": "ring", "p2": "necklace"}
        runs = await star.recent_runs(10)
        assert [r["status"] for r in runs] == EXPECTED_RUN_STATUSES
        assert runs[1] == {
            "run_id": "00000000-0000-0000-0000-000000000002",
            "mode": "incremental",
            "status": "failed",
            "requested_at": "2026-11-22T11:00:00Z",
            "started_at": "2026-11-22T11:00:01Z",
            "finished_at": "2026-11-22T11:01:00Z",
            "error": "MongoDB unreachable",
        }
        assert star.pools_created == 1
    finally:
        await star.close()
        await drop_schema(postgres_dsn, unique_name)


async def test_one_pool_of_read_only_connections_is_reused(postgres_dsn: str, unique_name: str) -> None:
    await create_star(postgres_dsn, unique_name)
    star = reader(postgres_dsn, unique_name, name=unique_name)
    conn = await asyncpg.connect(postgres_dsn)
    try:
        flt = StarFilter(date(2026, 11, 16), LAST_DAY)
        await star.top("product", flt, 10)
        sql = "SELECT pid FROM pg_stat_activity WHERE application_name = $1 ORDER BY pid"
        before = [r["pid"] for r in await conn.fetch(sql, unique_name)]
        for _ in range(20):
            await star.top("country", flt, 10)
            await star.views_per_day(flt)
        assert [r["pid"] for r in await conn.fetch(sql, unique_name)] == before and len(before) == 1
        assert star.pools_created == 1
        pool = await star.pool()
        with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
            await pool.execute(f"DELETE FROM {unique_name}.fact_product_views")
    finally:
        await star.close()
        await conn.close()
        await drop_schema(postgres_dsn, unique_name)


async def test_empty_tables_and_a_missing_schema_are_no_data(postgres_dsn: str, unique_name: str) -> None:
    await create_star(postgres_dsn, unique_name, rows=False)
    empty, missing = reader(postgres_dsn, unique_name), reader(postgres_dsn, unique_name + "_missing")
    flt = StarFilter(date(2026, 11, 16), LAST_DAY)
    try:
        for star in (empty, missing):
            assert await star.data_range() == DataRange(None, None, [], [])
            assert (await star_request(star, 7, None, None, None, None)).filter is None
            assert [await star.top(d, flt, 10) for d in DIMENSIONS] == [[], [], [], []]
            assert await star.views_per_day(flt) == []
            assert await star.recent_runs(10) == []
    finally:
        await empty.close()
        await missing.close()
        await drop_schema(postgres_dsn, unique_name)


async def test_an_unreachable_database_is_star_unavailable() -> None:
    star = reader("postgresql://nobody:x@127.0.0.1:9/none", "public")
    with pytest.raises(StarUnavailable, match=r"^PostgreSQL unavailable: ConnectionRefusedError$"):
        await star.data_range()
    with pytest.raises(StarUnavailable, match=r"^no POSTGRES_DSN configured$"):
        await StarReader(None, "public", timeout_s=1).data_range()


async def test_etl_runs_the_role_may_not_read_are_reported_as_such(postgres_dsn: str, unique_name: str) -> None:
    """A read-only analyst role is granted the star schema, not etl_runs: the breakdowns still
    work and the runs are "not readable", not "no runs" (simulated: the owner revokes its own SELECT)."""
    await create_star(postgres_dsn, unique_name)
    conn = await asyncpg.connect(postgres_dsn)
    await conn.execute(f"REVOKE SELECT ON {unique_name}.etl_runs FROM CURRENT_USER")
    star = reader(postgres_dsn, unique_name)
    try:
        assert await star.recent_runs(10) is None
        assert await star.top("device", StarFilter(date(2026, 11, 16), LAST_DAY), 10) == EXPECTED_TOP["device"]
    finally:
        await star.close()
        await conn.close()
        await drop_schema(postgres_dsn, unique_name)
