-- Bookkeeping of the ETL: runs, the incremental watermark, and which run last loaded each date.

CREATE TABLE IF NOT EXISTS etl_runs (
    run_id UUID PRIMARY KEY,
    mode TEXT NOT NULL CHECK (mode IN ('incremental', 'full', 'range')),
    date_from DATE,                          -- range mode only
    date_to DATE,
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    phase TEXT,                              -- extract | transform | load | commit, while running
    requested_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ,
    heartbeat_at TIMESTAMPTZ,
    host TEXT,
    pid INTEGER,
    window_low TIMESTAMPTZ,                  -- new events: window_low < ingested_at <= window_high
    window_high TIMESTAMPTZ,
    touched_dates JSONB,                     -- dates whose facts this run replaced
    counts JSONB,                            -- per table: inserted / updated / deleted rows
    timings JSONB,                           -- seconds per phase, driver peak RSS
    reconciliation JSONB,                    -- events read, valid views = sum(view_count), skipped by reason
    error TEXT
);
-- At most one active run per schema, enforced by the database (POST /runs answers 409).
CREATE UNIQUE INDEX IF NOT EXISTS etl_runs_one_active ON etl_runs ((TRUE)) WHERE status IN ('queued', 'running');
CREATE INDEX IF NOT EXISTS etl_runs_requested_at ON etl_runs (requested_at DESC);

-- The incremental watermark: the window_high of the last successful incremental/full run,
-- written in the same transaction as the facts it stands for.
CREATE TABLE IF NOT EXISTS etl_watermark (
    name TEXT PRIMARY KEY,
    ingested_high TIMESTAMPTZ NOT NULL,
    run_id UUID NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Which run last replaced each date's facts, and what it wrote (for audits and reconciliation).
CREATE TABLE IF NOT EXISTS etl_date_loads (
    event_date DATE PRIMARY KEY,
    run_id UUID NOT NULL,
    fact_rows BIGINT NOT NULL,
    view_count BIGINT NOT NULL,
    loaded_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- The ingested_at high a date's facts cover: every event of the date ingested up to it is counted.
-- Every run sets it to its window_high for the dates it wrote; an incremental run merges only
-- window events ingested after greatest(watermark, this), so events a range run already
-- counted (range runs do not move the watermark) are never counted twice.
ALTER TABLE etl_date_loads ADD COLUMN IF NOT EXISTS ingested_high TIMESTAMPTZ;
-- Rows from before the column: the run that last loaded a date read every event of that date up
-- to its window_high, so that is exactly what the date covers.
UPDATE etl_date_loads d SET ingested_high = r.window_high
FROM etl_runs r
WHERE r.run_id = d.run_id AND d.ingested_high IS NULL AND r.window_high IS NOT NULL;
