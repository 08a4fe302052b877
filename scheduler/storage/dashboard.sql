-- insert_dashboard_session --
-- A dashboard login: its session, expiring `lifetime` seconds from now by the database's clock.
INSERT INTO dashboard_sessions (id_sha256, csrf_token, client_address, expires_at)
VALUES (%(id_sha256)s, %(csrf_token)s, %(client_address)s,
        now() + make_interval(secs => %(lifetime)s));

-- dashboard_session_csrf_token --
-- The CSRF token of a session that has not expired (none: logged out, expired or unknown).
SELECT csrf_token FROM dashboard_sessions
WHERE id_sha256 = %(id_sha256)s AND expires_at > now();

-- delete_dashboard_session --
-- Log a session out.
DELETE FROM dashboard_sessions WHERE id_sha256 = %(id_sha256)s;

-- reserve_login_attempt --
-- Count a login attempt against its client address before the secret is checked, unless the
-- address has used up its window (no row returned); a window past its length starts again.
-- Concurrent attempts from one address queue on its row, so the count holds across web workers.
INSERT INTO dashboard_login_failures AS f (client_address, failures, window_started_at)
VALUES (%(client_address)s, 1, now())
ON CONFLICT (client_address) DO UPDATE
SET failures = CASE WHEN f.window_started_at <= now() - make_interval(secs => %(window)s)
                    THEN 1 ELSE f.failures + 1 END,
    window_started_at = CASE WHEN f.window_started_at <= now() - make_interval(secs => %(window)s)
                             THEN now() ELSE f.window_started_at END
WHERE f.failures < %(limit)s
   OR f.window_started_at <= now() - make_interval(secs => %(window)s)
RETURNING f.failures;

-- login_retry_after --
-- Seconds until a client address's window ends and it may try to log in again.
SELECT greatest(extract(epoch FROM window_started_at + make_interval(secs => %(window)s)
                                   - now()), 0)::float8 AS retry_after
FROM dashboard_login_failures WHERE client_address = %(client_address)s;

-- forgive_login_attempt --
-- A reserved attempt that logged in is not a failure.
UPDATE dashboard_login_failures SET failures = failures - 1
WHERE client_address = %(client_address)s AND failures > 0;

-- prune_dashboard_logins --
-- Expired sessions and failure counts whose window has passed; the two DELETEs are CTEs so that
-- one round trip does both.
WITH sessions AS (
    DELETE FROM dashboard_sessions WHERE expires_at <= now() RETURNING 1
), failures AS (
    DELETE FROM dashboard_login_failures
    WHERE window_started_at <= now() - make_interval(secs => %(window)s) RETURNING 1
)
SELECT (SELECT count(*) FROM sessions) AS sessions, (SELECT count(*) FROM failures) AS failures;
