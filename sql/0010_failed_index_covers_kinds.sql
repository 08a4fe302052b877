-- The failed jobs' pruning index also carries each job's error kind, so the dashboard's failed groups are read from it alone.

-- With 100,000 failed jobs the planner chose this index (on finished_at) for failed_groups and
-- then read every row from the table; carrying last_error_kind lets that plan be index-only.
DROP INDEX jobs_failed_finished_idx;
CREATE INDEX jobs_failed_finished_idx ON jobs (finished_at) INCLUDE (last_error_kind)
    WHERE state = 'failed';
