"""The read-only role ``analyst`` (sql/009_roles.sql) on the stack's PostgreSQL: it reads exactly
what the owner reads in every star table and ``v_*`` view, and nothing else; every write and every
DDL statement is refused with SQLSTATE 42501 (insufficient_privilege)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import asyncpg
import pytest
from etl_api.schema import STAR_TABLES, apply_ddl

# The views of sql/006_views.sql: the list a BI tool is told about (docs/operations.md).
VIEWS = (
    "v_table_counts",
    "v_product_views_named",
    "v_daily_product_views",
    "v_daily_views_by_country",
    "v_daily_views_by_referrer_type",
    "v_daily_views_by_device_type",
)
BOOKKEEPING = (
    "etl_ddl_applied",
    "etl_runs",
    "etl_watermark",
    "etl_date_loads",
    "etl_load_generation",
    "etl_hour_reads",
    "etl_ledger_state",
    "etl_continuous",
)
INSUFFICIENT_PRIVILEGE = "42501"


@pytest.fixture
async def star_schema(pg: asyncpg.Connection, schemas: list[str], unique_name: str) -> str:
    """A schema with every migration applied by the owner, and one fact row (on the unknown
    members) so the views have something to return."""
    schema = unique_name.lower()
    schemas.append(schema)
    await apply_ddl(pg, schema)
    await pg.execute(
        f"INSERT INTO {schema}.fact_product_views (fact_key, date_key, product_key, country_key, referrer_key, device_key, "
        "view_count, unique_visitors, first_view_time, last_view_time, batch_id) "
        "VALUES (1, 0, 0, 0, 0, 0, 3, 2, '2026-05-01 10:00', '2026-05-01 10:05', 'r1')"
    )
    return schema


@pytest.fixture
async def analyst() -> AsyncIterator[asyncpg.Connection]:
    dsn = os.environ.get("ANALYST_POSTGRES_DSN")
    assert dsn, "ANALYST_POSTGRES_DSN is not set: source .stack/stack.env of a stack brought up by this version (./pipeline stack up)"
    conn = await asyncpg.connect(dsn)
    try:
        yield conn
    finally:
        await conn.close()


async def relations(pg: asyncpg.Connection, schema: str) -> dict[str, str]:
    rows = await pg.fetch(
        "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm')",
        schema,
    )
    return {r["relname"]: r["relkind"] for r in rows}


async def contents(conn: asyncpg.Connection, schema: str, rel: str) -> tuple[int, str | None]:
    row = await conn.fetchrow(f"SELECT count(*) AS n, md5(string_agg(t::text, E'\\n' ORDER BY t::text)) AS h FROM {schema}.{rel} t")
    return row["n"], row["h"]


async def refused(conn: asyncpg.Connection, sql: str) -> str:
    with pytest.raises(asyncpg.PostgresError) as err:
        await conn.execute(sql)
    return err.value.sqlstate


async def test_the_role_can_log_in_and_holds_no_attribute(analyst: asyncpg.Connection, pg: asyncpg.Connection) -> None:
    assert await analyst.fetchval("SELECT current_user") == "analyst"
    role = await pg.fetchrow(
        "SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls FROM pg_roles WHERE rolname = 'analyst'"
    )
    assert dict(role) == {
        "rolcanlogin": True,
        "rolsuper": False,
        "rolcreatedb": False,
        "rolcreaterole": False,
        "rolreplication": False,
        "rolbypassrls": False,
    }


async def test_analyst_reads_every_star_table_and_view_as_the_owner_does(
    analyst: asyncpg.Connection, pg: asyncpg.Connection, star_schema: str
) -> None:
    rels = await relations(pg, star_schema)
    star = sorted(r for r in rels if r.startswith(("dim_", "fact_", "v_")))
    # every star relation the migrations create is one this test knows (a new one needs its grant)
    assert star == sorted(STAR_TABLES + VIEWS)
    for rel in star:
        mine, owners = await contents(analyst, star_schema, rel), await contents(pg, star_schema, rel)
        assert mine == owners, rel
        assert mine[0] > 0, rel  # unknown members, the calendar, the fact row: nothing reads as empty by accident
    counts = await analyst.fetch(f"SELECT * FROM {star_schema}.v_table_counts ORDER BY 1")
    assert [tuple(r) for r in counts] == [tuple(r) for r in await pg.fetch(f"SELECT * FROM {star_schema}.v_table_counts ORDER BY 1")]
    named = await analyst.fetch(f"SELECT view_count, unique_visitors FROM {star_schema}.v_product_views_named")
    assert [tuple(r) for r in named] == [(3, 2)]


async def test_bookkeeping_tables_are_refused(analyst: asyncpg.Connection, pg: asyncpg.Connection, star_schema: str) -> None:
    rels = await relations(pg, star_schema)
    assert sorted(r for r in rels if not r.startswith(("dim_", "fact_", "v_"))) == sorted(BOOKKEEPING)
    for rel in BOOKKEEPING:
        assert await refused(analyst, f"SELECT 1 FROM {star_schema}.{rel} LIMIT 1") == INSUFFICIENT_PRIVILEGE, rel
    assert await refused(analyst, f"SELECT {star_schema}.etl_grant_analyst()") == INSUFFICIENT_PRIVILEGE


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO {s}.dim_product (product_id) VALUES ('p-new')",
        "INSERT INTO {s}.etl_runs (mode) VALUES ('full')",
        "UPDATE {s}.fact_product_views SET view_count = 0",
        "UPDATE {s}.dim_country SET region = 'x'",
        "DELETE FROM {s}.fact_product_views",
        "DELETE FROM {s}.dim_date",
        "TRUNCATE {s}.fact_product_views",
        "TRUNCATE {s}.dim_device CASCADE",
        "CREATE TABLE {s}.analyst_scratch (x int)",
        "CREATE TABLE public.analyst_scratch (x int)",
        "CREATE VIEW {s}.v_analyst AS SELECT 1 AS x",
        "DROP TABLE {s}.dim_referrer CASCADE",
        "DROP VIEW {s}.v_table_counts",
        "ALTER TABLE {s}.dim_product ADD COLUMN x int",
        "CREATE INDEX analyst_ix ON {s}.dim_product (product_name)",
        "GRANT SELECT ON {s}.etl_runs TO analyst",
        "SELECT nextval('{s}.dim_product_product_key_seq')",
        "CREATE SCHEMA analyst_own",
    ],
)
async def test_writes_and_ddl_are_refused(analyst: asyncpg.Connection, pg: asyncpg.Connection, star_schema: str, statement: str) -> None:
    before = {rel: await contents(pg, star_schema, rel) for rel in ("dim_product", "dim_date", "fact_product_views")}
    assert await refused(analyst, statement.format(s=star_schema)) == INSUFFICIENT_PRIVILEGE
    assert {rel: await contents(pg, star_schema, rel) for rel in before} == before
    assert sorted(await relations(pg, star_schema)) == sorted(STAR_TABLES + VIEWS + BOOKKEEPING)


async def test_a_table_the_owner_adds_later_is_not_granted(analyst: asyncpg.Connection, pg: asyncpg.Connection, star_schema: str) -> None:
    await pg.execute(f"CREATE TABLE {star_schema}.etl_future (x int)")
    await pg.execute(f"CREATE TABLE {star_schema}.dim_future (x int)")
    assert await refused(analyst, f"SELECT * FROM {star_schema}.etl_future") == INSUFFICIENT_PRIVILEGE
    assert await refused(analyst, f"SELECT * FROM {star_schema}.dim_future") == INSUFFICIENT_PRIVILEGE
    # a migration adding a star table ends with etl_grant_analyst(): then it is readable, etl_* still not
    await pg.execute(f"SET search_path TO {star_schema}; SELECT etl_grant_analyst(); RESET search_path")
    assert await analyst.fetch(f"SELECT * FROM {star_schema}.dim_future") == []
    assert await refused(analyst, f"SELECT * FROM {star_schema}.etl_future") == INSUFFICIENT_PRIVILEGE


async def test_re_applying_the_migrations_keeps_the_grants(analyst: asyncpg.Connection, pg: asyncpg.Connection, star_schema: str) -> None:
    await pg.execute(f"DELETE FROM {star_schema}.etl_ddl_applied")  # every file runs again
    await apply_ddl(pg, star_schema)
    assert await contents(analyst, star_schema, "v_table_counts") == await contents(pg, star_schema, "v_table_counts")
    assert await refused(analyst, f"SELECT 1 FROM {star_schema}.etl_runs") == INSUFFICIENT_PRIVILEGE
