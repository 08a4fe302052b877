-- endpoint_states --
-- What every dispatcher caches to route its claims: which endpoints are paused or limited, and
-- their weights.
SELECT name, paused, rate_limit, rate_limit_set, max_in_flight, max_in_flight_set, weight
FROM endpoints;

-- set_endpoint_limits --
-- Override an endpoint's limits and weight at run time; one not being set (`set_*` false) is
-- unchanged.
INSERT INTO endpoints (name, rate_limit, rate_limit_set, max_in_flight, max_in_flight_set, weight)
VALUES (%(endpoint)s, %(rate_limit)s, %(set_rate_limit)s, %(max_in_flight)s,
        %(set_max_in_flight)s, %(weight)s)
ON CONFLICT (name) DO UPDATE
SET rate_limit = CASE WHEN %(set_rate_limit)s THEN EXCLUDED.rate_limit
                      ELSE endpoints.rate_limit END,
    rate_limit_set = endpoints.rate_limit_set OR %(set_rate_limit)s,
    max_in_flight = CASE WHEN %(set_max_in_flight)s THEN EXCLUDED.max_in_flight
                         ELSE endpoints.max_in_flight END,
    max_in_flight_set = endpoints.max_in_flight_set OR %(set_max_in_flight)s,
    weight = CASE WHEN %(set_weight)s THEN EXCLUDED.weight ELSE endpoints.weight END,
    updated_at = now();

-- reset_endpoint_limits --
-- Back to the environment's limits.
UPDATE endpoints
SET rate_limit = NULL, rate_limit_set = false, max_in_flight = NULL, max_in_flight_set = false,
    updated_at = now()
WHERE name = %(endpoint)s;

-- set_endpoint_paused --
-- Pause or resume an endpoint's deliveries.
INSERT INTO endpoints (name, paused) VALUES (%(endpoint)s, %(paused)s)
ON CONFLICT (name) DO UPDATE SET paused = EXCLUDED.paused, updated_at = now();

-- endpoint_figures --
-- Each named endpoint's run-time state with what it has in flight and due now (the partial
-- indexes on delivering and scheduled rows answer the counts; due is counted up to a cap, when
-- one is given).
SELECT n.name, coalesce(e.paused, false) AS paused, e.rate_limit,
       coalesce(e.rate_limit_set, false) AS rate_limit_set, e.max_in_flight,
       coalesce(e.max_in_flight_set, false) AS max_in_flight_set, e.weight,
       (SELECT count(*) FROM jobs
        WHERE state = 'delivering' AND endpoint = n.name) AS in_flight,
       (SELECT count(*) FROM (SELECT 1 FROM jobs
                              WHERE state = 'scheduled' AND endpoint = n.name
                                AND next_attempt_at <= now()
                              LIMIT %(due_cap)s) AS due) AS due
FROM unnest(%(names)s::text[]) WITH ORDINALITY AS n (name, position)
LEFT JOIN endpoints e ON e.name = n.name
ORDER BY n.position;

-- unknown_endpoints --
-- Endpoint names that waiting jobs or crons use but this process does not know.
SELECT endpoint FROM jobs
WHERE state IN ('scheduled', 'delivering') AND endpoint <> ALL(%(names)s::text[])
UNION
SELECT endpoint FROM crons WHERE endpoint <> ALL(%(names)s::text[]);
