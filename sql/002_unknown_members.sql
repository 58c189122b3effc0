-- The key-0 member of each dimension: facts whose natural key is missing point here, never to NULL.
-- Natural key '' cannot collide with a real one (empty ids are normalized to NULL by the ETL).
INSERT INTO dim_date (date_key, date, year, month, day, day_of_week, week_of_year, quarter, is_weekend, month_name, created_at)
VALUES (0, DATE '1900-01-01', 1900, 1, 1, 1, 1, 1, FALSE, 'Unknown', TIMESTAMP '1900-01-01')
ON CONFLICT (date_key) DO NOTHING;

INSERT INTO dim_product (product_key, product_id, product_name, category, is_active, created_date, created_at)
VALUES (0, '', 'Unknown product', NULL, FALSE, NULL, TIMESTAMP '1900-01-01')
ON CONFLICT (product_key) DO NOTHING;

INSERT INTO dim_country (country_key, store_id, country_name, region, created_date, created_at)
VALUES (0, '', 'Unknown', 'Unknown', NULL, TIMESTAMP '1900-01-01')
ON CONFLICT (country_key) DO NOTHING;

INSERT INTO dim_referrer (referrer_key, referrer_url, referrer_domain, referrer_type, created_date, created_at)
VALUES (0, '', NULL, 'direct', NULL, TIMESTAMP '1900-01-01')
ON CONFLICT (referrer_key) DO NOTHING;

INSERT INTO dim_device (device_key, device_id, device_type, browser_info, created_date, created_at)
VALUES (0, '', 'unknown', NULL, NULL, TIMESTAMP '1900-01-01')
ON CONFLICT (device_key) DO NOTHING;
