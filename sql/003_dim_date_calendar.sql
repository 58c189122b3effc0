-- dim_date as a calendar, not only the dates seen: 2015-01-01 … 2035-12-31 (the Glamira data
-- is 2020). Dates outside the calendar are added by the ETL's load with the same formulas.
-- created_at is the date itself, so the calendar is identical in every database.
INSERT INTO dim_date (date_key, date, year, month, day, day_of_week, week_of_year, quarter, is_weekend, month_name, created_at)
SELECT to_char(d, 'YYYYMMDD')::int, d::date,
       extract(year FROM d)::int, extract(month FROM d)::int, extract(day FROM d)::int,
       extract(isodow FROM d)::int, extract(week FROM d)::int, extract(quarter FROM d)::int,
       extract(isodow FROM d) >= 6, trim(to_char(d, 'Month')), d::timestamp
FROM generate_series(DATE '2015-01-01', DATE '2035-12-31', INTERVAL '1 day') AS g(d)
ON CONFLICT (date_key) DO NOTHING;
