-- Flow-control keys: jobs that share a key (within their endpoint) share its rate and in-flight limits across every dispatcher, and keys take turns in their endpoint's claims.

-- A job's key; NULL for a job without one. No default, so the table is not rewritten.
ALTER TABLE jobs ADD COLUMN flow_key text;

-- A cron's key and limits, given to every run it records.
ALTER TABLE crons ADD COLUMN flow_key text;
ALTER TABLE crons ADD COLUMN flow_rate double precision CHECK (flow_rate > 0);
ALTER TABLE crons ADD COLUMN flow_max_in_flight integer CHECK (flow_max_in_flight > 0);

-- Each key's limits (the last written win; NULL: none) and token bucket. A key is made on first
-- use and forgotten once idle (retention).
CREATE TABLE flows (
    endpoint text NOT NULL,
    key text NOT NULL,
    rate_limit double precision CHECK (rate_limit > 0),
    max_in_flight integer CHECK (max_in_flight > 0),
    tokens double precision,
    refilled_at timestamptz,
    used_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (endpoint, key)
);
CREATE INDEX flows_used_idx ON flows (used_at);

-- Waiting jobs by endpoint and key: a keyed endpoint's claims step from key to key through it,
-- count per key, and read the endpoint's jobs without a key (flow_key NULL, sorted last) in due
-- order without stepping over its keyed backlog.
CREATE INDEX jobs_flow_due_idx ON jobs (endpoint, flow_key, next_attempt_at)
    WHERE state = 'scheduled';
-- Keyed deliveries in progress, counted per key for max_in_flight.
CREATE INDEX jobs_flow_delivering_idx ON jobs (endpoint, flow_key)
    WHERE state = 'delivering' AND flow_key IS NOT NULL;
-- The round robin's place in each endpoint's keys: the claims of an endpoint, serialised by its
-- row lock, go on from the key after it.
ALTER TABLE endpoints ADD COLUMN flow_cursor text;

-- An endpoint with keyed jobs waiting is claimed apart too (by claim_endpoint_jobs, under its
-- row lock, key by key), so the shared claim never steps over a key's limits: the check is made
-- at run time, so it holds from the commit of the first keyed job. Every statement that stores a
-- keyed job makes its endpoint's row; the check is one probe of jobs_flow_due_idx per endpoint.
CREATE OR REPLACE VIEW held_endpoints AS
SELECT name
FROM endpoints
WHERE paused
   OR rate_limit_set AND rate_limit IS NOT NULL
   OR max_in_flight_set AND max_in_flight IS NOT NULL
   -- A scalar subquery in the index's order, not EXISTS (which drops ORDER BY and LIMIT): the
   -- planner might otherwise scan jobs for the first keyed row of an endpoint that has none.
   OR (SELECT jobs.flow_key FROM jobs
       WHERE jobs.state = 'scheduled' AND jobs.endpoint = endpoints.name
         AND jobs.flow_key IS NOT NULL
       ORDER BY jobs.endpoint, jobs.flow_key
       LIMIT 1) IS NOT NULL;
