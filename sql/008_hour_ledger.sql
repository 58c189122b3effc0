-- The hour ledger: what the star schema accounts for, per ingest hour of the raw store
-- (etl_api/ledger.py). GET /reconciliation compares it with MongoDB, hour by hour.
--
-- One row per (ingest_hour, event_date) of the raw store's documents: how many product-view-type
-- documents (ETL_PRODUCT_VIEW_TYPES) the facts stand for, counted (`valid`, in sum(view_count))
-- or skipped with a reason (`events` - `valid`). Written in the load transaction, with the facts:
-- a full run replaces every row, a range run the rows of its dates, an incremental run adds the
-- counts of the events it merged and replaces the rows of the dates it recomputed.
-- `event_date` is the document's own `event_date` field as text ('' when it has none): the key
-- date reads select by.
CREATE TABLE IF NOT EXISTS etl_hour_reads (
    ingest_hour TEXT NOT NULL,                 -- YYYY-MM-DDTHH, the sink's ingest_hour ('' when missing)
    event_date TEXT NOT NULL,
    events BIGINT NOT NULL,                    -- documents accounted for: valid + skipped
    valid BIGINT NOT NULL,                     -- of them, valid product views
    run_id UUID NOT NULL,                      -- the run that last wrote the row
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (ingest_hour, event_date)
);

-- Since when the ledger is complete: hours that start before `covers_from` were (partly) loaded
-- before the ledger existed and are reported `unledgered`, not `late`. The first run that writes
-- the ledger sets it: a full read (full run, or the first incremental run) to the beginning (1970-01-01), an
-- incremental run to its window low, a range run to its window high. A later full run resets it
-- to the beginning.
CREATE TABLE IF NOT EXISTS etl_ledger_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    covers_from TIMESTAMPTZ NOT NULL,
    run_id UUID NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
