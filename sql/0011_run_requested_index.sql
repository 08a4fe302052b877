-- A paused endpoint's claims read only the jobs an operator asked to run, from an index of those alone.

-- While an endpoint is paused its jobs pile up due, and finding the few asked to run through
-- jobs_endpoint_due_idx meant checking every one of them (about 20 ms a query with 200,000 waiting).
-- Only rows with run_requested set enter this index, so it stays as small as what operators ask.
CREATE INDEX jobs_endpoint_run_requested_idx ON jobs (endpoint, next_attempt_at)
    WHERE state = 'scheduled' AND run_requested;
