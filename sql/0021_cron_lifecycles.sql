-- Cron lifecycles: a cron may start at a moment, end at one, or end after a number of runs; an
-- ended cron stays listed as ended, or is removed when it asks to be, leaving a tombstone so that
-- an application sending its whole cron set again does not bring it back to life unchanged.

ALTER TABLE crons
    ADD COLUMN start_at timestamptz,
    ADD COLUMN end_at timestamptz,
    ADD COLUMN max_runs integer CHECK (max_runs > 0),
    -- Runs recorded from its ticks to be delivered (not skipped or missed ones, backfills or
    -- runs asked for by hand), since its bounds were last set.
    ADD COLUMN runs integer NOT NULL DEFAULT 0,
    ADD COLUMN ended_at timestamptz,
    ADD COLUMN delete_after_end boolean NOT NULL DEFAULT false,
    ADD CONSTRAINT crons_bounds_check CHECK (start_at IS NULL OR end_at IS NULL OR end_at > start_at);

-- What is left of a cron removed when it ended: its bounds, which a cron set sent again must
-- change for the cron to start again.
CREATE TABLE cron_tombstones (
    id text PRIMARY KEY,
    start_at timestamptz,
    end_at timestamptz,
    max_runs integer,
    ended_at timestamptz NOT NULL
);
