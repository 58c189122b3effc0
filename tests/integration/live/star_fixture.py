"""A small star schema with known rows, in its own PostgreSQL schema (seed DDL column names)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, timedelta

import asyncpg

from tests.conftest import REPO

DDL = """
CREATE SCHEMA {s};
CREATE TABLE {s}.dim_date (date_key INTEGER PRIMARY KEY, date DATE NOT NULL, year INTEGER NOT NULL, month INTEGER NOT NULL,
    day INTEGER NOT NULL, day_of_week INTEGER NOT NULL, week_of_year INTEGER NOT NULL, quarter INTEGER NOT NULL,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP);
CREATE TABLE {s}.dim_product (product_key BIGSERIAL PRIMARY KEY, product_id VARCHAR(255) UNIQUE NOT NULL, product_name VARCHAR(500),
    category VARCHAR(255), is_active BOOLEAN DEFAULT TRUE, created_date DATE, created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP);
CREATE TABLE {s}.dim_country (country_key BIGSERIAL PRIMARY KEY, store_id VARCHAR(255) UNIQUE NOT NULL, country_name VARCHAR(255),
    region VARCHAR(255), created_date DATE, created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP);
CREATE TABLE {s}.dim_referrer (referrer_key BIGSERIAL PRIMARY KEY, referrer_url TEXT UNIQUE NOT NULL, referrer_domain VARCHAR(500),
    referrer_type VARCHAR(255), created_date DATE, created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP);
CREATE TABLE {s}.dim_device (device_key BIGSERIAL PRIMARY KEY, device_id VARCHAR(255) UNIQUE NOT NULL, device_type VARCHAR(255),
    browser_info TEXT, created_date DATE, created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP);
CREATE TABLE {s}.fact_product_views (fact_key BIGSERIAL PRIMARY KEY, date_key INTEGER REFERENCES {s}.dim_date(date_key),
    product_key BIGINT REFERENCES {s}.dim_product(product_key), country_key BIGINT REFERENCES {s}.dim_country(country_key),
    referrer_key BIGINT REFERENCES {s}.dim_referrer(referrer_key), device_key BIGINT REFERENCES {s}.dim_device(device_key),
    view_count INTEGER NOT NULL DEFAULT 0, unique_visitors INTEGER NOT NULL DEFAULT 0, view_duration_seconds INTEGER,
    first_view_time TIMESTAMP, last_view_time TIMESTAMP, avg_view_timestamp DOUBLE PRECISION,
    processed_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP, data_source VARCHAR(255) DEFAULT 'kafka_mongodb', batch_id VARCHAR(255));
CREATE TABLE {s}.etl_runs (run_id UUID PRIMARY KEY, mode TEXT NOT NULL, date_from DATE, date_to DATE, status TEXT NOT NULL,
    phase TEXT, requested_at TIMESTAMPTZ NOT NULL DEFAULT now(), started_at TIMESTAMPTZ, finished_at TIMESTAMPTZ,
    counts JSONB, error TEXT);
"""

ROWS = """
INSERT INTO {s}.dim_date VALUES (20261120, '2026-11-20', 2026, 11, 20, 5, 47, 4), (20261121, '2026-11-21', 2026, 11, 21, 6, 47, 4),
    (20261122, '2026-11-22', 2026, 11, 22, 7, 47, 4);
INSERT INTO {s}.dim_product (product_key, product_id, product_name) VALUES (1, 'p1', 'ring'), (2, 'p2', 'necklace');
INSERT INTO {s}.dim_country (country_key, store_id, country_name) VALUES (1, '6', 'France'), (2, '7', 'Germany'), (3, '12', 'Italy'),
    (4, '99', NULL);
INSERT INTO {s}.dim_referrer (referrer_key, referrer_url, referrer_type) VALUES (1, 'https://www.google.com/', 'search'),
    (2, 'https://facebook.com/', 'social'), (3, '', NULL);
INSERT INTO {s}.dim_device (device_key, device_id, device_type) VALUES (1, 'd1', 'desktop'), (2, 'd2', 'mobile'), (3, 'd3', 'tablet');
INSERT INTO {s}.fact_product_views (date_key, product_key, country_key, referrer_key, device_key, view_count, unique_visitors) VALUES
    (20261120, 1, 1, 1, 1, 10, 4), (20261120, 2, 2, 2, 2, 5, 5), (20261121, 1, 1, 2, 1, 7, 2), (20261121, 1, 4, 3, 3, 3, 1),
    (20261122, 2, 3, 1, 2, 20, 9);
INSERT INTO {s}.etl_runs (run_id, mode, status, requested_at, started_at, finished_at, error) VALUES
    ('00000000-0000-0000-0000-000000000001', 'full', 'succeeded', '2026-11-22 10:00Z', '2026-11-22 10:00:01Z', '2026-11-22 10:02Z', NULL),
    ('00000000-0000-0000-0000-000000000002', 'incremental', 'failed', '2026-11-22 11:00Z', '2026-11-22 11:00:01Z', '2026-11-22 11:01Z',
     'MongoDB unreachable'),
    ('00000000-0000-0000-0000-000000000003', 'incremental', 'running', '2026-11-22 12:00Z', '2026-11-22 12:00:01Z', NULL, NULL);
"""

# What the star API must answer for ROWS, worked out by hand (the facts span 2026-11-20..22).
LAST_DAY = date(2026, 11, 22)
EXPECTED_RANGE = {"first": date(2026, 11, 20), "last": LAST_DAY, "countries": ["Italy", "France", "Germany", "99"]}
EXPECTED_RANGE["devices"] = ["mobile", "desktop", "tablet"]
# The default range (the 7 days up to 2026-11-22) holds every fact: (key, name, views).
EXPECTED_TOP = {
    "product": [("p2", "necklace", 25), ("p1", "ring", 20)],
    "country": [("Italy", "Italy", 20), ("France", "France", 17), ("Germany", "Germany", 5), ("99", "99", 3)],
    "medium": [("search", "search", 30), ("social", "social", 12), ("unknown", "unknown", 3)],
    "device": [("mobile", "mobile", 25), ("desktop", "desktop", 17), ("tablet", "tablet", 3)],
}
EXPECTED_DAYS = [(date(2026, 11, d), 0) for d in range(16, 20)] + [(date(2026, 11, 20), 15), (date(2026, 11, 21), 10), (LAST_DAY, 20)]
EXPECTED_RUN_STATUSES = ["running", "failed", "succeeded"]  # newest first


async def create_star(dsn: str, schema: str, *, rows: bool = True) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(DDL.format(s=schema))
        if rows:
            await conn.execute(ROWS.format(s=schema))
    finally:
        await conn.close()


async def drop_schema(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await conn.close()


@dataclass(frozen=True)
class Fact:
    day: date
    product_id: str
    product_name: str | None
    store_id: str
    country_name: str | None
    referrer_type: str | None
    device_type: str | None
    views: int


async def create_random_star(dsn: str, schema: str, *, seed: int, last: date, days: int = 40) -> list[Fact]:
    """A demo-sized star (about 2 000 facts over ``days`` days up to ``last``, some days without
    facts, unnamed products/countries and NULL media/device types among them) in the seed DDL.
    Returns the facts as written, for the test's own arithmetic."""
    rng = random.Random(seed)
    products = [(f"p{i:03d}", None if i % 13 == 5 else f"Glamira {rng.choice(['Ring', 'Pendant', 'Bracelet'])} {i:03d}") for i in range(60)]
    countries = [("6", "France"), ("7", "Germany"), ("12", "Italy"), ("25", "Spain"), ("29", "Poland"), ("41", "Austria"), ("99", None)]
    media = [("https://www.google.com/", "search"), ("https://facebook.com/", "social"), ("https://mail.example/", "email")]
    media += [("https://ads.example/?gclid=1", "paid"), ("", None)]
    devices = [(f"d{i}", t) for i, t in enumerate(["desktop", "mobile", "tablet", "bot", None])]
    all_days = [last - timedelta(days=i) for i in range(days)]
    used_days = [d for i, d in enumerate(all_days) if i == 0 or i % 9 != 4]  # a few days without facts
    cells: dict[tuple[date, int, int, int, int], int] = {}
    for _ in range(2400):
        day, product, country = rng.choice(used_days), int(len(products) * rng.random() ** 2), rng.randrange(len(countries))
        cells[(day, product, country, rng.randrange(len(media)), rng.randrange(len(devices)))] = rng.randint(1, 40)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(DDL.format(s=schema))
        await conn.executemany(
            f"INSERT INTO {schema}.dim_date (date_key, date, year, month, day, day_of_week, week_of_year, quarter) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            [
                (int(d.strftime("%Y%m%d")), d, d.year, d.month, d.day, d.isoweekday(), d.isocalendar()[1], (d.month - 1) // 3 + 1)
                for d in all_days
            ],
        )
        await conn.executemany(
            f"INSERT INTO {schema}.dim_product (product_key, product_id, product_name) VALUES ($1, $2, $3)",
            [(i + 1, pid, name) for i, (pid, name) in enumerate(products)],
        )
        await conn.executemany(
            f"INSERT INTO {schema}.dim_country (country_key, store_id, country_name) VALUES ($1, $2, $3)",
            [(i + 1, sid, name) for i, (sid, name) in enumerate(countries)],
        )
        await conn.executemany(
            f"INSERT INTO {schema}.dim_referrer (referrer_key, referrer_url, referrer_type) VALUES ($1, $2, $3)",
            [(i + 1, url, medium) for i, (url, medium) in enumerate(media)],
        )
        await conn.executemany(
            f"INSERT INTO {schema}.dim_device (device_key, device_id, device_type) VALUES ($1, $2, $3)",
            [(i + 1, did, dtype) for i, (did, dtype) in enumerate(devices)],
        )
        await conn.executemany(
            f"INSERT INTO {schema}.fact_product_views (date_key, product_key, country_key, referrer_key, device_key, view_count) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            [(int(d.strftime("%Y%m%d")), p + 1, c + 1, m + 1, v + 1, n) for (d, p, c, m, v), n in cells.items()],
        )
        await conn.execute(ROWS[ROWS.index("INSERT INTO {s}.etl_runs") :].format(s=schema))
    finally:
        await conn.close()
    return [
        Fact(d, products[p][0], products[p][1], countries[c][0], countries[c][1], media[m][1], devices[v][1], n)
        for (d, p, c, m, v), n in cells.items()
    ]


async def grant_analyst(dsn: str, schema: str) -> None:
    """What the ETL does to its schema: sql/009_roles.sql grants the read-only role analyst
    SELECT on the star relations (dim_*, fact_*, v_*) of the schema, nothing else."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"SET search_path TO {schema}")
        await conn.execute((REPO / "sql" / "009_roles.sql").read_text())
    finally:
        await conn.close()
