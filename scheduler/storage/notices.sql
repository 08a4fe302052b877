-- notify_jobs_due --
-- Tell the dispatchers that several jobs were added at once, or that jobs are due now.
SELECT pg_notify('scheduler', 'b');

-- notify_crons_changed --
-- Tell the leader to resynchronise its cron timers.
SELECT pg_notify('scheduler', 'c');

-- notify_endpoints_changed --
-- Tell every dispatcher to reload which endpoints are paused or limited, and to look.
SELECT pg_notify('scheduler', 'e');
