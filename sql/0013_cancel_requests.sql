-- A cancel that arrives while a job is being delivered is kept on the job, so that whatever ends that attempt ends the job cancelled (or delivered) instead of retrying it.

-- When a cancel was first asked for; NULL when none was. A job waiting to be sent is cancelled at
-- once and keeps the time too. No default, so adding the column does not rewrite the table; no
-- index, as every statement that reads it finds its rows by other columns (id, cron, claim).
ALTER TABLE jobs ADD COLUMN cancel_requested_at timestamptz;
