-- What the dashboard needs of history: the kind of each failure (an HTTP status or a class such as timeout or dns, never the text, which holds addresses) and a per-minute rollup of outcomes and lateness that dispatchers write with their outcomes.

-- No defaults: adding the columns does not rewrite the tables.
ALTER TABLE jobs ADD COLUMN last_error_kind text;
ALTER TABLE delivery_attempts ADD COLUMN error_kind text;

-- Failures recorded before kinds were, classified from their text as well as it allows: the
-- text of a connection failure names the exception urllib3 raised, which tells refused, DNS and
-- TLS apart; whatever it does not name is a connection failure. This rewrites each row that has
-- an error once, under its row lock: an upgrade takes about as long as a pass over them.
CREATE FUNCTION pg_temp.error_kind_of(error text) RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
    SELECT CASE
        WHEN error IS NULL THEN NULL
        WHEN error ~ '^HTTP [0-9]{3}$' THEN 'http_' || substr(error, 6)
        WHEN error LIKE 'timeout%' THEN 'timeout'
        WHEN error LIKE 'endpoint % is not configured; not sent' THEN 'not_sent'
        WHEN error LIKE 'internal error:%' THEN 'internal'
        WHEN error LIKE '%SSLError%' OR error LIKE '%CERTIFICATE_VERIFY_FAILED%' THEN 'tls'
        WHEN error LIKE '%NameResolutionError%' OR error LIKE '%Name or service not known%'
          OR error LIKE '%Temporary failure in name resolution%'
          OR error LIKE '%nodename nor servname%' OR error LIKE '%getaddrinfo failed%' THEN 'dns'
        WHEN error LIKE '%Connection refused%' THEN 'refused'
        WHEN error LIKE '%ReadTimeout%' OR error LIKE '%ConnectTimeout%'
          OR error LIKE '%timed out%' THEN 'timeout'
        ELSE 'connection'
    END
$$;

UPDATE jobs SET last_error_kind = pg_temp.error_kind_of(last_error) WHERE last_error IS NOT NULL;
UPDATE delivery_attempts SET error_kind = pg_temp.error_kind_of(error) WHERE error IS NOT NULL;
DROP FUNCTION pg_temp.error_kind_of(text);

-- The dashboard's failed jobs grouped by kind (counts and the latest failure, from this index
-- alone) and one kind's failed jobs by id, for paging and redrive.
CREATE INDEX jobs_failed_kind_idx ON jobs (last_error_kind, id) INCLUDE (finished_at)
    WHERE state = 'failed';

-- Outcomes per minute (the database's clock, when they were recorded) and dispatcher: each
-- dispatcher adds to its own row, so dispatchers never wait on one another. Retried: an attempt
-- failed and its job was scheduled again; failed: the job ended failed. `lateness` counts first
-- attempts by how late they started, in the buckets of scheduler.lateness.LATENESS_BOUNDS_MS
-- (the last counts what is later than every bound).
CREATE TABLE delivery_minutes (
    minute timestamptz NOT NULL,
    dispatcher_id text NOT NULL,
    delivered integer NOT NULL DEFAULT 0,
    failed integer NOT NULL DEFAULT 0,
    retried integer NOT NULL DEFAULT 0,
    lateness integer[] NOT NULL,
    PRIMARY KEY (minute, dispatcher_id)
);
