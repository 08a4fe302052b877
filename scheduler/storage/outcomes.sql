-- settle_outcomes --
-- One recorded batch in one statement, so that a batch without retries or give-backs commits in
-- a single round trip (BEGIN, three statements and COMMIT took five). Its data-modifying CTEs
-- each run once, to completion, on the same snapshot, and none reads another's rows:
-- `recorded`: the attempts, one row per element of `attempts` (JSON rather than an array per
-- column, which psycopg builds in Python element by element), a repeat of one ignored.
-- `minute`: the batch's outcomes added to this dispatcher's row of the current minute by the
-- database's clock (one row per dispatcher, so dispatchers never wait on each other's lock;
-- lateness buckets add up bucket by bucket); none when `dispatcher_id` is null.
-- `outcomes` and `finished`: deliveries closed as delivered or failed, one per element of
-- `outcomes` (a claim never sent, when `attempted` is false, does not count as an attempt); a job
-- re-claimed meanwhile is left alone. A failure of a job whose cancel was asked during the attempt
-- ends it cancelled (a cancel wins over a failure, never over a delivery). A job that ends failed
-- makes a failure notification to `notice_endpoint` (id from `notice_id`) in the same statement,
-- so exactly once per failure; a notification that fails makes none. Likewise a job with a
-- callback that ends delivered or failed makes its callback (id from `callback_id`, its answer's
-- `response` from the dispatcher, callbacks.py), to its callback endpoint with
-- `callback_attempts` and the job's trace context; a notification or a callback makes neither.
WITH recorded AS (
    INSERT INTO delivery_attempts
        (job_id, attempt, started_at, duration_ms, status_code, error, response_excerpt,
         error_kind)
    SELECT job_id, attempt, started_at, duration_ms, status_code, error, response_excerpt,
           error_kind
    FROM json_to_recordset(%(attempts)s::json)
        AS a (job_id text, attempt integer, started_at timestamptz, duration_ms integer,
              status_code integer, error text, response_excerpt text, error_kind text)
    ON CONFLICT (job_id, attempt) DO NOTHING
),
minute AS (
    INSERT INTO delivery_minutes AS m (minute, dispatcher_id, delivered, failed, retried, lateness)
    SELECT date_trunc('minute', now(), 'UTC'), %(dispatcher_id)s::text, %(delivered)s::integer,
           %(failed)s::integer, %(retried)s::integer, %(lateness)s::integer[]
    WHERE %(dispatcher_id)s::text IS NOT NULL
    ON CONFLICT (minute, dispatcher_id) DO UPDATE
    SET delivered = m.delivered + EXCLUDED.delivered, failed = m.failed + EXCLUDED.failed,
        retried = m.retried + EXCLUDED.retried,
        lateness = ARRAY(
            SELECT coalesce(mine, 0) + coalesce(added, 0)
            FROM unnest(m.lateness, EXCLUDED.lateness) WITH ORDINALITY AS u (mine, added, place)
            ORDER BY place
        )
),
outcomes AS (
    SELECT job_id, claim_token, state, attempted, status_code, error, error_kind, notice_id,
           callback_id, response
    FROM json_to_recordset(%(outcomes)s::json)
        AS o (job_id text, claim_token bigint, state text, attempted boolean, status_code integer,
              error text, error_kind text, notice_id text, callback_id text, response jsonb)
),
finished AS (
    UPDATE jobs
    SET state = CASE WHEN o.state = 'failed' AND jobs.cancel_requested_at IS NOT NULL
                     THEN 'cancelled' ELSE o.state END,
        attempts = jobs.attempts - CASE WHEN o.attempted THEN 0 ELSE 1 END,
        leased_until = NULL, claimed_by = NULL, claim_token = NULL,
        last_status = o.status_code, last_error = o.error, last_error_kind = o.error_kind,
        finished_at = now(), updated_at = now()
    FROM outcomes AS o
    WHERE jobs.id = o.job_id AND jobs.state = 'delivering' AND jobs.claim_token = o.claim_token
    RETURNING jobs.id, jobs.cron_id, jobs.endpoint, jobs.attempts, jobs.last_status,
              jobs.last_error, jobs.last_error_kind, jobs.run_at, jobs.event, jobs.state,
              jobs.created_at, jobs.finished_at, jobs.callback, jobs.traceparent,
              jobs.tracestate, o.notice_id, o.callback_id, o.response
)
INSERT INTO jobs (id, body, run_at, next_attempt_at, max_attempts, endpoint, event, traceparent,
                  tracestate)
SELECT notice_id,
       jsonb_build_object('event', 'job.failed', 'job', jsonb_build_object(
           'id', id, 'cron_id', cron_id, 'endpoint', endpoint, 'attempts', attempts,
           'last_status', last_status, 'last_error', last_error,
           'last_error_kind', last_error_kind,
           'timestamp', to_char(run_at AT TIME ZONE 'UTC', {utc_format}))),
       now(), now(), %(notice_attempts)s, %(notice_endpoint)s, 'job.failed', NULL, NULL
FROM finished
WHERE state = 'failed' AND event IS NULL AND %(notice_endpoint)s::text IS NOT NULL
UNION ALL
SELECT callback_id,
       jsonb_build_object('event', 'job.' || state, 'job', jsonb_build_object(
           'id', id, 'cron_id', cron_id, 'endpoint', endpoint, 'state', state,
           'attempts', attempts, 'last_status', last_status, 'last_error', last_error,
           'last_error_kind', last_error_kind,
           'timestamp', to_char(run_at AT TIME ZONE 'UTC', {utc_format}),
           'created_at', to_char(created_at AT TIME ZONE 'UTC', {utc_format}),
           'finished_at', to_char(finished_at AT TIME ZONE 'UTC', {utc_format})),
           'response', response),
       now(), now(), %(callback_attempts)s, callback, 'job.' || state, traceparent, tracestate
FROM finished
WHERE state IN ('delivered', 'failed') AND event IS NULL AND callback IS NOT NULL
  AND callback_id IS NOT NULL;

-- utc_format --
-- Part of settle_outcomes: how the messages it makes write a moment in UTC, RFC 3339 with
-- microseconds (callbacks.py counts on its fixed width).
'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'

-- schedule_retry --
-- Put a failed attempt back in line for its next try, its backoff counted on the database's clock;
-- a job whose cancel was asked during the attempt ends cancelled instead (its next try is not
-- set: it has none).
UPDATE jobs
SET {cancelled_or_scheduled}, leased_until = NULL, claimed_by = NULL, claim_token = NULL,
    next_attempt_at = CASE WHEN cancel_requested_at IS NULL
                           THEN now() + make_interval(secs => %(retry_in)s)
                           ELSE next_attempt_at END,
    last_status = %(status_code)s, last_error = %(error)s, last_error_kind = %(error_kind)s,
    updated_at = now()
WHERE id = %(job_id)s AND state = 'delivering' AND claim_token = %(claim_token)s;

-- give_back_delivery --
-- A claimed delivery that was never sent (its dispatcher is stopping) is due again at once, or
-- cancelled if a cancel was asked meanwhile; its claim does not count as an attempt.
UPDATE jobs
SET {cancelled_or_scheduled}, attempts = attempts - 1, leased_until = NULL, claimed_by = NULL,
    claim_token = NULL, updated_at = now()
WHERE id = %(job_id)s AND state = 'delivering' AND claim_token = %(claim_token)s;

-- cancelled_or_scheduled --
-- Part of every statement that ends a claim without an answer that closes the job (here, and in
-- deliveries.sql release_dead_claims, which repeats it): the job is due again, or if a cancel
-- was asked while it was claimed, it ends cancelled.
state = CASE WHEN cancel_requested_at IS NULL THEN 'scheduled' ELSE 'cancelled' END,
finished_at = CASE WHEN cancel_requested_at IS NULL THEN NULL ELSE now() END

-- delivery_minutes --
-- Every dispatcher's rows of the minutes starting at or after `since`, oldest first (the
-- primary key's leading column serves it); outcomes.delivery_minutes sums them per minute.
SELECT minute, delivered, failed, retried, lateness
FROM delivery_minutes
WHERE minute >= %(since)s
ORDER BY minute;
