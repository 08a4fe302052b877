-- Pruning walks an index of exactly the rows it deletes, and failed jobs, kept for a retention of their own, get an index of their own.

-- The old index held failed jobs too, which every pruning batch stepped over, each a visit to
-- the table. A finished row goes into exactly one of the two new indexes, as it went into the
-- old one, so a delivery writes no more index entries than before.
CREATE INDEX jobs_prunable_idx ON jobs (finished_at)
    WHERE state IN ('delivered', 'cancelled', 'skipped');
CREATE INDEX jobs_failed_finished_idx ON jobs (finished_at) WHERE state = 'failed';
DROP INDEX jobs_finished_idx;
