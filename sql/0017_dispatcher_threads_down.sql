-- Each dispatcher's threads that are not running (restarting after a failure, or dead and ending their process), stored with its heartbeat so that GET /dispatchers and /readyz show them.

-- A constant default: adding the column does not rewrite the table.
ALTER TABLE dispatchers ADD COLUMN threads_down jsonb NOT NULL DEFAULT '{}';
