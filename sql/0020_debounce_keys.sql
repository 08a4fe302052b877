-- Debounced jobs: while a job with a debounce key waits and was never claimed, another insert with that key (within its endpoint) updates it instead of adding a job.

-- The key and the latest due time a debounce may move the job to (its first insert's time plus
-- max_wait; NULL: no limit), kept for the record once the job is claimed. No default, so adding
-- them does not rewrite the table.
ALTER TABLE jobs ADD COLUMN debounce_key text, ADD COLUMN debounce_until timestamptz;
-- Whether later inserts with the key join this job: true from its insert until it first leaves
-- `scheduled`. A constant default does not rewrite the table either.
ALTER TABLE jobs ADD COLUMN debounce_open boolean NOT NULL DEFAULT false;

-- At most one open job per endpoint and key: a debounced insert is an INSERT ... ON CONFLICT on
-- this index, which waits for a concurrent insert with the key to commit and then updates its row,
-- so that concurrent inserts leave one job.
CREATE UNIQUE INDEX jobs_debounce_key ON jobs (endpoint, debounce_key) WHERE debounce_open;

-- A job closes for good when it first leaves `scheduled` (claimed, cancelled), whatever statement
-- moves it: the claims, and the statements that put a claimed job back in line (a retry, a claim
-- given back unsent, a rescue), know nothing of keys. Were the index on `state = 'scheduled'`
-- instead, one of those would meet a newer job with the key and fail. The WHEN clause is
-- evaluated without calling the function, so rows without an open key cost one test.
CREATE FUNCTION close_debounce() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.debounce_open := false;
    RETURN NEW;
END
$$;
CREATE TRIGGER jobs_close_debounce BEFORE UPDATE OF state ON jobs
    FOR EACH ROW WHEN (OLD.debounce_open AND NEW.state <> 'scheduled')
    EXECUTE FUNCTION close_debounce();

-- The answer an idempotent request with debounced jobs gave, per job: whether it joined a waiting
-- job (its id is then that job's). NULL for requests without debounced jobs.
ALTER TABLE idempotency_keys ADD COLUMN debounced boolean[];
