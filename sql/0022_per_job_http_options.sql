-- Per-job HTTP options and response callbacks.

-- How a job's request differs from its endpoint's default POST (jobs.HttpOptions.to_json: path,
-- method, headers as [name, value] pairs in the order given, timeout, retry); NULL for a job that
-- sets none. `callback`: the endpoint told of the job's end, delivered or failed; NULL: none.
-- Neither has a default, so adding them does not rewrite the table.
ALTER TABLE jobs ADD COLUMN http_options jsonb, ADD COLUMN callback text;

-- A cron's runs carry its options and callback, copied when each run is recorded.
ALTER TABLE crons ADD COLUMN http_options jsonb, ADD COLUMN callback text;
