-- Dashboard logins: sessions kept in the database so that logging out ends one for every web worker, and failed logins counted per client address so that their limit holds across workers.

-- A session is found by the SHA-256 of its id: the id itself is a bearer credential and lives only
-- in the browser's cookie.
CREATE TABLE dashboard_sessions (
    id_sha256 text PRIMARY KEY,
    csrf_token text NOT NULL,
    client_address text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
-- Pruning deletes by expiry.
CREATE INDEX dashboard_sessions_expires_at_idx ON dashboard_sessions (expires_at);

-- One row per client address (an IPv6 client by its /64): the login attempts counted in the
-- window that started at window_started_at.
CREATE TABLE dashboard_login_failures (
    client_address text PRIMARY KEY,
    failures integer NOT NULL CHECK (failures >= 0),
    window_started_at timestamptz NOT NULL
);
CREATE INDEX dashboard_login_failures_window_started_at_idx
    ON dashboard_login_failures (window_started_at);
