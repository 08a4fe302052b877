-- Every dispatcher claims and sends while one elected leader keeps the timers: each registers a heartbeat, and a claim carries the token that fences its outcome.

CREATE TABLE dispatchers (
    id text PRIMARY KEY,
    host text NOT NULL,
    pid integer NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    in_flight integer NOT NULL DEFAULT 0,
    delivered bigint NOT NULL DEFAULT 0,
    metrics_port integer
);

-- A claim's token: an outcome is written only by the claim that is still current, so a
-- dispatcher declared dead that comes back cannot overwrite a delivery someone else re-claimed.
CREATE SEQUENCE claim_tokens;

-- No defaults: adding the columns does not rewrite the table.
ALTER TABLE jobs ADD COLUMN claimed_by text, ADD COLUMN claim_token bigint;
