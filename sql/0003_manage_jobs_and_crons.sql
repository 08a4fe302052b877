-- Managing jobs and crons: idempotent inserts, paused crons, and indexes for listing them.

CREATE TABLE idempotency_keys (
    key text PRIMARY KEY,
    job_ids text[] NOT NULL,
    request_hash text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);

ALTER TABLE crons ADD COLUMN paused boolean NOT NULL DEFAULT false;

-- Keyset pagination walks ids newest first, within a state or a cron's runs.
CREATE INDEX jobs_state_id_idx ON jobs (state, id);
CREATE INDEX jobs_cron_id_idx ON jobs (cron_id, id) WHERE cron_id IS NOT NULL;
