-- Views the claim loop reads per endpoint, so that no look steps over a held endpoint's backlog.

-- The endpoints that have waiting jobs, found by skipping through jobs_endpoint_due_idx: one index
-- probe per endpoint, however many jobs each has (unknown endpoints included).
CREATE VIEW waiting_endpoints AS
WITH RECURSIVE waiting (endpoint) AS (
    (SELECT endpoint FROM jobs WHERE state = 'scheduled' ORDER BY endpoint LIMIT 1)
    UNION ALL
    SELECT (SELECT jobs.endpoint FROM jobs
            WHERE jobs.state = 'scheduled' AND jobs.endpoint > waiting.endpoint
            ORDER BY jobs.endpoint LIMIT 1)
    FROM waiting
    WHERE waiting.endpoint IS NOT NULL
)
SELECT endpoint FROM waiting WHERE endpoint IS NOT NULL;

-- Endpoints whose jobs the shared claim leaves to claims of their own: paused, or limited.
CREATE VIEW held_endpoints AS
SELECT name
FROM endpoints
WHERE paused
   OR rate_limit_set AND rate_limit IS NOT NULL
   OR max_in_flight_set AND max_in_flight IS NOT NULL;
