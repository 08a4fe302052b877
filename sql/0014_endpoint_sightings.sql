-- Which endpoints each dispatcher knows, and when any last did: during a rolling deploy that adds an endpoint, a dispatcher that does not know it leaves its jobs to those that do, and they fail unsent only once none has known it for SCHEDULER_UNKNOWN_ENDPOINT_GRACE.

ALTER TABLE dispatchers ADD COLUMN endpoints text[] NOT NULL DEFAULT '{}';

-- Outlives the dispatchers' rows, which a clean stop deletes: a deploy rolled back still leaves
-- the endpoint's jobs their grace.
CREATE TABLE endpoint_sightings (
    name text PRIMARY KEY,
    known_at timestamptz NOT NULL DEFAULT now()
);
