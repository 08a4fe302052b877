-- insert_jobs_quietly --
-- Several jobs in one statement, one per element of the arrays (a batch, or single inserts
-- grouped by the web process), sending no notification. Bodies are JSON text; a delay counts on
-- the database's clock, as in insert_job.
INSERT INTO jobs (id, body, run_at, next_attempt_at, max_attempts, endpoint, traceparent,
                  tracestate)
SELECT j.id, j.body::jsonb, due.at, due.at, j.max_attempts, j.endpoint, j.traceparent,
       j.tracestate
FROM unnest(%(ids)s::text[], %(bodies)s::text[], %(run_ats)s::timestamptz[],
            %(delays)s::float8[], %(max_attempts)s::integer[], %(endpoints)s::text[],
            %(traceparents)s::text[], %(tracestates)s::text[])
    AS j (id, body, run_at, delay, max_attempts, endpoint, traceparent, tracestate),
    LATERAL (SELECT coalesce(j.run_at, now() + make_interval(secs => j.delay))) AS due (at);

-- insert_job --
-- Store a one-shot job, due at run_at or after a delay by the database's clock, and wake the
-- dispatchers in the same transaction. The notice says in how
-- many seconds it is due by the database's clock, then when (the due time as epoch seconds, the
-- part an earlier version's dispatcher reads during a rolling deploy).
WITH inserted AS (
    INSERT INTO jobs (id, body, run_at, next_attempt_at, max_attempts, endpoint, traceparent,
                      tracestate)
    VALUES (%(id)s, %(body)s, coalesce(%(run_at)s, now() + make_interval(secs => %(delay)s)),
        coalesce(%(run_at)s, now() + make_interval(secs => %(delay)s)), %(max_attempts)s,
        %(endpoint)s, %(traceparent)s, %(tracestate)s)
    RETURNING next_attempt_at
)
SELECT pg_notify(
    'scheduler',
    'j ' || extract(epoch FROM next_attempt_at - now()) || ' ' || extract(epoch FROM next_attempt_at)
)
FROM inserted;

-- cancel_job --
-- Cancel a job that has not been delivered yet; an unknown or finished job is left alone.
UPDATE jobs SET state = 'cancelled', finished_at = now(), updated_at = now()
WHERE id = %(id)s AND state = 'scheduled';

-- lock_crons --
-- Serialise replacements of the cron set so two concurrent ones cannot interleave.
SELECT pg_advisory_xact_lock(hashtext('scheduler.crons'));

-- delete_crons_except --
-- Remove the crons that the new set no longer names.
DELETE FROM crons WHERE NOT (id = ANY(%(ids)s)) RETURNING id;

-- cancel_pending_fires --
-- Fires of removed crons that are still waiting for a (re)try are not sent any more.
UPDATE jobs SET state = 'cancelled', finished_at = now(), updated_at = now()
WHERE cron_id = ANY(%(cron_ids)s) AND state = 'scheduled';

-- upsert_cron --
-- Create a cron, or give it a new revision when its spec changed; an unchanged spec keeps its
-- timer and its revision. Jitter, overlap and the endpoint are read at each tick, so a change of
-- only those is stored without touching the timer (nor updated_at, the start of the current
-- schedule).
INSERT INTO crons (id, spec, timezone, jitter, overlap, endpoint)
VALUES (%(id)s, %(spec)s, %(timezone)s, %(jitter)s, %(overlap)s, %(endpoint)s)
ON CONFLICT (id) DO UPDATE
SET spec = EXCLUDED.spec, timezone = EXCLUDED.timezone, jitter = EXCLUDED.jitter,
    overlap = EXCLUDED.overlap, endpoint = EXCLUDED.endpoint,
    revision = CASE WHEN crons.spec IS DISTINCT FROM EXCLUDED.spec
                    THEN nextval('cron_revisions') ELSE crons.revision END,
    last_fire_at = CASE WHEN crons.spec IS DISTINCT FROM EXCLUDED.spec
                        THEN NULL ELSE crons.last_fire_at END,
    updated_at = CASE WHEN crons.spec IS DISTINCT FROM EXCLUDED.spec
                      THEN now() ELSE crons.updated_at END
WHERE crons.spec IS DISTINCT FROM EXCLUDED.spec
   OR crons.jitter IS DISTINCT FROM EXCLUDED.jitter
   OR crons.overlap IS DISTINCT FROM EXCLUDED.overlap
   OR crons.endpoint IS DISTINCT FROM EXCLUDED.endpoint;

-- notify_crons_changed --
-- Tell the leader to resynchronise its cron timers.
SELECT pg_notify('scheduler', 'c');

-- list_crons --
-- Every cron with what the dispatcher needs to schedule it.
SELECT id, spec, timezone, revision, paused, last_fire_at, created_at, updated_at, jitter,
       overlap, endpoint
FROM crons ORDER BY id;

-- list_crons_with_outcomes --
-- Every cron with its latest run's state and HTTP status, for listings.
SELECT c.id, c.spec, c.timezone, c.revision, c.paused, c.last_fire_at, c.created_at,
       c.updated_at, c.jitter, c.overlap, c.endpoint, last_run.state AS last_state,
       last_run.last_status AS last_status
FROM crons c
LEFT JOIN LATERAL (
    SELECT state, last_status FROM jobs
    WHERE jobs.cron_id = c.id ORDER BY id DESC LIMIT 1
) AS last_run ON true
WHERE %(id)s::text IS NULL OR c.id = %(id)s
ORDER BY c.id;

-- list_crons_page --
-- One page of crons in id order after `after`, with their latest runs, for the dashboard.
SELECT c.id, c.spec, c.timezone, c.revision, c.paused, c.last_fire_at, c.created_at,
       c.updated_at, c.jitter, c.overlap, c.endpoint, last_run.state AS last_state,
       last_run.last_status AS last_status
FROM crons c
LEFT JOIN LATERAL (
    SELECT state, last_status FROM jobs
    WHERE jobs.cron_id = c.id ORDER BY id DESC LIMIT 1
) AS last_run ON true
WHERE %(after)s::text IS NULL OR c.id > %(after)s
ORDER BY c.id
LIMIT %(limit)s;

-- claim_due_jobs --
-- Any dispatcher claims, leader or not; due-ness is judged by the database's clock, and a job due
-- within `ahead` seconds is claimed already, with `starts_in` saying how many seconds from now it
-- is due (claims.CLAIM_AHEAD_SECONDS). Claimed per endpoint through jobs_endpoint_due_idx, each
-- endpoint with waiting jobs in turn (waiting_endpoints), so that the due backlog of an endpoint
-- left out is never stepped over: the `held` ones (paused or limited, claimed apart by
-- claim_endpoint_jobs), and any of the `known` ones paused or limited at run time since `held`
-- was read, so a change holds from its commit (an unknown endpoint's job is claimed, to fail
-- unsent). Both checks name only the endpoint, so the planner runs them once per endpoint before
-- reading its jobs. SKIP LOCKED: a row another dispatcher is claiming is left to it.
UPDATE jobs
SET state = 'delivering', attempts = attempts + 1,
    leased_until = now() + make_interval(secs => %(lease_seconds)s),
    claimed_by = %(dispatcher_id)s, claim_token = nextval('claim_tokens'), run_requested = false,
    updated_at = now()
WHERE id IN (
    SELECT due.id
    FROM waiting_endpoints AS waiting
    CROSS JOIN LATERAL (
        SELECT id, next_attempt_at FROM jobs
        -- This endpoint's jobs due within `ahead`, as a range of jobs_endpoint_due_idx: the
        -- planner, given `endpoint = ...`, could read jobs_due_idx in time order instead and
        -- step over every other endpoint's job, and did when its estimates said so.
        WHERE state = 'scheduled'
          AND (jobs.endpoint, next_attempt_at) >= (waiting.endpoint, '-infinity'::timestamptz)
          AND (jobs.endpoint, next_attempt_at)
              <= (waiting.endpoint, now() + make_interval(secs => %(ahead)s))
          AND waiting.endpoint <> ALL(%(held)s::text[])
          AND NOT EXISTS (SELECT 1 FROM held_endpoints AS held
                          WHERE held.name = waiting.endpoint AND held.name = ANY(%(known)s))
        ORDER BY jobs.endpoint, next_attempt_at
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ) AS due
    ORDER BY due.next_attempt_at
    LIMIT %(limit)s
)
RETURNING id, cron_id, body::text AS body, run_at, attempts, max_attempts, claim_token, endpoint,
          event, traceparent, tracestate, next_attempt_at AS due_at,
          extract(epoch FROM next_attempt_at - now())::float8 AS starts_in;

-- claim_endpoint_jobs --
-- A limited endpoint's share, taken while its row in `endpoints` is locked (by lock_endpoint in
-- the same transaction), so limits hold across dispatchers. SKIP LOCKED as in claim_due_jobs.
UPDATE jobs
SET state = 'delivering', attempts = attempts + 1,
    leased_until = now() + make_interval(secs => %(lease_seconds)s),
    claimed_by = %(dispatcher_id)s, claim_token = nextval('claim_tokens'), run_requested = false,
    updated_at = now()
WHERE id IN (
    SELECT id FROM jobs
    WHERE state = 'scheduled' AND endpoint = %(endpoint)s AND next_attempt_at <= now()
    ORDER BY next_attempt_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING id, cron_id, body::text AS body, run_at, attempts, max_attempts, claim_token, endpoint,
          event, traceparent, tracestate, next_attempt_at AS due_at,
          extract(epoch FROM now() - next_attempt_at)::float8 AS held_back;

-- claim_paused_endpoint_jobs --
-- claim_endpoint_jobs while the endpoint is paused: only jobs an operator asked to run go. The
-- literal run_requested (no parameter) lets even a generic plan read them from
-- jobs_endpoint_run_requested_idx instead of checking every due row of the endpoint.
UPDATE jobs
SET state = 'delivering', attempts = attempts + 1,
    leased_until = now() + make_interval(secs => %(lease_seconds)s),
    claimed_by = %(dispatcher_id)s, claim_token = nextval('claim_tokens'), run_requested = false,
    updated_at = now()
WHERE id IN (
    SELECT id FROM jobs
    WHERE state = 'scheduled' AND endpoint = %(endpoint)s AND next_attempt_at <= now()
      AND run_requested
    ORDER BY next_attempt_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING id, cron_id, body::text AS body, run_at, attempts, max_attempts, claim_token, endpoint,
          event, traceparent, tracestate, next_attempt_at AS due_at,
          extract(epoch FROM now() - next_attempt_at)::float8 AS held_back;

-- lock_endpoint --
-- An endpoint's run-time state, its row locked for the rest of the transaction (made if absent).
-- The bucket is refilled up to the moment the lock was granted (clock_timestamp, not the
-- transaction's start: waiting for the lock must not earn tokens).
INSERT INTO endpoints (name) VALUES (%(endpoint)s)
ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name
RETURNING paused, rate_limit, rate_limit_set, max_in_flight, max_in_flight_set, tokens,
          clock_timestamp() AS locked_at,
          extract(epoch FROM clock_timestamp() - refilled_at)::float8 AS since_refill;

-- count_in_flight --
-- Deliveries in progress to one endpoint, across every dispatcher (jobs_endpoint_delivering_idx).
SELECT count(*) AS in_flight FROM jobs WHERE state = 'delivering' AND endpoint = %(endpoint)s;

-- save_tokens --
-- What is left in an endpoint's token bucket after a claim.
UPDATE endpoints SET tokens = %(tokens)s, refilled_at = %(refilled_at)s WHERE name = %(endpoint)s;

-- endpoint_due_in --
-- Seconds until an endpoint's next job is due (negative: overdue); NULL if none.
SELECT extract(epoch FROM min(next_attempt_at) - now())::float8 AS due_in
FROM jobs
WHERE state = 'scheduled' AND endpoint = %(endpoint)s;

-- paused_endpoint_due_in --
-- endpoint_due_in while the endpoint is paused: only jobs an operator asked to run count
-- (jobs_endpoint_run_requested_idx, as in claim_paused_endpoint_jobs).
SELECT extract(epoch FROM min(next_attempt_at) - now())::float8 AS due_in
FROM jobs
WHERE state = 'scheduled' AND endpoint = %(endpoint)s AND run_requested;

-- endpoint_states --
-- What every dispatcher caches to route its claims: which endpoints are paused or limited.
SELECT name, paused, rate_limit, rate_limit_set, max_in_flight, max_in_flight_set
FROM endpoints;

-- record_attempts --
-- History of delivery attempts, one row per element of the arrays (one statement per recorded
-- batch: executemany sent and PostgreSQL ran one statement per attempt).
INSERT INTO delivery_attempts
    (job_id, attempt, started_at, duration_ms, status_code, error, response_excerpt, error_kind)
SELECT job_id, attempt, started_at, duration_ms, status_code, error, response_excerpt, error_kind
FROM unnest(%(job_ids)s::text[], %(attempts)s::integer[], %(started_ats)s::timestamptz[],
            %(durations_ms)s::integer[], %(status_codes)s::integer[], %(errors)s::text[],
            %(excerpts)s::text[], %(error_kinds)s::text[])
    AS a (job_id, attempt, started_at, duration_ms, status_code, error, response_excerpt,
          error_kind)
ON CONFLICT (job_id, attempt) DO NOTHING;

-- finish_deliveries --
-- Close deliveries as delivered or failed, one per element of the arrays (a claim never sent,
-- when `attempted` is false, does not count as an attempt); a job cancelled or re-claimed
-- meanwhile is left alone. A job that ends failed makes a failure notification to
-- `notice_endpoint` (id from `notice_ids`) in the same statement, so exactly once per failure;
-- a notification that fails makes none. CTEs: the outcomes, and the jobs they closed.
WITH outcomes AS (
    SELECT job_id, claim_token, state, attempted, status_code, error, error_kind, notice_id
    FROM unnest(%(job_ids)s::text[], %(claim_tokens)s::bigint[], %(states)s::text[],
                %(attempted)s::boolean[], %(status_codes)s::integer[], %(errors)s::text[],
                %(error_kinds)s::text[], %(notice_ids)s::text[])
        AS o (job_id, claim_token, state, attempted, status_code, error, error_kind, notice_id)
),
finished AS (
    UPDATE jobs
    SET state = o.state, attempts = jobs.attempts - CASE WHEN o.attempted THEN 0 ELSE 1 END,
        leased_until = NULL, claimed_by = NULL, claim_token = NULL,
        last_status = o.status_code, last_error = o.error, last_error_kind = o.error_kind,
        finished_at = now(), updated_at = now()
    FROM outcomes AS o
    WHERE jobs.id = o.job_id AND jobs.state = 'delivering' AND jobs.claim_token = o.claim_token
    RETURNING jobs.id, jobs.cron_id, jobs.endpoint, jobs.attempts, jobs.last_status,
              jobs.last_error, jobs.last_error_kind, jobs.run_at, jobs.event, jobs.state,
              o.notice_id
)
INSERT INTO jobs (id, body, run_at, next_attempt_at, max_attempts, endpoint, event)
SELECT notice_id,
       jsonb_build_object('event', 'job.failed', 'job', jsonb_build_object(
           'id', id, 'cron_id', cron_id, 'endpoint', endpoint, 'attempts', attempts,
           'last_status', last_status, 'last_error', last_error,
           'last_error_kind', last_error_kind,
           'timestamp', to_char(run_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))),
       now(), now(), %(notice_attempts)s, %(notice_endpoint)s, 'job.failed'
FROM finished
WHERE state = 'failed' AND event IS NULL AND %(notice_endpoint)s::text IS NOT NULL;

-- schedule_retry --
-- Put a failed attempt back in line for its next try, its backoff counted on the database's clock.
UPDATE jobs
SET state = 'scheduled', leased_until = NULL, claimed_by = NULL, claim_token = NULL,
    next_attempt_at = now() + make_interval(secs => %(retry_in)s),
    last_status = %(status_code)s, last_error = %(error)s, last_error_kind = %(error_kind)s,
    updated_at = now()
WHERE id = %(job_id)s AND state = 'delivering' AND claim_token = %(claim_token)s;

-- give_back_delivery --
-- A claimed delivery that was never sent (its dispatcher is stopping) is due again at once, and
-- its claim does not count as an attempt.
UPDATE jobs
SET state = 'scheduled', attempts = attempts - 1, leased_until = NULL, claimed_by = NULL,
    claim_token = NULL, updated_at = now()
WHERE id = %(job_id)s AND state = 'delivering' AND claim_token = %(claim_token)s;

-- record_cron_fires --
-- One job per cron tick; the unique (cron_id, run_at) index absorbs repeats. A tick of a cron
-- removed or redefined since its timer was set (another revision) records nothing. A tick is due
-- a random part of its cron's jitter after it. Under overlap 'skip' it is recorded as skipped,
-- never to be sent, while the cron has a run not finished; in a pass that holds several new
-- ticks of one cron, each after the first has such a run (the first, or what made it skip).
-- CTEs: the ticks of live crons, those not recorded yet in order per cron, the jobs they make,
-- and each cron's latest tick.
WITH ticks AS (
    SELECT crons.id AS cron_id, crons.endpoint, crons.jitter, crons.overlap, t.revision, t.job_id,
           t.run_at
    FROM unnest(%(revisions)s::bigint[], %(job_ids)s::text[], %(run_ats)s::timestamptz[])
        AS t (revision, job_id, run_at)
    JOIN crons ON crons.revision = t.revision
    WHERE EXISTS (SELECT 1 FROM dispatcher_leader WHERE epoch = %(epoch)s)
),
fresh AS (
    SELECT cron_id, endpoint, jitter, overlap, job_id, run_at,
           row_number() OVER (PARTITION BY cron_id ORDER BY run_at) AS place
    FROM (
        SELECT DISTINCT ON (cron_id, run_at) cron_id, endpoint, jitter, overlap, job_id, run_at
        FROM ticks
    ) AS distinct_ticks
    WHERE NOT EXISTS (
        SELECT 1 FROM jobs WHERE jobs.cron_id = distinct_ticks.cron_id
                             AND jobs.run_at = distinct_ticks.run_at
    )
),
decided AS (
    SELECT job_id, cron_id, endpoint, run_at, jitter,
           CASE WHEN overlap = 'skip'
                THEN place > 1 OR EXISTS (
                    SELECT 1 FROM jobs
                    WHERE jobs.cron_id = fresh.cron_id AND jobs.state IN ('scheduled', 'delivering')
                )
                ELSE false END AS skip
    FROM fresh
),
fired AS (
    INSERT INTO jobs (id, cron_id, run_at, next_attempt_at, max_attempts, state, finished_at,
                      endpoint)
    SELECT job_id, cron_id, run_at, run_at + make_interval(secs => random() * jitter),
           %(max_attempts)s, CASE WHEN skip THEN 'skipped' ELSE 'scheduled' END,
           CASE WHEN skip THEN now() END, endpoint
    FROM decided
    ON CONFLICT (cron_id, run_at) WHERE cron_id IS NOT NULL DO NOTHING
    RETURNING id, state
),
advanced AS (
    UPDATE crons SET last_fire_at = greatest(crons.last_fire_at, latest.run_at)
    FROM (SELECT revision, max(run_at) AS run_at FROM ticks GROUP BY revision) AS latest
    WHERE crons.revision = latest.revision
    RETURNING crons.id
)
SELECT (SELECT count(*) FROM fired) AS inserted,
       (SELECT count(*) FROM fired WHERE state = 'skipped') AS skipped,
       (SELECT count(*) FROM advanced) AS advanced;

-- release_unowned_claims --
-- At an election: claims that name no dispatcher were made by an earlier version, in which only
-- the leader claimed; leadership has passed, so they are due again.
UPDATE jobs
SET state = 'scheduled', leased_until = NULL, claim_token = NULL, updated_at = now()
WHERE state = 'delivering' AND claimed_by IS NULL
  AND EXISTS (SELECT 1 FROM dispatcher_leader WHERE epoch = %(epoch)s)
RETURNING id;

-- release_dead_claims --
-- Deliveries held by a dispatcher whose heartbeat went stale (killed, cut off), or whose lease
-- ran out, are due again; live dispatchers keep theirs (jobs_delivering_idx keeps this small).
UPDATE jobs
SET state = 'scheduled', leased_until = NULL, claimed_by = NULL, claim_token = NULL,
    updated_at = now()
WHERE state = 'delivering'
  AND (leased_until < now()
       OR claimed_by IS NOT NULL AND NOT EXISTS (
           SELECT 1 FROM dispatchers
           WHERE dispatchers.id = jobs.claimed_by
             AND dispatchers.heartbeat_at > now() - make_interval(secs => %(live_seconds)s)))
  AND EXISTS (SELECT 1 FROM dispatcher_leader WHERE epoch = %(epoch)s)
RETURNING id;

-- next_due_in --
-- Seconds until the earliest waiting job is due by the database's clock; negative when one is
-- overdue; NULL when none waits. The first job of each endpoint claim_due_jobs would claim from,
-- found as it finds them (a min() over every waiting job read them all: 62 ms a call with
-- 1,000,000 waiting). Paused and limited endpoints' jobs are planned for by their own claims.
SELECT extract(epoch FROM min(first.next_attempt_at) - now())::float8 AS due_in
FROM waiting_endpoints AS waiting
CROSS JOIN LATERAL (
    SELECT next_attempt_at FROM jobs
    WHERE state = 'scheduled'  -- this endpoint's jobs, as a range, as in claim_due_jobs
      AND (jobs.endpoint, next_attempt_at) >= (waiting.endpoint, '-infinity'::timestamptz)
      AND (jobs.endpoint, next_attempt_at) <= (waiting.endpoint, 'infinity'::timestamptz)
      AND waiting.endpoint <> ALL(%(held)s::text[])
      AND NOT EXISTS (SELECT 1 FROM held_endpoints AS held
                      WHERE held.name = waiting.endpoint AND held.name = ANY(%(known)s))
    ORDER BY jobs.endpoint, next_attempt_at
    LIMIT 1
) AS first;

-- stale_job_timers --
-- Timers other than the crons' and the wake timer: per-job timers left by earlier versions.
SELECT id FROM apscheduler_jobs WHERE id NOT LIKE 'cron:%%' AND id <> 'wake';

-- crons_missing_timers --
-- Running crons whose current revision has no APScheduler timer.
SELECT id, spec, timezone, revision, paused, last_fire_at, created_at, updated_at, jitter,
       overlap, endpoint
FROM crons
WHERE NOT paused AND NOT EXISTS (
    SELECT 1 FROM apscheduler_jobs WHERE apscheduler_jobs.id = 'cron:' || crons.revision
);

-- stale_cron_timers --
-- APScheduler timers of cron revisions that were replaced, removed or paused.
SELECT id FROM apscheduler_jobs
WHERE id LIKE 'cron:%%'
  AND NOT EXISTS (
      SELECT 1 FROM crons
      WHERE 'cron:' || crons.revision = apscheduler_jobs.id AND NOT crons.paused
  );

-- prune_finished_jobs --
-- Delivered, cancelled and skipped jobs that finished before `before`, oldest first, with their
-- attempts; how many jobs. SKIP LOCKED: pruning never waits on, or blocks, a row in use. CTE: one
-- array of ids deletes the attempts, then the jobs, in one statement; ON DELETE CASCADE then finds
-- nothing left, and the whole costs about half as much as the cascade deleting them (measured:
-- docs/operations.md, "Retention").
WITH doomed AS MATERIALIZED (
    SELECT array_agg(id) AS ids
    FROM (SELECT id FROM jobs
          WHERE state IN ('delivered', 'cancelled', 'skipped') AND finished_at < %(before)s
          ORDER BY finished_at
          LIMIT %(limit)s
          FOR UPDATE SKIP LOCKED) AS batch
), attempts AS (
    DELETE FROM delivery_attempts USING doomed WHERE job_id = ANY(doomed.ids)
), pruned AS (
    DELETE FROM jobs USING doomed WHERE id = ANY(doomed.ids) RETURNING 1
)
SELECT count(*) AS pruned FROM pruned;

-- prune_failed_jobs --
-- Failed jobs that failed before `before`, as prune_finished_jobs does the others (their own
-- retention, their own index); how many. CTE, SKIP LOCKED: as there.
WITH doomed AS MATERIALIZED (
    SELECT array_agg(id) AS ids
    FROM (SELECT id FROM jobs
          WHERE state = 'failed' AND finished_at < %(before)s
          ORDER BY finished_at
          LIMIT %(limit)s
          FOR UPDATE SKIP LOCKED) AS batch
), attempts AS (
    DELETE FROM delivery_attempts USING doomed WHERE job_id = ANY(doomed.ids)
), pruned AS (
    DELETE FROM jobs USING doomed WHERE id = ANY(doomed.ids) RETURNING 1
)
SELECT count(*) AS pruned FROM pruned;

-- try_leader_lock --
-- Session-level: held until unlocked or until this connection ends.
SELECT pg_try_advisory_lock(hashtext('scheduler.dispatcher')) AS acquired;

-- begin_epoch --
-- A new leader fences out every leader write its predecessors may still attempt.
UPDATE dispatcher_leader
SET epoch = epoch + 1, holder = %(holder)s, elected_at = now(), heartbeat_at = now()
RETURNING epoch;

-- confirm_leadership --
-- Still holding the lock and still the current epoch; also the heartbeat readiness checks read.
UPDATE dispatcher_leader SET heartbeat_at = now()
WHERE epoch = %(epoch)s
  AND EXISTS (
      SELECT 1 FROM pg_locks
      WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted
  )
RETURNING epoch;

-- prune_idempotency_keys --
-- Keys older than their time to live free their name for reuse.
DELETE FROM idempotency_keys
WHERE key IN (
    SELECT key FROM idempotency_keys WHERE created_at < %(before)s LIMIT %(limit)s
)
RETURNING key;

-- claim_idempotency_key --
-- The first request with a key owns it; ON CONFLICT waits for a concurrent owner to commit.
INSERT INTO idempotency_keys (key, job_ids, request_hash)
VALUES (%(key)s, %(job_ids)s, %(request_hash)s)
ON CONFLICT (key) DO NOTHING
RETURNING key;

-- find_idempotency_key --
-- What an earlier request with this key scheduled.
SELECT job_ids, request_hash FROM idempotency_keys WHERE key = %(key)s;

-- insert_job_quietly --
-- A job the dispatchers need not hear of now (due beyond their next look), or one of a batch,
-- which sends a single notification. As in insert_job, a delay counts on the database's clock.
INSERT INTO jobs (id, body, run_at, next_attempt_at, max_attempts, endpoint, traceparent,
                  tracestate)
VALUES (%(id)s, %(body)s, coalesce(%(run_at)s, now() + make_interval(secs => %(delay)s)),
        coalesce(%(run_at)s, now() + make_interval(secs => %(delay)s)), %(max_attempts)s,
        %(endpoint)s, %(traceparent)s, %(tracestate)s);

-- notify_jobs_due --
-- Tell the dispatchers that several jobs were added at once, or that jobs are due now.
SELECT pg_notify('scheduler', 'b');

-- get_job --
-- One job with everything a user may ask about it.
SELECT id, cron_id, body, run_at, state, attempts, max_attempts, next_attempt_at, last_status,
       last_error, created_at, updated_at, finished_at, endpoint, last_error_kind
FROM jobs WHERE id = %(id)s;

-- list_attempts --
-- A job's delivery attempts, oldest first.
SELECT attempt, started_at, duration_ms, status_code, error, response_excerpt, error_kind
FROM delivery_attempts WHERE job_id = %(job_id)s ORDER BY attempt;

-- list_jobs --
-- Keyset pagination, newest first: ids sort by creation time and are unique, so pages never
-- repeat or skip a job whatever is inserted meanwhile.
SELECT id, cron_id, body, run_at, state, attempts, max_attempts, next_attempt_at, last_status,
       last_error, created_at, updated_at, finished_at, endpoint, last_error_kind
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

-- count_due_backlog --
-- Jobs due but not yet sent, counted up to a cap through the partial index on scheduled rows.
SELECT count(*) AS due
FROM (SELECT 1 FROM jobs
      WHERE state = 'scheduled' AND next_attempt_at <= now() LIMIT %(cap)s) AS due;

-- count_delivering --
-- Jobs being delivered now, counted up to a cap through the partial index on delivering rows.
SELECT count(*) AS delivering
FROM (SELECT 1 FROM jobs WHERE state = 'delivering' LIMIT %(cap)s) AS delivering;

-- count_failed_matching --
-- Failed jobs a bulk retry would take, up to one more than its cap (so the page can say there
-- are more): those matching the filter that had failed by the time it was asked.
SELECT count(*) AS failed
FROM (SELECT 1 FROM jobs
      WHERE state = 'failed' AND finished_at <= %(as_of)s
        AND (%(cron_id)s::text IS NULL OR cron_id = %(cron_id)s)
        AND (%(endpoint)s::text IS NULL OR endpoint = %(endpoint)s)
        AND (%(error_kind)s::text IS NULL OR last_error_kind = %(error_kind)s)
        AND (%(before)s::timestamptz IS NULL OR run_at < %(before)s)
        AND (%(after)s::timestamptz IS NULL OR run_at >= %(after)s)
      LIMIT %(cap)s) AS failed;

-- retry_failed_batch --
-- One batch of a bulk retry, newest first: failed jobs matching the filter that had failed by
-- the time the user confirmed, each given a fresh budget of attempts, and the dispatchers woken.
-- FOR UPDATE in id order, so two bulk retries at once wait for each other instead of deadlocking.
WITH picked AS (
    SELECT id FROM jobs
    WHERE state = 'failed' AND finished_at <= %(as_of)s
      AND (%(cron_id)s::text IS NULL OR cron_id = %(cron_id)s)
      AND (%(endpoint)s::text IS NULL OR endpoint = %(endpoint)s)
      AND (%(error_kind)s::text IS NULL OR last_error_kind = %(error_kind)s)
      AND (%(before)s::timestamptz IS NULL OR run_at < %(before)s)
      AND (%(after)s::timestamptz IS NULL OR run_at >= %(after)s)
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

-- cancel_jobs --
-- Cancel the given jobs that are still waiting to be sent; the others are left alone.
WITH cancelled AS (
    UPDATE jobs SET state = 'cancelled', finished_at = now(), updated_at = now()
    WHERE id = ANY(%(ids)s::text[]) AND state = 'scheduled'
    RETURNING id
)
SELECT count(*) AS cancelled FROM cancelled;

-- run_job_now --
-- Make a waiting job due now and wake the dispatchers; it goes even while its endpoint is paused.
WITH due AS (
    UPDATE jobs SET next_attempt_at = now(), run_requested = true, updated_at = now()
    WHERE id = %(id)s AND state = 'scheduled'
    RETURNING id
)
SELECT pg_notify('scheduler', 'j 0 ' || extract(epoch FROM now())) FROM due;

-- retry_failed_job --
-- Give a failed job a fresh budget of attempts, starting now.
WITH retried AS (
    UPDATE jobs
    SET state = 'scheduled', max_attempts = attempts + max_attempts, next_attempt_at = now(),
        finished_at = NULL, updated_at = now()
    WHERE id = %(id)s AND state = 'failed'
    RETURNING id
)
SELECT pg_notify('scheduler', 'j 0 ' || extract(epoch FROM now())) FROM retried;

-- job_state --
-- The state of one job, to explain why an action did not apply.
SELECT state FROM jobs WHERE id = %(id)s;

-- set_cron_paused --
-- Pause or resume a cron; resuming counts as a new start, so ticks missed while paused are not
-- caught up.
UPDATE crons
SET paused = %(paused)s, updated_at = CASE WHEN %(paused)s THEN updated_at ELSE now() END
WHERE id = %(id)s
RETURNING id;

-- run_cron_now --
-- One extra run of a cron, due now, waking the dispatchers.
WITH fired AS (
    INSERT INTO jobs (id, cron_id, run_at, next_attempt_at, max_attempts, endpoint)
    SELECT %(job_id)s, id, now(), now(), %(max_attempts)s, endpoint FROM crons WHERE id = %(id)s
    RETURNING id
)
SELECT id, pg_notify('scheduler', 'j 0 ' || extract(epoch FROM now())) FROM fired;

-- backfill_cron --
-- Record the ticks of a cron that an operator asks for: jitter applies, overlap does not. A tick
-- overlap skipped is due again; one recorded otherwise (scheduled, sent, failed, cancelled) is
-- left alone, so asking twice sends each tick once. Nothing is recorded when the cron was
-- redefined since its ticks were computed (another revision). CTEs: the cron as it was, the
-- ticks recorded or made due again.
WITH cron AS (
    SELECT id, jitter, endpoint FROM crons WHERE id = %(id)s AND revision = %(revision)s
),
recorded AS (
    INSERT INTO jobs AS j (id, cron_id, run_at, next_attempt_at, max_attempts, endpoint)
    SELECT t.job_id, cron.id, t.run_at, t.run_at + make_interval(secs => random() * cron.jitter),
           %(max_attempts)s, cron.endpoint
    FROM cron CROSS JOIN unnest(%(job_ids)s::text[], %(run_ats)s::timestamptz[])
        AS t (job_id, run_at)
    ON CONFLICT (cron_id, run_at) WHERE cron_id IS NOT NULL DO UPDATE
    SET state = 'scheduled', next_attempt_at = EXCLUDED.next_attempt_at, finished_at = NULL,
        updated_at = now()
    WHERE j.state = 'skipped'
    RETURNING j.id
)
SELECT (SELECT count(*) FROM cron) AS found, (SELECT count(*) FROM recorded) AS recorded;

-- read_leader --
-- The dispatcher's heartbeat, for readiness checks.
SELECT epoch, heartbeat_at, now() - heartbeat_at AS age FROM dispatcher_leader;

-- delete_crons_by_id --
-- Remove one cron by id.
DELETE FROM crons WHERE id = %(id)s RETURNING id;

-- count_due_jobs --
-- Jobs due and waiting for a delivery slot, for the scheduler_due_jobs gauge (jobs_due_idx).
SELECT count(*) AS due FROM jobs WHERE state = 'scheduled' AND next_attempt_at <= %(now)s;

-- beat_dispatcher --
-- Register a dispatcher or renew its heartbeat, with what it holds and has delivered; returns the
-- database's clock so the dispatcher can tell how far its own is off.
INSERT INTO dispatchers (id, host, pid, in_flight, delivered, metrics_port)
VALUES (%(id)s, %(host)s, %(pid)s, %(in_flight)s, %(delivered)s, %(metrics_port)s)
ON CONFLICT (id) DO UPDATE
SET heartbeat_at = now(), in_flight = EXCLUDED.in_flight, delivered = EXCLUDED.delivered,
    metrics_port = EXCLUDED.metrics_port
RETURNING now() AS database_now;

-- remove_dispatcher --
-- A dispatcher that stopped cleanly leaves the list at once.
DELETE FROM dispatchers WHERE id = %(id)s;

-- prune_dispatchers --
-- Rows of dispatchers that vanished without removing themselves, long after anyone needs them.
DELETE FROM dispatchers WHERE heartbeat_at < now() - make_interval(secs => %(older_than)s)
RETURNING id;

-- list_dispatchers --
-- The live dispatchers, the leader first; the leader is the holder of a current epoch.
SELECT d.id, d.host, d.pid,
       CASE WHEN d.id = l.holder AND l.heartbeat_at > now() - make_interval(secs => %(live_seconds)s)
            THEN 'leader' ELSE 'member' END AS role,
       d.started_at, d.heartbeat_at, d.in_flight, d.delivered, d.metrics_port
FROM dispatchers d CROSS JOIN dispatcher_leader l
WHERE d.heartbeat_at > now() - make_interval(secs => %(live_seconds)s)
ORDER BY role, d.started_at, d.id;

-- database_now --
-- The database's clock, which judges when jobs and cron ticks are due.
SELECT now() AS database_now;

-- set_endpoint_limits --
-- Override an endpoint's limits at run time; a limit not being set (`set_*` false) is unchanged.
INSERT INTO endpoints (name, rate_limit, rate_limit_set, max_in_flight, max_in_flight_set)
VALUES (%(endpoint)s, %(rate_limit)s, %(set_rate_limit)s, %(max_in_flight)s,
        %(set_max_in_flight)s)
ON CONFLICT (name) DO UPDATE
SET rate_limit = CASE WHEN %(set_rate_limit)s THEN EXCLUDED.rate_limit
                      ELSE endpoints.rate_limit END,
    rate_limit_set = endpoints.rate_limit_set OR %(set_rate_limit)s,
    max_in_flight = CASE WHEN %(set_max_in_flight)s THEN EXCLUDED.max_in_flight
                         ELSE endpoints.max_in_flight END,
    max_in_flight_set = endpoints.max_in_flight_set OR %(set_max_in_flight)s,
    updated_at = now();

-- reset_endpoint_limits --
-- Back to the environment's limits.
UPDATE endpoints
SET rate_limit = NULL, rate_limit_set = false, max_in_flight = NULL, max_in_flight_set = false,
    updated_at = now()
WHERE name = %(endpoint)s;

-- set_endpoint_paused --
-- Pause or resume an endpoint's deliveries.
INSERT INTO endpoints (name, paused) VALUES (%(endpoint)s, %(paused)s)
ON CONFLICT (name) DO UPDATE SET paused = EXCLUDED.paused, updated_at = now();

-- notify_endpoints_changed --
-- Tell every dispatcher to reload which endpoints are paused or limited, and to look.
SELECT pg_notify('scheduler', 'e');

-- endpoint_figures --
-- Each named endpoint's run-time state with what it has in flight and due now (the partial
-- indexes on delivering and scheduled rows answer the counts; due is counted up to a cap, when
-- one is given).
SELECT n.name, coalesce(e.paused, false) AS paused, e.rate_limit,
       coalesce(e.rate_limit_set, false) AS rate_limit_set, e.max_in_flight,
       coalesce(e.max_in_flight_set, false) AS max_in_flight_set,
       (SELECT count(*) FROM jobs
        WHERE state = 'delivering' AND endpoint = n.name) AS in_flight,
       (SELECT count(*) FROM (SELECT 1 FROM jobs
                              WHERE state = 'scheduled' AND endpoint = n.name
                                AND next_attempt_at <= now()
                              LIMIT %(due_cap)s) AS due) AS due
FROM unnest(%(names)s::text[]) WITH ORDINALITY AS n (name, position)
LEFT JOIN endpoints e ON e.name = n.name
ORDER BY n.position;

-- unknown_endpoints --
-- Endpoint names that waiting jobs or crons use but this process does not know.
SELECT endpoint FROM jobs
WHERE state IN ('scheduled', 'delivering') AND endpoint <> ALL(%(names)s::text[])
UNION
SELECT endpoint FROM crons WHERE endpoint <> ALL(%(names)s::text[]);

-- insert_dashboard_session --
-- A dashboard login: its session, expiring `lifetime` seconds from now by the database's clock.
INSERT INTO dashboard_sessions (id_sha256, csrf_token, client_address, expires_at)
VALUES (%(id_sha256)s, %(csrf_token)s, %(client_address)s,
        now() + make_interval(secs => %(lifetime)s));

-- dashboard_session_csrf_token --
-- The CSRF token of a session that has not expired (none: logged out, expired or unknown).
SELECT csrf_token FROM dashboard_sessions
WHERE id_sha256 = %(id_sha256)s AND expires_at > now();

-- delete_dashboard_session --
-- Log a session out.
DELETE FROM dashboard_sessions WHERE id_sha256 = %(id_sha256)s;

-- reserve_login_attempt --
-- Count a login attempt against its client address before the secret is checked, unless the
-- address has used up its window (no row returned); a window past its length starts again.
-- Concurrent attempts from one address queue on its row, so the count holds across web workers.
INSERT INTO dashboard_login_failures AS f (client_address, failures, window_started_at)
VALUES (%(client_address)s, 1, now())
ON CONFLICT (client_address) DO UPDATE
SET failures = CASE WHEN f.window_started_at <= now() - make_interval(secs => %(window)s)
                    THEN 1 ELSE f.failures + 1 END,
    window_started_at = CASE WHEN f.window_started_at <= now() - make_interval(secs => %(window)s)
                             THEN now() ELSE f.window_started_at END
WHERE f.failures < %(limit)s
   OR f.window_started_at <= now() - make_interval(secs => %(window)s)
RETURNING f.failures;

-- login_retry_after --
-- Seconds until a client address's window ends and it may try to log in again.
SELECT greatest(extract(epoch FROM window_started_at + make_interval(secs => %(window)s)
                                   - now()), 0)::float8 AS retry_after
FROM dashboard_login_failures WHERE client_address = %(client_address)s;

-- forgive_login_attempt --
-- A reserved attempt that logged in is not a failure.
UPDATE dashboard_login_failures SET failures = failures - 1
WHERE client_address = %(client_address)s AND failures > 0;

-- prune_dashboard_logins --
-- Expired sessions and failure counts whose window has passed; the two DELETEs are CTEs so that
-- one round trip does both.
WITH sessions AS (
    DELETE FROM dashboard_sessions WHERE expires_at <= now() RETURNING 1
), failures AS (
    DELETE FROM dashboard_login_failures
    WHERE window_started_at <= now() - make_interval(secs => %(window)s) RETURNING 1
)
SELECT (SELECT count(*) FROM sessions) AS sessions, (SELECT count(*) FROM failures) AS failures;

-- add_delivery_minute --
-- Add one recorded batch's outcomes to this dispatcher's row of the current minute by the
-- database's clock (one row per dispatcher, so dispatchers never wait on each other's lock);
-- lateness buckets add up bucket by bucket.
INSERT INTO delivery_minutes AS m (minute, dispatcher_id, delivered, failed, retried, lateness)
VALUES (date_trunc('minute', now(), 'UTC'), %(dispatcher_id)s, %(delivered)s, %(failed)s,
        %(retried)s, %(lateness)s)
ON CONFLICT (minute, dispatcher_id) DO UPDATE
SET delivered = m.delivered + EXCLUDED.delivered, failed = m.failed + EXCLUDED.failed,
    retried = m.retried + EXCLUDED.retried,
    lateness = ARRAY(
        SELECT coalesce(mine, 0) + coalesce(added, 0)
        FROM unnest(m.lateness, EXCLUDED.lateness) WITH ORDINALITY AS u (mine, added, place)
        ORDER BY place
    );

-- delivery_minutes --
-- Every dispatcher's rows of the minutes starting at or after `since`, oldest first (the
-- primary key's leading column serves it); the store sums them per minute.
SELECT minute, delivered, failed, retried, lateness
FROM delivery_minutes
WHERE minute >= %(since)s
ORDER BY minute;

-- prune_delivery_minutes --
-- Rollup rows of minutes before `before`; a day holds 1,440 per dispatcher, so one statement.
WITH pruned AS (
    DELETE FROM delivery_minutes WHERE minute < %(before)s RETURNING minute
)
SELECT count(*) AS pruned FROM pruned;

-- failed_groups --
-- Failed jobs by the kind of their last error: how many, and when the latest failed. Read from
-- jobs_failed_kind_idx alone, which holds exactly the failed rows with their finish times.
SELECT last_error_kind AS kind, count(*) AS count, max(finished_at) AS latest_finished_at
FROM jobs
WHERE state = 'failed'
GROUP BY last_error_kind
ORDER BY count(*) DESC, last_error_kind;
