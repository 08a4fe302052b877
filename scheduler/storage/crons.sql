-- lock_crons --
-- Serialise replacements of the cron set so two concurrent ones cannot interleave.
SELECT pg_advisory_xact_lock(hashtext('scheduler.crons'));

-- delete_crons_except --
-- Remove the crons that the new set no longer names.
DELETE FROM crons WHERE NOT (id = ANY(%(ids)s)) RETURNING id;

-- cancel_pending_fires --
-- The unfinished runs of removed crons are cancelled as a cancel of each would cancel it: one
-- waiting for its time or a retry now, one being delivered when its attempt ends. The module fills
-- in `{cancel_requested}` and `{cancellable}` from jobs.sql, the one home of that rule.
UPDATE jobs SET {cancel_requested}
WHERE cron_id = ANY(%(cron_ids)s) AND {cancellable};

-- upsert_cron --
-- Create a cron, or give it a new revision when its spec changed; an unchanged spec keeps its
-- timer and its revision. Jitter, overlap, the catch-up window, the endpoint, the flow key, the
-- HTTP options and the callback are read at each tick, so a change of only those is stored without touching the timer (nor
-- updated_at, the start of the current schedule). New bounds (start_at, end_at, max_runs) start
-- the cron again: no runs counted, not ended, its schedule starting now. A cron removed when it
-- ended is not made again while its tombstone holds the same bounds (forget_changed_tombstone
-- runs first).
INSERT INTO crons (id, spec, timezone, jitter, overlap, endpoint, flow_key, flow_rate,
                   flow_max_in_flight, catchup_window, start_at, end_at, max_runs,
                   delete_after_end, http_options, callback)
SELECT %(id)s, %(spec)s, %(timezone)s, %(jitter)s, %(overlap)s, %(endpoint)s, %(flow_key)s,
       %(flow_rate)s, %(flow_max_in_flight)s, %(catchup_window)s, %(start_at)s, %(end_at)s,
       %(max_runs)s, %(delete_after_end)s, %(http_options)s::jsonb, %(callback)s
WHERE NOT EXISTS (SELECT 1 FROM cron_tombstones WHERE cron_tombstones.id = %(id)s)
ON CONFLICT (id) DO UPDATE
SET spec = EXCLUDED.spec, timezone = EXCLUDED.timezone, jitter = EXCLUDED.jitter,
    overlap = EXCLUDED.overlap, endpoint = EXCLUDED.endpoint, flow_key = EXCLUDED.flow_key,
    flow_rate = EXCLUDED.flow_rate, flow_max_in_flight = EXCLUDED.flow_max_in_flight,
    catchup_window = EXCLUDED.catchup_window, delete_after_end = EXCLUDED.delete_after_end,
    start_at = EXCLUDED.start_at, end_at = EXCLUDED.end_at, max_runs = EXCLUDED.max_runs,
    http_options = EXCLUDED.http_options, callback = EXCLUDED.callback,
    revision = CASE WHEN crons.spec IS DISTINCT FROM EXCLUDED.spec
                    THEN nextval('cron_revisions') ELSE crons.revision END,
    last_fire_at = CASE WHEN crons.spec IS DISTINCT FROM EXCLUDED.spec
                        THEN NULL ELSE crons.last_fire_at END,
    runs = CASE WHEN {bounds_changed} THEN 0 ELSE crons.runs END,
    ended_at = CASE WHEN {bounds_changed} THEN NULL ELSE crons.ended_at END,
    updated_at = CASE WHEN crons.spec IS DISTINCT FROM EXCLUDED.spec OR {bounds_changed}
                      THEN now() ELSE crons.updated_at END
WHERE crons.spec IS DISTINCT FROM EXCLUDED.spec
   OR crons.jitter IS DISTINCT FROM EXCLUDED.jitter
   OR crons.overlap IS DISTINCT FROM EXCLUDED.overlap
   OR crons.endpoint IS DISTINCT FROM EXCLUDED.endpoint
   OR crons.flow_key IS DISTINCT FROM EXCLUDED.flow_key
   OR crons.flow_rate IS DISTINCT FROM EXCLUDED.flow_rate
   OR crons.flow_max_in_flight IS DISTINCT FROM EXCLUDED.flow_max_in_flight
   OR crons.catchup_window IS DISTINCT FROM EXCLUDED.catchup_window
   OR crons.delete_after_end IS DISTINCT FROM EXCLUDED.delete_after_end
   OR crons.http_options IS DISTINCT FROM EXCLUDED.http_options
   OR crons.callback IS DISTINCT FROM EXCLUDED.callback
   OR {bounds_changed};

-- bounds_changed --
-- The new definition's start, end or number of runs differs from the stored cron's.
(crons.start_at IS DISTINCT FROM EXCLUDED.start_at OR crons.end_at IS DISTINCT FROM EXCLUDED.end_at
 OR crons.max_runs IS DISTINCT FROM EXCLUDED.max_runs)

-- forget_changed_tombstone --
-- A cron set that names a removed cron with other bounds starts it again; with the same bounds
-- the tombstone stays, and upsert_cron makes nothing.
DELETE FROM cron_tombstones
WHERE id = %(id)s
  AND (start_at IS DISTINCT FROM %(start_at)s OR end_at IS DISTINCT FROM %(end_at)s
       OR max_runs IS DISTINCT FROM %(max_runs)s);

-- forget_tombstone --
-- PUT /cron/<id> defines the cron afresh, whatever ended before.
DELETE FROM cron_tombstones WHERE id = %(id)s;

-- forget_tombstones_except --
-- A cron the set no longer names may come back later as a new one.
DELETE FROM cron_tombstones WHERE NOT (id = ANY(%(ids)s));

-- delete_crons_by_id --
-- Remove one cron by id.
DELETE FROM crons WHERE id = %(id)s RETURNING id;

-- list_crons --
-- Every cron with what the dispatcher needs to schedule it.
SELECT id, spec, timezone, revision, paused, last_fire_at, created_at, updated_at, jitter,
       overlap, endpoint, catchup_window, start_at, end_at, max_runs, runs, ended_at,
       delete_after_end, http_options, callback
FROM crons ORDER BY id;

-- cron_statuses --
-- Crons with their latest run's state and HTTP status: the one named by `id`, or all of them in
-- id order after `after` (from the first when NULL), up to `limit` (all when NULL).
SELECT c.id, c.spec, c.timezone, c.revision, c.paused, c.last_fire_at, c.created_at,
       c.updated_at, c.jitter, c.overlap, c.endpoint, c.flow_key, c.flow_rate,
       c.flow_max_in_flight, c.catchup_window, c.start_at, c.end_at, c.max_runs, c.runs,
       c.ended_at, c.delete_after_end, c.http_options, c.callback, last_run.state AS last_state,
       last_run.last_status AS last_status
FROM crons c
LEFT JOIN LATERAL (
    SELECT state, last_status FROM jobs
    WHERE jobs.cron_id = c.id ORDER BY id DESC LIMIT 1
) AS last_run ON true
WHERE (%(id)s::text IS NULL OR c.id = %(id)s)
  AND (%(after)s::text IS NULL OR c.id > %(after)s)
ORDER BY c.id
LIMIT %(limit)s;

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
    INSERT INTO jobs (id, cron_id, run_at, next_attempt_at, max_attempts, endpoint, flow_key,
                      http_options, callback)
    SELECT %(job_id)s, id, now(), now(), %(max_attempts)s, endpoint, flow_key, http_options,
           callback
    FROM crons WHERE id = %(id)s
    RETURNING id, flow_key
)
SELECT id, flow_key, pg_notify('scheduler', 'j 0') FROM fired;

-- backfill_cron --
-- Record the ticks of a cron that an operator asks for: jitter applies, overlap does not. A tick
-- overlap skipped is due again; one recorded otherwise (scheduled, sent, failed, cancelled) is
-- left alone, so asking twice sends each tick once. Nothing is recorded when the cron was
-- redefined since its ticks were computed (another revision). CTEs: the cron as it was, the
-- ticks recorded or made due again.
WITH cron AS (
    SELECT id, jitter, endpoint, flow_key, http_options, callback FROM crons
    WHERE id = %(id)s AND revision = %(revision)s
),
recorded AS (
    INSERT INTO jobs AS j (id, cron_id, run_at, next_attempt_at, max_attempts, endpoint,
                           flow_key, http_options, callback)
    SELECT t.job_id, cron.id, t.run_at, t.run_at + make_interval(secs => random() * cron.jitter),
           %(max_attempts)s, cron.endpoint, cron.flow_key, cron.http_options, cron.callback
    FROM cron CROSS JOIN unnest(%(job_ids)s::text[], %(run_ats)s::timestamptz[])
        AS t (job_id, run_at)
    ON CONFLICT (cron_id, run_at) WHERE cron_id IS NOT NULL DO UPDATE
    SET state = 'scheduled', next_attempt_at = EXCLUDED.next_attempt_at, finished_at = NULL,
        updated_at = now()
    WHERE j.state = 'skipped'
    RETURNING j.id
)
SELECT (SELECT count(*) FROM cron) AS found, (SELECT count(*) FROM recorded) AS recorded;

-- running_schedules --
-- The distinct specs of the running crons: one timer each.
SELECT DISTINCT spec FROM crons WHERE NOT paused AND ended_at IS NULL ORDER BY spec;

-- schedule_starts --
-- For each spec of `specs`, how many running crons have it and the earliest moment after which
-- one of them is owed ticks: its latest recorded tick, or the start of its current schedule
-- (creation, spec change, resume or new bounds), or just before its start_at, whichever is
-- latest.
SELECT spec, count(*) AS crons,
       min(greatest(last_fire_at, updated_at, start_at - interval '1 microsecond')) AS since
FROM crons
WHERE NOT paused AND ended_at IS NULL AND spec = ANY(%(specs)s::text[])
GROUP BY spec;

-- record_ticks --
-- One job per tick owed, for every running cron of each (spec, run_at) pair: a tick after its
-- cron's latest recorded tick and after the start of its current schedule, from its start_at and
-- up to its end_at. The unique (cron_id, run_at) index absorbs repeats. A tick older than its
-- cron's catch-up window (at least `tolerance`) is recorded `missed`, never to be sent; under
-- overlap 'skip' one is recorded `skipped` while the cron has a run not finished (in a statement
-- that holds several new ticks of one cron, each after the first has such a run). Others are due
-- a random part of the cron's jitter after their tick, and count as runs: once a cron has
-- max_runs of them it ends, and nothing after its last run is recorded. Jobs take their ids from
-- `job_ids` in tick order: ticks past its end are left for the next statement, and a cron's
-- latest recorded tick moves only over what was recorded, so what is left over is still owed.
-- CTEs: the ticks owed, numbered in time order; those with an id; those not recorded yet; their
-- states; those within max_runs; the jobs; each cron's latest tick and new runs.
-- The policies stay in the statement that records the tick, as in backfill_cron: jitter, window
-- and bounds are read from the cron's row as it is then, and the overlap check reads the cron's
-- unfinished runs in the same snapshot as the insert.
WITH owed AS (
    SELECT crons.id AS cron_id, crons.endpoint, crons.flow_key, crons.jitter, crons.overlap,
           crons.runs, crons.max_runs, crons.http_options, crons.callback, t.run_at,
           t.run_at < now() - make_interval(
               secs => greatest(coalesce(crons.catchup_window, %(window)s), %(tolerance)s)
           ) AS missed,
           row_number() OVER (ORDER BY t.run_at, crons.id) AS place
    FROM unnest(%(specs)s::text[], %(run_ats)s::timestamptz[]) AS t (spec, run_at)
    JOIN crons ON crons.spec = t.spec
    WHERE NOT crons.paused AND crons.ended_at IS NULL
      AND t.run_at > greatest(crons.last_fire_at, crons.updated_at)
      AND t.run_at >= coalesce(crons.start_at, '-infinity')
      AND t.run_at <= coalesce(crons.end_at, 'infinity')
),
ticks AS (
    -- Joined by position, not subscripted: each subscript of a text array walks it from its
    -- start, which made 20,000 rows cost seconds.
    SELECT owed.*, ids.job_id
    FROM owed
    JOIN unnest(%(job_ids)s::text[]) WITH ORDINALITY AS ids (job_id, place) USING (place)
),
fresh AS (
    SELECT ticks.*,
           row_number() OVER (PARTITION BY cron_id, missed ORDER BY run_at) AS turn
    FROM ticks
    WHERE NOT EXISTS (
        SELECT 1 FROM jobs WHERE jobs.cron_id = ticks.cron_id AND jobs.run_at = ticks.run_at
    )
),
decided AS (
    SELECT job_id, cron_id, endpoint, flow_key, http_options, callback, run_at, jitter, runs,
           max_runs,
           CASE WHEN missed THEN 'missed'
                WHEN overlap = 'skip' AND (turn > 1 OR EXISTS (
                    SELECT 1 FROM jobs
                    WHERE jobs.cron_id = fresh.cron_id AND jobs.state IN ('scheduled', 'delivering')
                )) THEN 'skipped'
                ELSE 'scheduled' END AS state
    FROM fresh
),
within AS (
    SELECT decided.* FROM (
        SELECT decided.*,
               count(*) FILTER (WHERE state = 'scheduled') OVER (
                   PARTITION BY cron_id ORDER BY run_at
                   ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
               ) AS runs_before
        FROM decided
    ) AS decided
    WHERE max_runs IS NULL OR runs + runs_before < max_runs
),
fired AS (
    INSERT INTO jobs (id, cron_id, run_at, next_attempt_at, max_attempts, state, finished_at,
                      endpoint, flow_key, http_options, callback)
    SELECT job_id, cron_id, run_at, run_at + make_interval(secs => random() * jitter),
           %(max_attempts)s, state, CASE WHEN state <> 'scheduled' THEN now() END, endpoint,
           flow_key, http_options, callback
    FROM within
    ON CONFLICT (cron_id, run_at) WHERE cron_id IS NOT NULL DO NOTHING
    RETURNING id, cron_id, state, flow_key
),
new_runs AS (
    SELECT cron_id, count(*) AS runs FROM fired WHERE state = 'scheduled' GROUP BY cron_id
),
latest AS (
    SELECT ticks.cron_id, max(ticks.run_at) AS run_at, coalesce(max(new_runs.runs), 0) AS runs
    FROM ticks LEFT JOIN new_runs USING (cron_id)
    GROUP BY ticks.cron_id
),
advanced AS (
    UPDATE crons
    SET last_fire_at = greatest(crons.last_fire_at, latest.run_at),
        runs = crons.runs + latest.runs,
        ended_at = CASE WHEN crons.runs + latest.runs >= crons.max_runs THEN now()
                        ELSE crons.ended_at END
    FROM latest
    WHERE crons.id = latest.cron_id
      AND (crons.last_fire_at IS NULL OR crons.last_fire_at < latest.run_at OR latest.runs > 0)
    RETURNING crons.id, crons.ended_at
)
SELECT (SELECT count(*) FROM fired) AS inserted,
       (SELECT count(*) FROM fired WHERE state = 'skipped') AS skipped,
       (SELECT count(*) FROM fired WHERE state = 'missed') AS missed,
       (SELECT count(*) FROM fired WHERE state = 'scheduled' AND flow_key IS NOT NULL) AS keyed,
       (SELECT count(*) FROM owed) - (SELECT count(*) FROM ticks) AS left_over,
       (SELECT count(*) FROM advanced WHERE ended_at IS NOT NULL) AS ended;

-- end_past_crons --
-- Crons whose end_at has passed end, once every tick up to it was recorded (the leader records
-- what is owed up to now first); ended paused crons too, since resuming could not start them.
UPDATE crons SET ended_at = now()
WHERE ended_at IS NULL AND end_at < %(now)s
RETURNING id;

-- retire_ended_crons --
-- Crons that ended and asked to be removed then go, leaving a tombstone of their bounds; their
-- unfinished runs are delivered as any run.
WITH gone AS (
    DELETE FROM crons WHERE ended_at IS NOT NULL AND delete_after_end
    RETURNING id, start_at, end_at, max_runs, ended_at
)
INSERT INTO cron_tombstones (id, start_at, end_at, max_runs, ended_at)
SELECT id, start_at, end_at, max_runs, ended_at FROM gone
ON CONFLICT (id) DO UPDATE
SET start_at = EXCLUDED.start_at, end_at = EXCLUDED.end_at, max_runs = EXCLUDED.max_runs,
    ended_at = EXCLUDED.ended_at
RETURNING id;

-- schedules_missing_timers --
-- Specs of running crons that have no APScheduler timer; `{timer_id}` is the timer id of `spec`.
SELECT DISTINCT spec FROM crons
WHERE NOT paused AND ended_at IS NULL AND NOT EXISTS (
    SELECT 1 FROM apscheduler_jobs WHERE apscheduler_jobs.id = {timer_id}
);

-- stale_schedule_timers --
-- APScheduler timers of schedules no running cron has any more (and per-cron timers of old).
SELECT id FROM apscheduler_jobs
WHERE id LIKE 'cron:%%'
   OR id LIKE 'schedule:%%' AND NOT EXISTS (
       SELECT 1 FROM crons
       WHERE NOT crons.paused AND crons.ended_at IS NULL AND {timer_id} = apscheduler_jobs.id
   );

-- timer_id --
-- The timer id of a schedule: its spec's digest, as jobs.schedule_timer_id computes it.
'schedule:' || md5(spec)
