-- The scheduler's source of truth (jobs, crons, attempts) and the table APScheduler's jobstore uses as a timer.

CREATE TABLE jobs (
    id text PRIMARY KEY,
    cron_id text,
    body jsonb,
    run_at timestamptz NOT NULL,
    state text NOT NULL DEFAULT 'scheduled'
        CHECK (state IN ('scheduled', 'delivering', 'delivered', 'failed', 'cancelled')),
    attempts integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL CHECK (max_attempts > 0),
    next_attempt_at timestamptz NOT NULL,
    leased_until timestamptz,
    last_status integer,
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);

-- One delivery per cron tick, whoever records it and however often.
CREATE UNIQUE INDEX jobs_cron_tick_key ON jobs (cron_id, run_at) WHERE cron_id IS NOT NULL;
-- The claim query reads only undelivered rows in due order; a partial index keeps it small.
CREATE INDEX jobs_due_idx ON jobs (next_attempt_at) WHERE state = 'scheduled';
CREATE INDEX jobs_delivering_idx ON jobs (leased_until) WHERE state = 'delivering';
CREATE INDEX jobs_finished_idx ON jobs (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE delivery_attempts (
    job_id text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt integer NOT NULL,
    started_at timestamptz NOT NULL,
    duration_ms integer NOT NULL,
    status_code integer,
    error text,
    response_excerpt text,
    PRIMARY KEY (job_id, attempt)
);

-- A revision identifies one definition of a cron; a changed spec gets a new one.
CREATE SEQUENCE cron_revisions;

CREATE TABLE crons (
    id text PRIMARY KEY,
    spec text NOT NULL,
    timezone text NOT NULL,
    revision bigint NOT NULL UNIQUE DEFAULT nextval('cron_revisions'),
    last_fire_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Exactly the shape APScheduler 3.11's SQLAlchemyJobStore declares, so its create-if-missing is a no-op.
CREATE TABLE apscheduler_jobs (
    id varchar(191) PRIMARY KEY,
    next_run_time double precision,
    job_state bytea NOT NULL
);
CREATE INDEX ix_apscheduler_jobs_next_run_time ON apscheduler_jobs (next_run_time);
