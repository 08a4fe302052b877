-- Named endpoints: a job or cron names where it goes, and the limits and pauses set at run time live here, where every dispatcher's claim reads them.

-- Constant defaults: adding these columns does not rewrite the table.
ALTER TABLE jobs
    ADD COLUMN endpoint text NOT NULL DEFAULT 'default',
    -- Set on a failure notification ('job.failed'): its body is the event, and it never makes
    -- another notification.
    ADD COLUMN event text,
    -- POST /jobs/<id>/run: the operator's explicit act goes out even while its endpoint is paused.
    ADD COLUMN run_requested boolean NOT NULL DEFAULT false;
ALTER TABLE crons ADD COLUMN endpoint text NOT NULL DEFAULT 'default';

-- One row per endpoint that was paused or limited at run time, or whose limits are enforced.
-- A limit overrides the environment's default once set (`*_set`; a NULL limit set means
-- unlimited). The token bucket's state lives here so every dispatcher draws from one bucket.
CREATE TABLE endpoints (
    name text PRIMARY KEY,
    rate_limit double precision CHECK (rate_limit > 0),
    rate_limit_set boolean NOT NULL DEFAULT false,
    max_in_flight integer CHECK (max_in_flight > 0),
    max_in_flight_set boolean NOT NULL DEFAULT false,
    paused boolean NOT NULL DEFAULT false,
    tokens double precision,
    refilled_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- A limited endpoint's claims take its due rows in order, and count what it has in flight.
CREATE INDEX jobs_endpoint_due_idx ON jobs (endpoint, next_attempt_at) WHERE state = 'scheduled';
CREATE INDEX jobs_endpoint_delivering_idx ON jobs (endpoint) WHERE state = 'delivering';
