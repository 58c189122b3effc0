-- Star schema: every table and column of the seed's DDL, plus what correctness needs.
-- Re-runnable: applied by the ETL service at every start, inside the schema named by
-- ETL_PG_SCHEMA (search_path is set by the service; no schema name appears here).
--
-- Surrogate keys: the BIGSERIAL columns keep their sequences (ad-hoc inserts stay safe), but
-- the ETL assigns keys itself, max(key) + row_number() over the natural key, inside its load
-- transaction, and then moves the sequence forward. A rolled-back (killed) run therefore burns
-- no keys, and a re-run assigns exactly the keys one clean run would. Keys, once assigned, never
-- change: dimensions are only upserted, never truncated.

CREATE TABLE IF NOT EXISTS dim_date (
    date_key INTEGER PRIMARY KEY,          -- YYYYMMDD; 0 = unknown member
    date DATE NOT NULL,
    year INTEGER NOT NULL,
    month INTEGER NOT NULL,
    day INTEGER NOT NULL,
    day_of_week INTEGER NOT NULL,          -- ISO: 1 = Monday … 7 = Sunday
    week_of_year INTEGER NOT NULL,         -- ISO week
    quarter INTEGER NOT NULL,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
ALTER TABLE dim_date ADD COLUMN IF NOT EXISTS is_weekend BOOLEAN;
ALTER TABLE dim_date ADD COLUMN IF NOT EXISTS month_name VARCHAR(16);

CREATE TABLE IF NOT EXISTS dim_product (
    product_key BIGSERIAL PRIMARY KEY,
    product_id VARCHAR(255) UNIQUE NOT NULL,
    product_name VARCHAR(500),             -- from the product page URL slug ("glamira-pendant-viktor" → "Glamira Pendant Viktor")
    category VARCHAR(255),                 -- jewellery type named in the slug (ring, pendant, …), else NULL
    is_active BOOLEAN DEFAULT TRUE,
    created_date DATE,                     -- first event date on which the product was viewed
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
ALTER TABLE dim_product ADD COLUMN IF NOT EXISTS product_slug VARCHAR(500);

CREATE TABLE IF NOT EXISTS dim_country (
    country_key BIGSERIAL PRIMARY KEY,
    store_id VARCHAR(255) UNIQUE NOT NULL,
    country_name VARCHAR(255),             -- from the store's site domain (glamira.fr → France), see etl_api/data/site_countries.csv
    region VARCHAR(255),
    created_date DATE,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
ALTER TABLE dim_country ADD COLUMN IF NOT EXISTS site_domain VARCHAR(255);
ALTER TABLE dim_country ADD COLUMN IF NOT EXISTS country_code CHAR(2);

CREATE TABLE IF NOT EXISTS dim_referrer (
    referrer_key BIGSERIAL PRIMARY KEY,
    referrer_url TEXT UNIQUE NOT NULL,     -- '' = no referrer (the key-0 member, "direct")
    referrer_domain VARCHAR(500),          -- registered domain (public-suffix aware): www.google.com.vn → google.com.vn
    referrer_type VARCHAR(255),            -- medium: search | social | email | paid | internal | direct | other
    created_date DATE,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE IF NOT EXISTS dim_device (
    device_key BIGSERIAL PRIMARY KEY,
    device_id VARCHAR(255) UNIQUE NOT NULL, -- the visitor cookie
    device_type VARCHAR(255),               -- desktop | mobile | tablet | bot | other (from the user agent)
    browser_info TEXT,                      -- "Chrome 83.0 / Windows 10"
    created_date DATE,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
ALTER TABLE dim_device ADD COLUMN IF NOT EXISTS browser VARCHAR(255);
ALTER TABLE dim_device ADD COLUMN IF NOT EXISTS os VARCHAR(255);

CREATE TABLE IF NOT EXISTS fact_product_views (
    fact_key BIGSERIAL PRIMARY KEY,         -- date_key * 1e9 + n: rank in a date written whole, appended by merges
    date_key INTEGER REFERENCES dim_date(date_key),
    product_key BIGINT REFERENCES dim_product(product_key),
    country_key BIGINT REFERENCES dim_country(country_key),
    referrer_key BIGINT REFERENCES dim_referrer(referrer_key),
    device_key BIGINT REFERENCES dim_device(device_key),

    -- Measures (see README "Measures")
    view_count INTEGER NOT NULL DEFAULT 0,
    unique_visitors INTEGER NOT NULL DEFAULT 0,
    view_duration_seconds INTEGER,

    -- Timestamps (UTC)
    first_view_time TIMESTAMP,
    last_view_time TIMESTAMP,
    avg_view_timestamp DOUBLE PRECISION,
    processed_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,

    -- Metadata
    data_source VARCHAR(255) DEFAULT 'kafka_mongodb',
    batch_id VARCHAR(255)                   -- run_id of the run that wrote the row
);
-- a fact never points to NULL: unknown members (key 0) exist in every dimension
ALTER TABLE fact_product_views ALTER COLUMN date_key SET NOT NULL;
ALTER TABLE fact_product_views ALTER COLUMN product_key SET NOT NULL;
ALTER TABLE fact_product_views ALTER COLUMN country_key SET NOT NULL;
ALTER TABLE fact_product_views ALTER COLUMN referrer_key SET NOT NULL;
ALTER TABLE fact_product_views ALTER COLUMN device_key SET NOT NULL;
-- The exact integer sum of the group's event times (UTC epoch ms): avg_view_timestamp is derived
-- from it, and it is what lets an incremental run merge new events into existing rows exactly
-- (a stored average cannot be merged). NULL only in rows written before the column existed; an
-- incremental run recomputes such a date from all its events instead of merging into it.
ALTER TABLE fact_product_views ADD COLUMN IF NOT EXISTS view_time_sum_ms BIGINT;

-- Which event a member's attributes come from: zero-padded epoch ms ':' event_id of the latest
-- event carrying them. An upsert overwrites attributes only with newer evidence, so a
-- dimension's attributes are those of the latest event ever loaded, whatever the run order
-- (an incremental run with only old-date events cannot roll a device back to an older browser).
ALTER TABLE dim_product ADD COLUMN IF NOT EXISTS attributes_source VARCHAR(100);
ALTER TABLE dim_country ADD COLUMN IF NOT EXISTS attributes_source VARCHAR(100);
ALTER TABLE dim_device ADD COLUMN IF NOT EXISTS attributes_source VARCHAR(100);
