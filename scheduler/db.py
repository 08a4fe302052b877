"""Connections to PostgreSQL and the one place driver errors become domain errors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg
import psycopg_pool

from scheduler import errors

# libpq keepalives so a silently dropped connection fails in seconds, not hours.
KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 20000,
    "connect_timeout": 5,
}


@contextlib.contextmanager
def wrap_errors() -> Iterator[None]:
    """The one place driver errors become domain errors."""
    try:
        yield
    except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
        raise errors.StoreUnavailable(str(exc).strip() or "database unavailable") from exc


def connect(database_url: str, **kwargs: Any) -> psycopg.Connection[Any]:
    """A dedicated connection (LISTEN, advisory locks), outside any pool."""
    with wrap_errors():
        return psycopg.connect(database_url, **KEEPALIVES, **kwargs)


def open_pool(database_url: str, max_size: int, name: str) -> psycopg_pool.ConnectionPool:
    """A pool opened now; call it after fork, never before."""
    return psycopg_pool.ConnectionPool(
        database_url,
        min_size=1,
        max_size=max_size,
        kwargs=KEEPALIVES,
        check=psycopg_pool.ConnectionPool.check_connection,
        timeout=5,
        max_lifetime=1800,
        name=name,
        open=True,
    )
