-- Every tick of a running cron gets exactly one record: `missed` is the state of a tick older than
-- its cron's catch-up window when it was recorded (no leader ran, or the leader was behind), and
-- each cron may set that window. Timers become one per distinct schedule instead of one per cron.

-- The new constraint only widens the old one: NOT VALID skips a scan of the whole table.
ALTER TABLE jobs DROP CONSTRAINT jobs_state_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_state_check
    CHECK (state IN ('scheduled', 'delivering', 'delivered', 'failed', 'cancelled', 'skipped',
                     'missed'))
    NOT VALID;

-- Missed ticks are pruned with the other finished ones; the index is exactly what pruning reads.
CREATE INDEX jobs_prunable_missed_idx ON jobs (finished_at)
    WHERE state IN ('delivered', 'cancelled', 'skipped', 'missed');
DROP INDEX jobs_prunable_idx;
ALTER INDEX jobs_prunable_missed_idx RENAME TO jobs_prunable_idx;

-- NULL: the dispatcher's default (SCHEDULER_CRON_CATCHUP), read at each tick.
ALTER TABLE crons ADD COLUMN catchup_window double precision CHECK (catchup_window >= 0);

-- A schedule's timer records the ticks of every running cron with its spec in one statement.
CREATE INDEX crons_running_spec_idx ON crons (spec) WHERE NOT paused;

-- The per-cron timers give way to per-schedule ones, which the leader adds at its next
-- resynchronisation; the crons' own last_fire_at says which ticks are owed meanwhile.
DELETE FROM apscheduler_jobs WHERE id LIKE 'cron:%';
