"""The dispatchers as a cluster: their heartbeats, the leader's lock and epoch, the clock."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from scheduler import tuning
from scheduler.storage import db, queries

QUERIES = queries.load(__name__)


@dataclasses.dataclass(frozen=True)
class LiveDispatcher:
    """A dispatcher whose heartbeat is recent, as GET /dispatchers lists it."""

    id: str
    host: str
    pid: int
    role: str
    started_at: dt.datetime
    heartbeat_at: dt.datetime
    in_flight: int
    delivered: int
    metrics_port: int | None
    endpoints: list[str]
    # Its threads not running at its last heartbeat, by name: "restarting" or "dead".
    threads_down: dict[str, str]


def database_now(database: db.Database) -> dt.datetime:
    """The database's clock, which judges when jobs and cron ticks are due."""
    now: dt.datetime = database.rows(QUERIES["database_now"])[0]["database_now"]
    return now


def beat_dispatcher(
    database: db.Database,
    dispatcher_id: str,
    host: str,
    pid: int,
    counts: tuple[int, int],
    metrics_port: int | None,
    endpoints: Sequence[str] = (),
    grace: float = 0.0,
    threads_down: Mapping[str, str] | None = None,
) -> dt.datetime:
    """Register or renew a dispatcher's heartbeat with its (in flight, delivered) counts, the
    endpoints it knows (their sightings renewed within a tenth of `grace`) and its threads not
    running; the database's clock at that moment."""
    in_flight, delivered = counts
    params = {
        "id": dispatcher_id,
        "host": host,
        "pid": pid,
        "in_flight": in_flight,
        "delivered": delivered,
        "metrics_port": metrics_port,
        "endpoints": list(endpoints),
        "grace": grace,
        "threads_down": Jsonb(dict(threads_down or {})),
    }
    now: dt.datetime = database.rows(QUERIES["beat_dispatcher"], params)[0]["database_now"]
    return now


def remove_dispatcher(database: db.Database, dispatcher_id: str) -> None:
    database.run(QUERIES["remove_dispatcher"], {"id": dispatcher_id})


def list_dispatchers(database: db.Database, live_seconds: float) -> list[LiveDispatcher]:
    rows = database.rows(QUERIES["list_dispatchers"], {"live_seconds": live_seconds})
    return [LiveDispatcher(**row) for row in rows]


def threads_down(database: db.Database, live_seconds: float) -> dict[str, dict[str, str]]:
    """The live dispatchers that reported threads not running, by id, for readiness checks."""
    rows = database.rows(QUERIES["threads_down"], {"live_seconds": live_seconds})
    return {row["id"]: row["threads_down"] for row in rows}


def read_leader(database: db.Database) -> dict[str, Any]:
    """The leader's epoch and heartbeat, for readiness checks."""
    return database.rows(QUERIES["read_leader"])[0]


class LeaderLock:
    """The dispatcher's election: a session advisory lock on a dedicated connection, fenced by an
    epoch. Keepalives on both ends bound how long a holder that vanished keeps the lock."""

    def __init__(self, database_url: str, timeout: float) -> None:
        self.database_url = database_url
        self.timeout = timeout
        self.conn: psycopg.Connection[Any] | None = None

    def try_acquire(self, holder: str) -> int | None:
        """The new epoch if this process is now the leader, None if another one is."""
        conn = self._connection()
        with db.wrap_errors():
            row = conn.execute(QUERIES["try_leader_lock"]).fetchone()
            if not (row and row[0]):
                return None
            epoch_row = conn.execute(QUERIES["begin_epoch"], {"holder": holder}).fetchone()
        assert epoch_row is not None
        return int(epoch_row[0])

    def confirm(self, epoch: int) -> bool:
        """True while this connection still holds the lock and `epoch` is current."""
        if self.conn is None:
            return False
        with db.wrap_errors():
            row = self.conn.execute(QUERIES["confirm_leadership"], {"epoch": epoch}).fetchone()
        return row is not None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _connection(self) -> psycopg.Connection[Any]:
        if self.conn is None or self.conn.closed:
            seconds = max(1, int(self.timeout))
            options = dict(
                tuning.KEEPALIVES,
                keepalives_idle=1,
                keepalives_interval=1,
                keepalives_count=2,
                tcp_user_timeout=seconds * 1000 // 3,
            )
            with db.wrap_errors():
                self.conn = psycopg.connect(self.database_url, autocommit=True, **options)
                # The server's side of the same bound: a leader that vanished without closing its
                # socket loses the lock after about `timeout` seconds.
                for name, value in (
                    ("tcp_keepalives_idle", max(1, seconds // 2)),
                    ("tcp_keepalives_interval", 1),
                    ("tcp_keepalives_count", max(1, seconds // 4)),
                    ("tcp_user_timeout", seconds * 1000),
                ):
                    self.conn.execute(
                        sql.SQL("SET {} = {}").format(sql.Identifier(name), sql.Literal(value))
                    )
        return self.conn
