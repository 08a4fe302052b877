-- prune_jobs --
-- Jobs that finished in the states `{finished_in}` names before `before`, oldest first, with
-- their attempts; how many jobs. The module fills `{finished_in}` with a literal predicate per
-- retention (finished, failed), which is what each partial index (jobs_prunable_idx,
-- jobs_failed_finished_idx) is built on, so even a generic plan reads exactly the rows it
-- deletes. SKIP LOCKED: pruning never waits on, or blocks, a row in use. CTE: one array of ids
-- deletes the attempts, then the jobs, in one statement; ON DELETE CASCADE then finds nothing
-- left, and the whole costs about half as much as the cascade deleting them (measured:
-- docs/operations.md, "Retention").
WITH doomed AS MATERIALIZED (
    SELECT array_agg(id) AS ids
    FROM (SELECT id FROM jobs
          WHERE {finished_in} AND finished_at < %(before)s
          ORDER BY finished_at
          LIMIT %(limit)s
          FOR UPDATE SKIP LOCKED) AS batch
), attempts AS (
    DELETE FROM delivery_attempts USING doomed WHERE job_id = ANY(doomed.ids)
), pruned AS (
    DELETE FROM jobs USING doomed WHERE id = ANY(doomed.ids) RETURNING 1
)
SELECT count(*) AS pruned FROM pruned;

-- prune_idempotency_keys --
-- Keys older than their time to live free their name for reuse.
DELETE FROM idempotency_keys
WHERE key IN (
    SELECT key FROM idempotency_keys WHERE created_at < %(before)s LIMIT %(limit)s
)
RETURNING key;

-- prune_dispatchers --
-- Rows of dispatchers that vanished without removing themselves, long after anyone needs them.
DELETE FROM dispatchers WHERE heartbeat_at < now() - make_interval(secs => %(older_than)s)
RETURNING id;

-- prune_delivery_minutes --
-- Rollup rows of minutes before `before`; a day holds 1,440 per dispatcher, so one statement.
WITH pruned AS (
    DELETE FROM delivery_minutes WHERE minute < %(before)s RETURNING minute
)
SELECT count(*) AS pruned FROM pruned;
