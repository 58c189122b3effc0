-- The continuous worker (etl_api/worker.py): one per schema, its micro-batches are runs.
--
-- Every micro-batch is an etl_runs row of mode 'continuous', claimed, heartbeated and committed
-- through the same ownership guard as a one-off run (the one-active-run index serializes them
-- with one-off runs).
ALTER TABLE etl_runs DROP CONSTRAINT IF EXISTS etl_runs_mode_check;
ALTER TABLE etl_runs ADD CONSTRAINT etl_runs_mode_check CHECK (mode IN ('incremental', 'full', 'range', 'continuous'));
CREATE INDEX IF NOT EXISTS etl_runs_mode_finished ON etl_runs (mode, finished_at);

-- One row: whether the worker should run, and which process is it. An API instance that finds
-- `desired` and no live worker (heartbeat older than the timeout, or its pid gone on this host)
-- takes the row over with a new owner_token in one conditional UPDATE and launches a worker with
-- that token; a worker heartbeats only while the row carries its token, and stops otherwise.
CREATE TABLE IF NOT EXISTS etl_continuous (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    desired BOOLEAN NOT NULL DEFAULT false,
    desired_at TIMESTAMPTZ,
    owner_token TEXT,                        -- the worker process that may run (NULL: none)
    launched_at TIMESTAMPTZ,
    launched_by TEXT,                        -- the API instance (host:pid) that launched it
    host TEXT,
    pid INTEGER,
    heartbeat_at TIMESTAMPTZ,
    state TEXT,                              -- starting | running | waiting | yielding | stopped
    reason TEXT,                             -- why waiting/yielding (an outage, another run), else NULL
    checked_high TIMESTAMPTZ,                -- a micro-batch found nothing new visible up to here
    yield_requested_at TIMESTAMPTZ,          -- POST /runs was refused by a micro-batch: the worker lets it in
    batches BIGINT NOT NULL DEFAULT 0,       -- micro-batches committed by the current owner
    last_batches JSONB NOT NULL DEFAULT '[]' -- the newest micro-batches (id, window, events, seconds per phase)
);
INSERT INTO etl_continuous (id) VALUES (1) ON CONFLICT (id) DO NOTHING;
-- (a database where this file ran before the column existed)
ALTER TABLE etl_continuous ADD COLUMN IF NOT EXISTS yield_requested_at TIMESTAMPTZ;
