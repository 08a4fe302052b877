-- Cron policies (jitter, overlap with a `skipped` state for ticks not sent) and the W3C trace context a job's deliveries carry.

-- The new constraint only widens the old one, so every row already satisfies it: NOT VALID skips a
-- scan of the whole table under its lock; new and updated rows are checked all the same.
ALTER TABLE jobs DROP CONSTRAINT jobs_state_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_state_check
    CHECK (state IN ('scheduled', 'delivering', 'delivered', 'failed', 'cancelled', 'skipped'))
    NOT VALID;

-- No defaults: adding the columns does not rewrite the table.
ALTER TABLE jobs ADD COLUMN traceparent text, ADD COLUMN tracestate text;

-- Constant defaults do not rewrite a table either (PostgreSQL 11+).
ALTER TABLE crons
    ADD COLUMN jitter double precision NOT NULL DEFAULT 0 CHECK (jitter >= 0),
    ADD COLUMN overlap text NOT NULL DEFAULT 'allow' CHECK (overlap IN ('allow', 'skip'));

-- Overlap asks, at each tick, whether the cron has a run not finished yet; this index holds only
-- those runs, so the answer does not depend on how much history a cron has kept.
CREATE INDEX jobs_cron_unfinished_idx ON jobs (cron_id)
    WHERE cron_id IS NOT NULL AND state IN ('scheduled', 'delivering');
