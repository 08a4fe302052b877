-- claim --
-- Part of every claim: a claimed job is being delivered under a new token and a lease, its
-- attempt counted (a claim given back unsent uncounts it). A job with its own timeout holds its
-- lease that much longer, so that its own attempt fits after one of the usual length; one that
-- waited longer for its thread has its lease renewed before it starts (renew_lease).
SET state = 'delivering', attempts = attempts + 1,
    leased_until = now() + make_interval(
        secs => %(lease_seconds)s + coalesce((http_options ->> 'timeout')::float8, 0)),
    claimed_by = %(dispatcher_id)s, claim_token = nextval('claim_tokens'), run_requested = false,
    updated_at = now()

-- claimed_delivery --
-- Part of every claim: what a claimed delivery carries to its sending thread (jobs.Delivery).
id, cron_id, body::text AS body, run_at, attempts, max_attempts, claim_token, endpoint, event,
traceparent, tracestate, next_attempt_at AS due_at, http_options, callback

-- claimable_until --
-- Part of claim_due_jobs and next_due_in: the latest due time of `waiting.endpoint` that this
-- dispatcher claims. An endpoint it knows (`known`): due within `ahead`. One it does not know
-- (during a rolling deploy that adds it, its jobs can come before every dispatcher knows it): only
-- once no dispatcher has known it for `grace` seconds (endpoint_sightings), and then only jobs
-- due that long, which it claims to fail unsent.
CASE WHEN waiting.endpoint = ANY(%(known)s) THEN now() + make_interval(secs => %(ahead)s)
     WHEN EXISTS (SELECT 1 FROM endpoint_sightings AS seen
                  WHERE seen.name = waiting.endpoint
                    AND seen.known_at > now() - make_interval(secs => %(grace)s))
     THEN '-infinity'::timestamptz
     ELSE now() - make_interval(secs => %(grace)s) END

-- claim_due_jobs --
-- Any dispatcher claims, leader or not; due-ness is judged by the database's clock, and a job due
-- within `ahead` seconds is claimed already, with `starts_in` saying how many seconds from now it
-- is due (tuning.CLAIM_AHEAD_SECONDS). Claimed per endpoint through jobs_endpoint_due_idx, each
-- endpoint with waiting jobs in turn (waiting_endpoints), so that the due backlog of an endpoint
-- left out is never stepped over: the `held` ones (paused or limited, claimed apart by
-- claim_endpoint_jobs), and any of the `known` ones paused or limited at run time since `held`
-- was read, so a change holds from its commit. An endpoint this dispatcher does not know is left
-- to those that do ({claimable_until}). Both checks name only the endpoint, so the planner runs
-- them once per endpoint before reading its jobs. Each endpoint takes no more than its share, and
-- the endpoints take turns. SKIP LOCKED: a row another dispatcher is claiming is left to it.
UPDATE jobs
{claim}
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
          AND (jobs.endpoint, next_attempt_at) <= (waiting.endpoint, {claimable_until})
          AND waiting.endpoint <> ALL(%(held)s::text[])
          AND NOT EXISTS (SELECT 1 FROM held_endpoints AS held
                          WHERE held.name = waiting.endpoint AND held.name = ANY(%(known)s))
        ORDER BY jobs.endpoint, next_attempt_at
        -- Its share (slot planner): what is left of it for an endpoint named in `shared`,
        -- `newcomer` for any other.
        LIMIT coalesce((SELECT share.room
                        FROM unnest(%(shared)s::text[], %(rooms)s::integer[]) AS share (name, room)
                        WHERE share.name = waiting.endpoint), %(newcomer)s)
        FOR UPDATE SKIP LOCKED
    ) AS due
    -- Turns: every endpoint's first due job before any endpoint's second, counting what each
    -- already holds (`holding`, beside `shared`), so that one endpoint's backlog holds
    -- another's job back by one turn at most, and the least busy goes first.
    ORDER BY row_number() OVER (PARTITION BY waiting.endpoint ORDER BY due.next_attempt_at)
             + coalesce((SELECT busy.holding
                         FROM unnest(%(shared)s::text[], %(holding)s::integer[])
                             AS busy (name, holding)
                         WHERE busy.name = waiting.endpoint), 0),
             due.next_attempt_at
    LIMIT %(limit)s
)
RETURNING {claimed_delivery},
          extract(epoch FROM next_attempt_at - now())::float8 AS starts_in;

-- claim_endpoint_jobs --
-- A paused or limited endpoint's share of its jobs without a key (claim_key_jobs takes the
-- keyed ones), taken while its row in `endpoints` is locked (by
-- lock_endpoint in the same transaction), so limits hold across dispatchers. `{asked_only}` is
-- filled in by the module: nothing, or while the endpoint is paused `AND run_requested` (only
-- jobs an operator asked to run go), a literal rather than a parameter so that even a generic
-- plan reads those from jobs_endpoint_run_requested_idx instead of checking every due row of the
-- endpoint. SKIP LOCKED as in claim_due_jobs.
UPDATE jobs
{claim}
-- An array, so that even a generic plan finds the rows by id rather than joining a scan of jobs.
WHERE id = ANY(ARRAY(
    SELECT id FROM jobs
    WHERE state = 'scheduled' AND endpoint = %(endpoint)s AND flow_key IS NULL
      AND next_attempt_at <= now() {asked_only}
    ORDER BY flow_key, next_attempt_at  -- as jobs_flow_due_idx reads them
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
))
RETURNING {claimed_delivery},
          extract(epoch FROM now() - next_attempt_at)::float8 AS held_back;

-- lock_endpoint --
-- An endpoint's run-time state, its row locked for the rest of the transaction (made if absent).
-- The bucket is refilled up to the moment the lock was granted (clock_timestamp, not the
-- transaction's start: waiting for the lock must not earn tokens).
INSERT INTO endpoints (name) VALUES (%(endpoint)s)
ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name
RETURNING paused, rate_limit, rate_limit_set, max_in_flight, max_in_flight_set, tokens,
          flow_cursor, clock_timestamp() AS locked_at,
          extract(epoch FROM clock_timestamp() - refilled_at)::float8 AS since_refill;

-- count_in_flight --
-- Deliveries in progress to one endpoint, across every dispatcher (jobs_endpoint_delivering_idx),
-- but those whose attempt has `ended` (the claiming dispatcher's, not yet recorded): they hold a
-- row in `delivering` and no request at the endpoint.
SELECT count(*) AS in_flight FROM jobs
WHERE state = 'delivering' AND endpoint = %(endpoint)s AND id <> ALL(%(ended)s::text[]);

-- save_tokens --
-- What is left in an endpoint's token bucket after a claim.
UPDATE endpoints SET tokens = %(tokens)s, refilled_at = %(refilled_at)s WHERE name = %(endpoint)s;

-- endpoint_due_in --
-- Seconds until an endpoint's next job without a key is due (negative: overdue); NULL if none
-- (key_turns says the same of each key). `{asked_only}` as in claim_endpoint_jobs: while paused,
-- only jobs an operator asked to run count.
SELECT extract(epoch FROM (
    SELECT next_attempt_at FROM jobs
    WHERE state = 'scheduled' AND endpoint = %(endpoint)s AND flow_key IS NULL {asked_only}
    ORDER BY flow_key, next_attempt_at  -- as jobs_flow_due_idx reads them
    LIMIT 1) - now())::float8 AS due_in;

-- next_due_in --
-- Seconds until the earliest waiting job is due by the database's clock; negative when one is
-- overdue; NULL when none waits. The first job of each endpoint claim_due_jobs would claim from,
-- found as it finds them (a min() over every waiting job read them all: 62 ms a call with
-- 1,000,000 waiting). Paused and limited endpoints' jobs are planned for by their own claims. An
-- endpoint this dispatcher does not know counts from when its grace would end, as
-- {claimable_until} has it.
SELECT extract(epoch FROM min(
           CASE WHEN waiting.endpoint = ANY(%(known)s) THEN first.next_attempt_at
                ELSE greatest(first.next_attempt_at, seen.known_at)
                     + make_interval(secs => %(grace)s) END) - now())::float8 AS due_in
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
) AS first
LEFT JOIN endpoint_sightings AS seen ON seen.name = waiting.endpoint;

-- release_dead_claims --
-- Deliveries held by a dispatcher whose heartbeat went stale (killed, cut off), or whose lease
-- ran out, are due again, or cancelled if a cancel was asked while they were claimed (as
-- outcomes.sql cancelled_or_scheduled); live dispatchers keep theirs (jobs_delivering_idx keeps
-- this small).
UPDATE jobs
SET state = CASE WHEN cancel_requested_at IS NULL THEN 'scheduled' ELSE 'cancelled' END,
    finished_at = CASE WHEN cancel_requested_at IS NULL THEN NULL ELSE now() END,
    leased_until = NULL, claimed_by = NULL, claim_token = NULL, updated_at = now()
WHERE state = 'delivering'
  AND (leased_until < now()
       OR claimed_by IS NOT NULL AND NOT EXISTS (
           SELECT 1 FROM dispatchers
           WHERE dispatchers.id = jobs.claimed_by
             AND dispatchers.heartbeat_at > now() - make_interval(secs => %(live_seconds)s)))
RETURNING id;

-- cancel_asked --
-- Whether a cancel was asked for a claimed delivery since it was claimed (jobs.sql
-- cancel_requested): asked before a delivery that waited for a thread starts.
SELECT cancel_requested_at IS NOT NULL AS asked FROM jobs
WHERE id = %(id)s AND claim_token = %(claim_token)s;

-- key_turns --
-- An endpoint's keys with waiting jobs, in turn from the one after `after` (its flow_cursor), one
-- probe of jobs_flow_due_idx per key and at most `probes` keys: each with its limits and bucket,
-- its deliveries in progress (counted when it has a max_in_flight), how many of its jobs are due
-- now (up to `cap`) and in how many seconds the first of the others is (NULL when `cap` are due or
-- none waits). A key's jobs are asked for as a range of keys in the order of jobs_flow_due_idx,
-- which only that index gives without a sort: with `flow_key =`, the order by key is implied,
-- and where the table was last vacuumed empty (retention, then a burst), the narrower
-- jobs_endpoint_due_idx won the tie and each key read every due job of the endpoint. A key's row
-- in flows is found by key, not joined from a scan of them.
-- `{asked_only}` as in claim_endpoint_jobs.
WITH RECURSIVE scan (key, place) AS (
    (SELECT flow_key, 1 FROM jobs
     WHERE state = 'scheduled' AND endpoint = %(endpoint)s AND flow_key > %(after)s
     ORDER BY flow_key LIMIT 1)
    UNION ALL
    SELECT (SELECT jobs.flow_key FROM jobs
            WHERE jobs.state = 'scheduled' AND jobs.endpoint = %(endpoint)s
              AND jobs.flow_key > scan.key
            ORDER BY jobs.flow_key LIMIT 1),
           scan.place + 1
    FROM scan
    WHERE scan.key IS NOT NULL AND scan.place < %(probes)s
)
SELECT scan.key, flow.rate_limit, flow.max_in_flight, flow.tokens, flow.since_refill,
       CASE WHEN flow.max_in_flight IS NULL THEN 0
            ELSE (SELECT count(*) FROM jobs
                  WHERE state = 'delivering' AND flow_key IS NOT NULL
                    AND endpoint = %(endpoint)s AND flow_key = scan.key) END AS in_flight,
       least(waiting.due, %(cap)s) AS due, waiting.next_in
FROM scan
LEFT JOIN LATERAL (
    SELECT rate_limit, max_in_flight, tokens,
           extract(epoch FROM clock_timestamp() - refilled_at)::float8 AS since_refill
    FROM flows WHERE flows.endpoint = %(endpoint)s AND flows.key = scan.key
) AS flow ON true
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE first.at <= now()) AS due,
           extract(epoch FROM min(first.at) FILTER (WHERE first.at > now()) - now())::float8
               AS next_in
    FROM (SELECT next_attempt_at AS at FROM jobs
          WHERE state = 'scheduled' AND endpoint = %(endpoint)s
            AND flow_key >= scan.key AND flow_key <= scan.key {asked_only}
          ORDER BY flow_key, next_attempt_at  -- as jobs_flow_due_idx reads them
          LIMIT %(cap)s + 1) AS first
) AS waiting
WHERE scan.key IS NOT NULL
ORDER BY scan.place;

-- claim_key_jobs --
-- The jobs each key's turns give it (`counts`, beside `keys`), its earliest due first. Run under
-- the endpoint's row lock (claim_endpoint_jobs); SKIP LOCKED as in claim_due_jobs.
UPDATE jobs
{claim}
WHERE id = ANY(ARRAY(  -- as in claim_endpoint_jobs
    SELECT picked.id
    FROM unnest(%(keys)s::text[], %(counts)s::integer[]) AS turn (key, count)
    CROSS JOIN LATERAL (
        SELECT id FROM jobs
        WHERE state = 'scheduled' AND endpoint = %(endpoint)s
          AND flow_key >= turn.key AND flow_key <= turn.key  -- as in key_turns
          AND next_attempt_at <= now() {asked_only}
        ORDER BY flow_key, next_attempt_at  -- as jobs_flow_due_idx reads them
        LIMIT turn.count
        FOR UPDATE SKIP LOCKED
    ) AS picked
))
RETURNING {claimed_delivery},
          extract(epoch FROM now() - next_attempt_at)::float8 AS held_back;

-- unkeyed_due --
-- How many of an endpoint's jobs without a key are due now, up to `cap` (they take a turn beside
-- its keys). `{asked_only}` as in claim_endpoint_jobs.
SELECT count(*) AS due FROM (
    SELECT 1 FROM jobs
    WHERE state = 'scheduled' AND endpoint = %(endpoint)s AND flow_key IS NULL
      AND next_attempt_at <= now() {asked_only}
    ORDER BY flow_key, next_attempt_at  -- as jobs_flow_due_idx reads them
    LIMIT %(cap)s
) AS due;

-- renew_lease --
-- A claimed delivery about to start whose lease might run out before its attempt's deadline
-- (it waited for its thread behind a long attempt) holds it for `lease_seconds` more from now, if
-- its claim is still this one; whether it is, and whether a cancel was asked meanwhile.
UPDATE jobs
SET leased_until = greatest(leased_until, now() + make_interval(secs => %(lease_seconds)s))
WHERE id = %(id)s AND state = 'delivering' AND claim_token = %(claim_token)s
RETURNING cancel_requested_at IS NOT NULL AS asked;
