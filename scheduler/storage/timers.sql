-- add_timer --
-- A new APScheduler timer (its pickled state); the primary key refuses a second of one id.
INSERT INTO apscheduler_jobs (id, next_run_time, job_state)
VALUES (%(id)s, %(next_run_time)s, %(job_state)s);

-- update_timers --
-- Timers moved on or changed, from arrays: one statement for a whole timer pass.
UPDATE apscheduler_jobs AS timers
SET next_run_time = changed.next_run_time, job_state = changed.job_state
FROM unnest(%(ids)s::text[], %(next_run_times)s::double precision[], %(job_states)s::bytea[])
    AS changed (id, next_run_time, job_state)
WHERE timers.id = changed.id
RETURNING timers.id;

-- remove_timer --
-- One timer gone (a finished date trigger, a schedule no cron runs any more).
DELETE FROM apscheduler_jobs WHERE id = %(id)s RETURNING id;

-- remove_all_timers --
-- Every timer gone.
DELETE FROM apscheduler_jobs;
