-- use_flows --
-- Make or refresh the keys that jobs are stored with, one element per key (sorted, so that
-- concurrent inserts lock keys in one order): the limits written last win, and the key is in use.
-- Their endpoints' rows are made too: held_endpoints finds keyed endpoints through them.
WITH named AS (
    INSERT INTO endpoints (name)
    SELECT DISTINCT endpoint FROM unnest(%(endpoints)s::text[]) AS named (endpoint)
    ON CONFLICT (name) DO NOTHING
)
INSERT INTO flows (endpoint, key, rate_limit, max_in_flight)
SELECT f.endpoint, f.key, f.rate_limit, f.max_in_flight
FROM unnest(%(endpoints)s::text[], %(keys)s::text[], %(rates)s::float8[],
            %(max_in_flights)s::integer[]) AS f (endpoint, key, rate_limit, max_in_flight)
ON CONFLICT (endpoint, key) DO UPDATE
SET rate_limit = EXCLUDED.rate_limit, max_in_flight = EXCLUDED.max_in_flight, used_at = now();

-- carry_flow --
-- A job's flow key moved with the job to another endpoint (an edit): the key is made there with
-- the limits it has on the job's former endpoint, unless the endpoint has the key already, whose
-- limits then stay; in use either way. The endpoint's row is made, as by use_flows.
WITH named AS (
    INSERT INTO endpoints (name) VALUES (%(endpoint)s)
    ON CONFLICT (name) DO NOTHING
)
INSERT INTO flows (endpoint, key, rate_limit, max_in_flight)
SELECT %(endpoint)s, %(key)s, former.rate_limit, former.max_in_flight
FROM (SELECT 1) AS one
LEFT JOIN flows AS former ON former.endpoint = %(former)s AND former.key = %(key)s
ON CONFLICT (endpoint, key) DO UPDATE SET used_at = now();

-- flow_limits --
-- One key's limits (none: no such key).
SELECT rate_limit, max_in_flight FROM flows WHERE endpoint = %(endpoint)s AND key = %(key)s;

-- newly_keyed --
-- Which of these endpoints have no keyed job waiting (as keyed_endpoints finds them).
SELECT named.name
FROM unnest(%(endpoints)s::text[]) AS named (name)
WHERE (SELECT jobs.flow_key FROM jobs
       WHERE jobs.state = 'scheduled' AND jobs.endpoint = named.name
         AND jobs.flow_key IS NOT NULL
       ORDER BY jobs.endpoint, jobs.flow_key
       LIMIT 1) IS NULL;

-- keyed_endpoints --
-- The endpoints with keyed jobs waiting (claimed apart), found as held_endpoints finds them: one
-- probe of jobs_flow_due_idx per endpoint row.
SELECT name AS endpoint
FROM endpoints
WHERE (SELECT jobs.flow_key FROM jobs
       WHERE jobs.state = 'scheduled' AND jobs.endpoint = endpoints.name
         AND jobs.flow_key IS NOT NULL
       ORDER BY jobs.endpoint, jobs.flow_key
       LIMIT 1) IS NOT NULL
ORDER BY name;

-- save_key_buckets --
-- What is left in each limited key's bucket after a claim, and where the turns go on from.
WITH saved AS (
    UPDATE flows
    SET tokens = bucket.tokens, refilled_at = %(refilled_at)s, used_at = now()
    FROM unnest(%(keys)s::text[], %(tokens)s::float8[]) AS bucket (key, tokens)
    WHERE flows.endpoint = %(endpoint)s AND flows.key = bucket.key
    RETURNING 1
)
UPDATE endpoints SET flow_cursor = %(cursor)s WHERE name = %(endpoint)s;

-- key_figures --
-- An endpoint's keys with the most due jobs (each counted up to `due_cap`), at most `limit`, with
-- their limits and what each has in flight; keys known but with nothing waiting come last.
SELECT flows.key, flows.rate_limit, flows.max_in_flight, flows.used_at,
       (SELECT count(*) FROM (
            SELECT 1 FROM jobs
            WHERE state = 'scheduled' AND endpoint = flows.endpoint
              AND flow_key >= flows.key AND flow_key <= flows.key  -- as deliveries.sql key_turns
              AND next_attempt_at <= now()
            ORDER BY flow_key, next_attempt_at
            LIMIT %(due_cap)s) AS due) AS due,
       (SELECT count(*) FROM jobs
        WHERE state = 'delivering' AND flow_key IS NOT NULL AND endpoint = flows.endpoint
          AND flow_key = flows.key) AS in_flight
FROM flows
WHERE flows.endpoint = %(endpoint)s
ORDER BY due DESC, flows.key
LIMIT %(limit)s;

-- forget_idle_flows --
-- Keys unused for `idle` seconds, with no job waiting or in progress and no cron naming them.
DELETE FROM flows
WHERE used_at < now() - make_interval(secs => %(idle)s)
  AND NOT EXISTS (SELECT 1 FROM jobs
                  WHERE jobs.state IN ('scheduled', 'delivering')
                    AND jobs.endpoint = flows.endpoint AND jobs.flow_key = flows.key)
  AND NOT EXISTS (SELECT 1 FROM crons
                  WHERE crons.endpoint = flows.endpoint AND crons.flow_key = flows.key)
RETURNING endpoint;
