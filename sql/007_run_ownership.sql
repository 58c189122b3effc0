-- Run ownership: a run commits only while it still owns its window (etl_api/load.py, the guard).
--
-- owner_token: written by the job process when it claims the run (queued → running),
-- "<host>:<pid>:<random hex>"; heartbeats and the load's final check match it, so only the process
-- that claimed the run can write it. The API never shows it to anonymous callers.
ALTER TABLE etl_runs ADD COLUMN IF NOT EXISTS owner_token TEXT;

-- One row: the last load that committed, whatever its mode. A run reads it at start and its load
-- transaction locks it (SELECT … FOR UPDATE) and refuses to commit if another run's load committed
-- in between. Range runs do not move the watermark, so this is their guard (and every mode's
-- second one): no run loads over dates another run wrote after it planned its read.
CREATE TABLE IF NOT EXISTS etl_load_generation (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    generation BIGINT NOT NULL,                -- +1 per committed load
    run_id UUID,                               -- the run that committed it
    mode TEXT,
    committed_at TIMESTAMPTZ
);
INSERT INTO etl_load_generation (id, generation) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
