"""The dispatchers as a cluster: their heartbeats, the leader's lease and epoch, the clock."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import psycopg
import psycopg_pool
from psycopg.types.json import Jsonb

from scheduler import errors
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


class LeaderLease:
    """The dispatchers' election: a lease on the leader row, in database time, taken under a new
    epoch once it has run out and renewed by its holder. Plain statements through `database`:
    no session holds anything, so it works through a transaction-mode pooler as well."""

    def __init__(self, database: db.Database, timeout: float) -> None:
        self.database = database
        self.timeout = timeout

    def try_acquire(self, holder: str) -> int | None:
        """The new epoch if this process now leads, None while another's lease runs."""
        rows = self.database.rows(QUERIES["take_lease"], {"holder": holder, "lease": self.timeout})
        return int(rows[0]["epoch"]) if rows else None

    def renew(self, epoch: int) -> bool:
        """Extend the lease by `timeout` from now; False once `epoch`'s lease ran out or was
        taken."""
        params = {"epoch": epoch, "lease": self.timeout}
        return bool(self.database.rows(QUERIES["renew_lease"], params))

    def release(self, epoch: int) -> None:
        """Free the lease of `epoch` at once (a no-op once another leads)."""
        self.database.run(QUERIES["release_lease"], {"epoch": epoch})


class TermDatabase(db.Database):
    """A pool as one term of leadership writes through it: every statement runs in a transaction
    that first holds the term's lease row (hold_term), so whatever a deposed leader still sends,
    a tick, a timer, a rescue or a prune, changes nothing.

    :raise errors.TermEnded: from any statement once `epoch` is no longer the leader's.
    """

    def __init__(self, pool: psycopg_pool.ConnectionPool, epoch: int) -> None:
        super().__init__(pool)
        self.epoch = epoch

    def rows(self, query: str, params: dict[str, Any] | None = None) -> list[db.Row]:
        with self.transaction() as cur:
            cur.execute(query, params or {})
            return cur.fetchall() if cur.description else []

    def run(self, query: str, params: dict[str, Any] | None = None) -> None:
        with self.transaction() as cur:
            cur.execute(query, params or {})

    @contextlib.contextmanager
    def transaction(self) -> Iterator[psycopg.Cursor[db.Row]]:
        with super().transaction() as cur:
            cur.execute(QUERIES["hold_term"], {"epoch": self.epoch})
            if cur.fetchone() is None:
                raise errors.TermEnded(self.epoch)
            yield cur
