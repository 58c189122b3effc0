-- The continuous worker merges every micro-batch into the facts of today's date. Both checks for
-- rows that cannot be merged exactly (written before view_time_sum_ms existed) read this small
-- partial index instead of every row of the date.
CREATE INDEX IF NOT EXISTS fact_product_views_unmergeable ON fact_product_views (date_key) WHERE view_time_sum_ms IS NULL;
