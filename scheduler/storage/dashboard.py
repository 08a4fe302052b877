"""The dashboard's logins: sessions, and failed attempts counted per client address."""

from __future__ import annotations

from scheduler.storage import db, queries

QUERIES = queries.load(__name__)


def insert_dashboard_session(
    database: db.Database, id_sha256: str, csrf_token: str, client_address: str, lifetime: float
) -> None:
    params = {
        "id_sha256": id_sha256,
        "csrf_token": csrf_token,
        "client_address": client_address,
        "lifetime": lifetime,
    }
    database.run(QUERIES["insert_dashboard_session"], params)


def dashboard_session_csrf_token(database: db.Database, id_sha256: str) -> str | None:
    """The CSRF token of a live session; None when it ended or never existed."""
    rows = database.rows(QUERIES["dashboard_session_csrf_token"], {"id_sha256": id_sha256})
    return str(rows[0]["csrf_token"]) if rows else None


def delete_dashboard_session(database: db.Database, id_sha256: str) -> None:
    database.run(QUERIES["delete_dashboard_session"], {"id_sha256": id_sha256})


def reserve_login_attempt(
    database: db.Database, client_address: str, limit: int, window: float
) -> float | None:
    """Count an attempt against `client_address`: None when counted, else the seconds until
    its `window` ends and it may try again (it had `limit` attempts in the window)."""
    params = {"client_address": client_address, "limit": limit, "window": window}
    if database.rows(QUERIES["reserve_login_attempt"], params):
        return None
    rows = database.rows(QUERIES["login_retry_after"], params)
    # Pruned between the two statements: the window had just ended.
    return float(rows[0]["retry_after"]) if rows else 0.0


def forgive_login_attempt(database: db.Database, client_address: str) -> None:
    database.run(QUERIES["forgive_login_attempt"], {"client_address": client_address})


def prune_dashboard_logins(database: db.Database, window: float) -> tuple[int, int]:
    """Delete expired sessions and passed login windows; how many of each."""
    row = database.rows(QUERIES["prune_dashboard_logins"], {"window": window})[0]
    return int(row["sessions"]), int(row["failures"])
