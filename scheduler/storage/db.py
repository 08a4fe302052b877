"""Connections to PostgreSQL and the one place driver errors become domain errors."""

from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import Iterator
from typing import Any

import psycopg
import psycopg_pool
from psycopg.rows import dict_row
from psycopg.types.json import set_json_loads

from scheduler import errors, jsonb, tuning

_handed_out_at: weakref.WeakKeyDictionary[psycopg.Connection[Any], float] = (
    weakref.WeakKeyDictionary()
)


# SQLSTATE classes caused by the values sent rather than by the server's state (data exceptions,
# integrity constraint violations, program limits): sending them again cannot succeed.
_VALUE_CLASSES = ("22", "23", "54")


@contextlib.contextmanager
def wrap_errors() -> Iterator[None]:
    """The one place driver errors become domain errors.

    :raise errors.Conflict: a unique constraint refused a row.
    :raise errors.InvalidValue: PostgreSQL (or psycopg, before sending) refused a value.
    :raise errors.StoreUnavailable: the database cannot be reached or answer.
    """
    try:
        yield
    except psycopg.errors.UniqueViolation as exc:
        raise errors.Conflict(_primary_message(exc)) from exc
    except (psycopg.DataError, psycopg.IntegrityError) as exc:
        raise errors.InvalidValue(_primary_message(exc)) from exc
    except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
        if (exc.sqlstate or "")[:2] in _VALUE_CLASSES:
            raise errors.InvalidValue(_primary_message(exc)) from exc
        raise errors.StoreUnavailable(str(exc).strip() or "database unavailable") from exc
    except UnicodeEncodeError as exc:
        # psycopg encodes text for the server itself; a lone surrogate cannot be encoded.
        raise errors.InvalidValue("a string is not valid Unicode") from exc


def _primary_message(exc: psycopg.Error) -> str:
    """The server's one-line message, without the detail that may quote the data."""
    lines = str(exc).strip().splitlines()
    return exc.diag.message_primary or (lines[0] if lines else type(exc).__name__)


def connect(database_url: str, pooled: bool = False, **kwargs: Any) -> psycopg.Connection[Any]:
    """A dedicated connection (LISTEN, migrations), outside any pool; `pooled` as open_pool's."""
    with wrap_errors():
        return psycopg.connect(database_url, **tuning.KEEPALIVES, **_session_free(pooled), **kwargs)


def _session_free(pooled: bool) -> dict[str, Any]:
    """Connection options for a transaction-mode pooler, which hands each transaction to any
    server connection: psycopg's named prepared statements would be missing from the next one
    (PgBouncer before 1.21 cannot carry them). Without one, psycopg prepares a statement run
    often, which saves its planning."""
    return {"prepare_threshold": None} if pooled else {}


def open_pool(
    database_url: str, max_size: int, name: str, durable: bool = True, pooled: bool = False
) -> psycopg_pool.ConnectionPool:
    """A pool opened now; call it after fork, never before. `pooled`: `database_url` is a
    transaction-mode pooler (config.Settings.transaction_pooled).

    Its connections are in autocommit mode: a single statement commits by itself in one round
    trip, and Database.transaction() groups statements that must be atomic.
    With `durable` false they commit with synchronous_commit off: a commit returns before its
    WAL reaches the disk, so a crash of PostgreSQL can lose the last fraction of a second of
    them. Use it only for writes whose loss can cause no more than a re-send (docs/operations.md,
    "Durability"). Through a transaction-mode pooler (`pooled`) the startup option is left out,
    since PgBouncer refuses it before 1.20: use UnsyncedDatabase over such a pool instead.
    """
    options = {} if durable or pooled else {"options": "-c synchronous_commit=off"}
    return psycopg_pool.ConnectionPool(
        database_url,
        min_size=1,
        max_size=max_size,
        kwargs={**tuning.KEEPALIVES, **options, **_session_free(pooled), "autocommit": True},
        # No `reset` callback: with one, the pool returns every connection through a worker
        # thread, a handoff per request.
        check=_check_if_idle,
        configure=_read_json_exactly,
        timeout=tuning.POOL_TIMEOUT_SECONDS,
        max_lifetime=tuning.POOL_MAX_LIFETIME_SECONDS,
        name=name,
        open=True,
    )


def _read_json_exactly(conn: psycopg.Connection[Any]) -> None:
    # psycopg would read a jsonb number into a float: 1.10 as 1.1, and 0.1000000000000000001
    # as 0.1. Bodies come back as they are stored.
    set_json_loads(jsonb.read, conn)


def _check_if_idle(conn: psycopg.Connection[Any]) -> None:
    """Ping a connection not handed out for long enough for the server to have gone meanwhile.

    A connection in steady use has just proved itself, and a ping on every checkout doubled the
    round trips of a request; one broken while in use fails that request (503) and is discarded.
    """
    now = time.monotonic()
    last = _handed_out_at.get(conn)
    if last is None or now - last > tuning.IDLE_CHECK_SECONDS:
        psycopg_pool.ConnectionPool.check_connection(conn)
    _handed_out_at[conn] = now


Row = dict[str, Any]


class Database:
    """A pool's connections as the storage modules use them: one statement that commits by
    itself, or one transaction; driver errors come out as errors.StoreUnavailable and kin."""

    def __init__(self, pool: psycopg_pool.ConnectionPool) -> None:
        self.pool = pool

    def rows(self, query: str, params: dict[str, Any] | None = None) -> list[Row]:
        """Run one statement, which commits by itself (no BEGIN and COMMIT round trips)."""
        with (
            wrap_errors(),
            self.pool.connection() as conn,
            conn.cursor(row_factory=dict_row) as cur,
        ):
            # Always pass parameters so `%%` in a query means `%` whether or not it has any.
            cur.execute(query, params or {})
            return cur.fetchall() if cur.description else []

    def run(self, query: str, params: dict[str, Any] | None = None) -> None:
        """Run one statement for its effect alone: no rows are built (the insert's hot path)."""
        with wrap_errors(), self.pool.connection() as conn:
            conn.execute(query, params or {})

    @contextlib.contextmanager
    def transaction(self) -> Iterator[psycopg.Cursor[Row]]:
        """One connection, one transaction, committed when the block ends without an error."""
        with (
            wrap_errors(),
            self.pool.connection() as conn,
            conn.transaction(),
            conn.cursor(row_factory=dict_row) as cur,
        ):
            yield cur

    def close(self, timeout: float = 5.0) -> None:
        self.pool.close(timeout=timeout)


class UnsyncedDatabase(Database):
    """A pool behind a transaction-mode pooler whose writes commit with synchronous_commit off
    all the same (what open_pool's `durable=False` does with a startup option, which PgBouncer
    refuses before 1.20): each transaction sets it locally first. A single statement is sent
    pipelined with its BEGIN, SET and COMMIT, so it costs no round trip more than alone."""

    def rows(self, query: str, params: dict[str, Any] | None = None) -> list[Row]:
        with wrap_errors(), self.pool.connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            try:
                with conn.pipeline(), conn.transaction():
                    cur.execute(_UNSYNCED)
                    cur.execute(query, params or {})
                # Results arrive once the pipeline is synced, at its end.
                return cur.fetchall() if cur.description else []
            finally:
                cur.close()

    def run(self, query: str, params: dict[str, Any] | None = None) -> None:
        with wrap_errors(), self.pool.connection() as conn, conn.pipeline(), conn.transaction():
            conn.execute(_UNSYNCED)
            conn.execute(query, params or {})

    @contextlib.contextmanager
    def transaction(self) -> Iterator[psycopg.Cursor[Row]]:
        with super().transaction() as cur:
            cur.execute(_UNSYNCED)
            yield cur


_UNSYNCED = "SET LOCAL synchronous_commit = off"
