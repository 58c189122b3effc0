-- The grain is unique; foreign keys indexed (joins, and deletes of dimension rows stay cheap).
CREATE UNIQUE INDEX IF NOT EXISTS fact_product_views_grain
    ON fact_product_views (date_key, product_key, country_key, referrer_key, device_key);
CREATE INDEX IF NOT EXISTS fact_product_views_product_key ON fact_product_views (product_key);
CREATE INDEX IF NOT EXISTS fact_product_views_country_key ON fact_product_views (country_key);
CREATE INDEX IF NOT EXISTS fact_product_views_referrer_key ON fact_product_views (referrer_key);
CREATE INDEX IF NOT EXISTS fact_product_views_device_key ON fact_product_views (device_key);
CREATE INDEX IF NOT EXISTS fact_product_views_view_count ON fact_product_views (view_count DESC);
CREATE UNIQUE INDEX IF NOT EXISTS dim_date_date ON dim_date (date);
CREATE INDEX IF NOT EXISTS dim_country_country_name ON dim_country (country_name);
CREATE INDEX IF NOT EXISTS dim_referrer_type ON dim_referrer (referrer_type);
CREATE INDEX IF NOT EXISTS dim_device_type ON dim_device (device_type);
