"""A small star schema with known rows, in its own PostgreSQL schema (seed DDL column names)."""

from __future__ import annotations

import asyncpg

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

# What the page and /api/star must show for ROWS, worked out by hand.
EXPECTED_BREAKDOWNS = {
    "views_per_day": [("2026-11-20", 15), ("2026-11-21", 10), ("2026-11-22", 20)],
    "views_per_country": [("Italy", 20), ("France", 17), ("Germany", 5), ("99", 3)],
    "views_per_referrer_medium": [("search", 30), ("social", 12), ("unknown", 3)],
    "views_per_device_type": [("mobile", 25), ("desktop", 17), ("tablet", 3)],
}
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
