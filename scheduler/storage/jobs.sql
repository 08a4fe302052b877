-- insert_jobs_quietly --
-- Several jobs in one statement, one per element of the arrays (a batch, or single inserts
-- grouped by the web process), sending no notification. Bodies are JSON text; a delay counts on
-- the database's clock, as in insert_job_quietly.
INSERT INTO jobs (id, body, run_at, next_attempt_at, max_attempts, endpoint, traceparent,
                  tracestate, flow_key, http_options, callback)
SELECT j.id, j.body::jsonb, due.at, due.at, j.max_attempts, j.endpoint, j.traceparent,
       j.tracestate, j.flow_key, j.http_options::jsonb, j.callback
FROM unnest(%(ids)s::text[], %(bodies)s::text[], %(run_ats)s::timestamptz[],
            %(delays)s::float8[], %(max_attempts)s::integer[], %(endpoints)s::text[],
            %(traceparents)s::text[], %(tracestates)s::text[], %(flow_keys)s::text[],
            %(http_options)s::text[], %(callbacks)s::text[])
    AS j (id, body, run_at, delay, max_attempts, endpoint, traceparent, tracestate, flow_key,
          http_options, callback),
    LATERAL (SELECT coalesce(j.run_at, now() + make_interval(secs => j.delay))) AS due (at);

-- insert_job --
-- Store a one-shot job (insert_job_quietly) and wake the dispatchers in the same statement; the
-- notice says in how many seconds it is due by the database's clock.
WITH inserted AS (
    {insert_job_quietly}
    RETURNING next_attempt_at
)
SELECT pg_notify('scheduler', 'j ' || extract(epoch FROM next_attempt_at - now()))
FROM inserted;

-- insert_job_quietly --
-- A job the dispatchers need not hear of now (due beyond their next look), or one of a batch,
-- which sends a single notification; due at run_at or after a delay by the database's clock.
INSERT INTO jobs (id, body, run_at, next_attempt_at, max_attempts, endpoint, traceparent,
                  tracestate, flow_key, http_options, callback)
VALUES (%(id)s, %(body)s, coalesce(%(run_at)s, now() + make_interval(secs => %(delay)s)),
        coalesce(%(run_at)s, now() + make_interval(secs => %(delay)s)), %(max_attempts)s,
        %(endpoint)s, %(traceparent)s, %(tracestate)s, %(flow_key)s, %(http_options)s,
        %(callback)s);

-- debounce_job --
-- A job due `delay` seconds from now, or, while a job of its endpoint with its debounce key waits
-- and was never claimed (jobs_debounce_key, sql/0020), that job instead: it takes this insert's
-- body, attempts, flow key, trace context, HTTP options and callback, and is due `delay` seconds from now, but never
-- later than its first insert's deadline (least() passes over a NULL one), and not moved at all
-- when an operator asked for it to run now. ON CONFLICT waits for a concurrent insert with the
-- key to commit and then updates the job it made; a claim that took the job first leaves no
-- conflict, and this insert makes a new job. With `announce`, the dispatchers are woken (as by
-- insert_job) when the job is due within `announce_within` seconds (always when NULL): the job
-- it joined may be due sooner than before, at its deadline.
WITH debounced AS (
    INSERT INTO jobs AS waiting (id, body, run_at, next_attempt_at, max_attempts, endpoint,
                                 traceparent, tracestate, flow_key, debounce_key, debounce_until,
                                 debounce_open, http_options, callback)
    VALUES (%(id)s, %(body)s, now() + make_interval(secs => %(delay)s),
            now() + make_interval(secs => %(delay)s), %(max_attempts)s, %(endpoint)s,
            %(traceparent)s, %(tracestate)s, %(flow_key)s, %(debounce_key)s,
            now() + make_interval(secs => %(max_wait)s::float8), true, %(http_options)s,
            %(callback)s)
    ON CONFLICT (endpoint, debounce_key) WHERE debounce_open DO UPDATE
    SET body = EXCLUDED.body, max_attempts = EXCLUDED.max_attempts,
        flow_key = EXCLUDED.flow_key, traceparent = EXCLUDED.traceparent,
        tracestate = EXCLUDED.tracestate, http_options = EXCLUDED.http_options,
        callback = EXCLUDED.callback,
        run_at = CASE WHEN waiting.run_requested THEN waiting.run_at
                      ELSE least(EXCLUDED.run_at, waiting.debounce_until) END,
        next_attempt_at = CASE WHEN waiting.run_requested THEN waiting.next_attempt_at
                               ELSE least(EXCLUDED.next_attempt_at, waiting.debounce_until) END,
        updated_at = now()
    RETURNING id, next_attempt_at
)
SELECT id, id <> %(id)s AS debounced,
       extract(epoch FROM next_attempt_at - now())::float8 AS due_in,
       CASE WHEN %(announce)s
                 AND (%(announce_within)s::float8 IS NULL
                      OR next_attempt_at
                         < now() + make_interval(secs => %(announce_within)s::float8))
            THEN pg_notify('scheduler', 'j ' || extract(epoch FROM next_attempt_at - now()))
       END AS announced
FROM debounced;

-- claim_idempotency_key --
-- The first request with a key owns it; ON CONFLICT waits for a concurrent owner to commit.
INSERT INTO idempotency_keys (key, job_ids, request_hash)
VALUES (%(key)s, %(job_ids)s, %(request_hash)s)
ON CONFLICT (key) DO NOTHING
RETURNING key;

-- find_idempotency_key --
-- What an earlier request with this key scheduled.
SELECT job_ids, request_hash, debounced FROM idempotency_keys WHERE key = %(key)s;

-- answer_idempotency_key --
-- What a request with debounced jobs answered, kept under its key (claimed in the same
-- transaction) for its repeats: a debounced job that joined a waiting one has that job's id.
UPDATE idempotency_keys SET job_ids = %(job_ids)s, debounced = %(debounced)s
WHERE key = %(key)s;

-- cancel_job --
-- Cancel a job (cancel_requested).
UPDATE jobs SET {cancel_requested}
WHERE id = %(id)s AND {cancellable};

-- cancel_jobs --
-- Cancel the given jobs (cancel_requested), counting those cancelled now and those that will be
-- once their attempt ends.
WITH cancelled AS (
    UPDATE jobs SET {cancel_requested}
    WHERE id = ANY(%(ids)s::text[]) AND {cancellable}
    RETURNING state
)
SELECT count(*) FILTER (WHERE state = 'cancelled') AS cancelled,
       count(*) FILTER (WHERE state = 'delivering') AS requested
FROM cancelled;

-- cancellable --
-- Part of every cancel (here and crons.sql cancel_pending_fires): the jobs a cancel changes, those
-- waiting to be sent and those being delivered with no cancel asked yet. A finished job is left
-- alone, and a repeated cancel keeps the time of the first.
(state = 'scheduled' OR state = 'delivering' AND cancel_requested_at IS NULL)

-- cancel_requested --
-- Part of every cancel: a job waiting to be sent is cancelled now; one being delivered keeps its
-- attempt in flight, and whatever ends that claim (outcomes.sql, deliveries.sql
-- release_dead_claims) ends the job cancelled, or delivered if that attempt delivered it.
cancel_requested_at = coalesce(cancel_requested_at, now()),
state = CASE WHEN state = 'scheduled' THEN 'cancelled' ELSE state END,
finished_at = CASE WHEN state = 'scheduled' THEN now() ELSE finished_at END,
updated_at = now()

-- job_columns --
-- Part of get_job and list_jobs: a job as jobs.JobRecord holds it.
id, cron_id, body, run_at, state, attempts, max_attempts, next_attempt_at, last_status,
last_error, created_at, updated_at, finished_at, endpoint, last_error_kind, cancel_requested_at,
flow_key, debounce_key, debounce_until, event, http_options, callback

-- get_job --
-- One job with everything a user may ask about it.
SELECT {job_columns}
FROM jobs WHERE id = %(id)s;

-- list_attempts --
-- A job's delivery attempts, oldest first.
SELECT attempt, started_at, duration_ms, status_code, error, response_excerpt, error_kind
FROM delivery_attempts WHERE job_id = %(job_id)s ORDER BY attempt;

-- list_jobs --
-- Keyset pagination, newest first: ids sort by creation time and are unique, so pages never
-- repeat or skip a job whatever is inserted meanwhile.
SELECT {job_columns}
FROM jobs
WHERE (%(state)s::text IS NULL OR state = %(state)s)
  AND (%(cron_id)s::text IS NULL OR cron_id = %(cron_id)s)
  AND (%(endpoint)s::text IS NULL OR endpoint = %(endpoint)s)
  AND (%(error_kind)s::text IS NULL OR last_error_kind = %(error_kind)s)
  AND (%(before)s::timestamptz IS NULL OR run_at < %(before)s)
  AND (%(after)s::timestamptz IS NULL OR run_at >= %(after)s)
  AND (%(cursor)s::text IS NULL OR id < %(cursor)s)
ORDER BY id DESC
LIMIT %(limit)s;

-- job_state --
-- The state of one job, to explain why an action did not apply.
SELECT state FROM jobs WHERE id = %(id)s;

-- lock_job --
-- A job's row, locked for the rest of an edit's transaction. FOR UPDATE, not SKIP LOCKED: an
-- edit waits for a claim of the row in progress and then reads what that claim committed (the
-- job `delivering`, which the edit refuses), and while the edit holds the row every claim skips
-- it (their SKIP LOCKED) and takes it, edited, at a later look. Nothing is sent half-edited.
SELECT state, cron_id, event, attempts, endpoint, flow_key, http_options
FROM jobs WHERE id = %(id)s
FOR UPDATE;

-- edit_job --
-- An edit of a job locked by lock_job and found waiting to be sent: each column whose parameter
-- is NULL (`set_flow`, `set_http_options`, `set_callback` false for the flow key, the HTTP
-- options, the callback) stays as it is. Its attempts stay as they are (a
-- job waiting for a retry keeps its count). A new due time replaces a run an operator asked
-- for; a job moved to another endpoint leaves its debounce key (keys belong to an endpoint). The
-- dispatchers are woken (as by insert_job) when it is due within `announce_within` seconds
-- (always when NULL).
WITH edited AS (
    UPDATE jobs
    SET body = coalesce(%(body)s::jsonb, body),
        run_at = coalesce(%(run_at)s::timestamptz,
                          now() + make_interval(secs => %(delay)s::float8), run_at),
        next_attempt_at = coalesce(%(run_at)s::timestamptz,
                                   now() + make_interval(secs => %(delay)s::float8),
                                   next_attempt_at),
        run_requested = run_requested AND %(run_at)s::timestamptz IS NULL
                        AND %(delay)s::float8 IS NULL,
        max_attempts = coalesce(%(max_attempts)s::integer, max_attempts),
        debounce_open = debounce_open AND endpoint = coalesce(%(endpoint)s::text, endpoint),
        endpoint = coalesce(%(endpoint)s::text, endpoint),
        flow_key = CASE WHEN %(set_flow)s THEN %(flow_key)s::text ELSE flow_key END,
        http_options = CASE WHEN %(set_http_options)s THEN %(http_options)s::jsonb
                            ELSE http_options END,
        callback = CASE WHEN %(set_callback)s THEN %(callback)s::text ELSE callback END,
        updated_at = now()
    WHERE id = %(id)s
    RETURNING next_attempt_at
)
SELECT CASE WHEN %(announce_within)s::float8 IS NULL
                 OR next_attempt_at < now() + make_interval(secs => %(announce_within)s::float8)
            THEN pg_notify('scheduler', 'j ' || extract(epoch FROM next_attempt_at - now()))
       END AS announced
FROM edited;

-- run_job_now --
-- Make a waiting job due now and wake the dispatchers; it goes even while its endpoint is paused.
WITH due AS (
    UPDATE jobs SET next_attempt_at = now(), run_requested = true, updated_at = now()
    WHERE id = %(id)s AND state = 'scheduled'
    RETURNING id
)
SELECT pg_notify('scheduler', 'j 0') FROM due;

-- retry_failed_job --
-- Give a failed job a fresh budget of attempts, starting now.
WITH retried AS (
    UPDATE jobs
    SET state = 'scheduled', max_attempts = attempts + max_attempts, next_attempt_at = now(),
        finished_at = NULL, updated_at = now()
    WHERE id = %(id)s AND state = 'failed'
    RETURNING id
)
SELECT pg_notify('scheduler', 'j 0') FROM retried;

-- failed_matching --
-- Part of count_failed_matching and retry_failed_batch: the failed jobs a bulk retry takes, those
-- matching its filter that had failed by the time the user was shown how many.
state = 'failed' AND finished_at <= %(as_of)s
AND (%(cron_id)s::text IS NULL OR cron_id = %(cron_id)s)
AND (%(endpoint)s::text IS NULL OR endpoint = %(endpoint)s)
AND (%(error_kind)s::text IS NULL OR last_error_kind = %(error_kind)s)
AND (%(before)s::timestamptz IS NULL OR run_at < %(before)s)
AND (%(after)s::timestamptz IS NULL OR run_at >= %(after)s)

-- count_failed_matching --
-- Failed jobs a bulk retry would take, up to one more than its cap (so the page can say there
-- are more).
SELECT count(*) AS failed
FROM (SELECT 1 FROM jobs WHERE {failed_matching} LIMIT %(cap)s) AS failed;

-- retry_failed_batch --
-- One batch of a bulk retry, newest first: failed jobs matching the filter (failed_matching),
-- each given a fresh budget of attempts, and the dispatchers woken.
-- FOR UPDATE in id order, so two bulk retries at once wait for each other instead of deadlocking.
WITH picked AS (
    SELECT id FROM jobs
    WHERE {failed_matching}
    ORDER BY id DESC
    LIMIT %(limit)s
    FOR UPDATE
), retried AS (
    UPDATE jobs
    SET state = 'scheduled', max_attempts = jobs.attempts + jobs.max_attempts,
        next_attempt_at = now(), finished_at = NULL, updated_at = now()
    FROM picked
    WHERE jobs.id = picked.id AND jobs.state = 'failed'
    RETURNING jobs.id
), counted AS (
    SELECT count(*) AS retried FROM retried
)
SELECT retried, CASE WHEN retried > 0 THEN pg_notify('scheduler', 'b') END AS woken
FROM counted;

-- job_state_estimates --
-- Jobs per state from the planner's statistics, which cost nothing on any table size; the
-- dashboard labels them as estimates and counts exactly only on small tables.
SELECT c.reltuples::bigint AS total, s.most_common_vals::text::text[] AS states,
       s.most_common_freqs AS frequencies
FROM pg_class c
LEFT JOIN pg_stats s
  ON s.schemaname = current_schema() AND s.tablename = 'jobs' AND s.attname = 'state'
WHERE c.oid = 'jobs'::regclass;

-- count_jobs_by_state --
-- Exact jobs per state, for a table small enough to count on every view.
SELECT state, count(*) AS jobs FROM jobs GROUP BY state;

-- count_due --
-- Jobs due but not yet sent, counted up to a cap (none when NULL) through jobs_due_idx.
SELECT count(*) AS due
FROM (SELECT 1 FROM jobs
      WHERE state = 'scheduled' AND next_attempt_at <= now() LIMIT %(cap)s) AS due;

-- count_delivering --
-- Jobs being delivered now, counted up to a cap through the partial index on delivering rows.
SELECT count(*) AS delivering
FROM (SELECT 1 FROM jobs WHERE state = 'delivering' LIMIT %(cap)s) AS delivering;

-- failed_groups --
-- Failed jobs by the kind of their last error: how many, and when the latest failed. Read from
-- jobs_failed_kind_idx alone, which holds exactly the failed rows with their finish times.
SELECT last_error_kind AS kind, count(*) AS count, max(finished_at) AS latest_finished_at
FROM jobs
WHERE state = 'failed'
GROUP BY last_error_kind
ORDER BY count(*) DESC, last_error_kind;
