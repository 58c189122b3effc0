-- Views answering the seed's example questions.

-- "Check Star Schema data": rows per table.
CREATE OR REPLACE VIEW v_table_counts AS
SELECT 'dim_date' AS table_name, COUNT(*) AS count FROM dim_date
UNION ALL SELECT 'dim_product', COUNT(*) FROM dim_product
UNION ALL SELECT 'dim_country', COUNT(*) FROM dim_country
UNION ALL SELECT 'dim_referrer', COUNT(*) FROM dim_referrer
UNION ALL SELECT 'dim_device', COUNT(*) FROM dim_device
UNION ALL SELECT 'fact_product_views', COUNT(*) FROM fact_product_views;

-- "Sample Star Schema query": facts with their dimension names (ORDER BY view_count DESC LIMIT 10).
CREATE OR REPLACE VIEW v_product_views_named AS
SELECT f.fact_key, d.date, p.product_id, p.product_name, c.country_name, c.region,
       r.referrer_domain, r.referrer_type, dv.device_type, f.view_count, f.unique_visitors
FROM fact_product_views f
JOIN dim_date d ON f.date_key = d.date_key
JOIN dim_product p ON f.product_key = p.product_key
JOIN dim_country c ON f.country_key = c.country_key
JOIN dim_referrer r ON f.referrer_key = r.referrer_key
JOIN dim_device dv ON f.device_key = dv.device_key;

-- Views and distinct visitors per product and day (visitors: distinct known devices).
CREATE OR REPLACE VIEW v_daily_product_views AS
SELECT d.date, p.product_id, p.product_name, SUM(f.view_count) AS views,
       COUNT(DISTINCT f.device_key) FILTER (WHERE f.device_key <> 0) AS unique_visitors
FROM fact_product_views f
JOIN dim_date d ON f.date_key = d.date_key
JOIN dim_product p ON f.product_key = p.product_key
GROUP BY d.date, p.product_id, p.product_name;

CREATE OR REPLACE VIEW v_daily_views_by_country AS
SELECT d.date, c.country_name, c.region, SUM(f.view_count) AS views,
       COUNT(DISTINCT f.device_key) FILTER (WHERE f.device_key <> 0) AS unique_visitors
FROM fact_product_views f
JOIN dim_date d ON f.date_key = d.date_key
JOIN dim_country c ON f.country_key = c.country_key
GROUP BY d.date, c.country_name, c.region;

CREATE OR REPLACE VIEW v_daily_views_by_referrer_type AS
SELECT d.date, r.referrer_type, SUM(f.view_count) AS views
FROM fact_product_views f
JOIN dim_date d ON f.date_key = d.date_key
JOIN dim_referrer r ON f.referrer_key = r.referrer_key
GROUP BY d.date, r.referrer_type;

CREATE OR REPLACE VIEW v_daily_views_by_device_type AS
SELECT d.date, dv.device_type, SUM(f.view_count) AS views,
       COUNT(DISTINCT f.device_key) FILTER (WHERE f.device_key <> 0) AS unique_visitors
FROM fact_product_views f
JOIN dim_date d ON f.date_key = d.date_key
JOIN dim_device dv ON f.device_key = dv.device_key
GROUP BY d.date, dv.device_type;
