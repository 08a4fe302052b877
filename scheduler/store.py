"""PostgreSQL access: one method per named query in queries.sql, driver errors turned into ours."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import importlib.resources
import logging
import re
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
import psycopg_pool
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from scheduler import errors, jobs

logger = logging.getLogger(__name__)

NOTIFY_CHANNEL = "scheduler"
# libpq keepalives so a silently dropped connection fails in seconds, not hours.
KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 20000,
    "connect_timeout": 5,
}
_QUERY_HEADER = re.compile(r"^-- (\w+) --$", re.MULTILINE)


def parse_queries(text: str) -> dict[str, str]:
    """Split a named-query file into {name: sql}, dropping each query's description comment."""
    parts = _QUERY_HEADER.split(text)
    queries = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [line for line in body.strip().splitlines() if not line.startswith("--")]
        queries[name] = "\n".join(lines).strip().rstrip(";")
    return queries


QUERIES = parse_queries(
    importlib.resources.files("scheduler").joinpath("queries.sql").read_text("utf-8")
)


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


@dataclasses.dataclass(frozen=True)
class AttemptRecord:
    job_id: str
    attempt: int
    started_at: dt.datetime
    duration_ms: int
    status_code: int | None
    error: str | None
    response_excerpt: str | None


class Store:
    def __init__(self, pool: psycopg_pool.ConnectionPool) -> None:
        self.pool = pool

    @contextlib.contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        """One connection, one transaction, committed on success."""
        with wrap_errors(), self.pool.connection() as conn:
            yield conn

    def _execute(self, name: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        with self.transaction() as conn, conn.cursor(row_factory=dict_row) as cur:
            # Always pass parameters so `%%` in a query means `%` whether or not it has any.
            cur.execute(QUERIES[name], params or {})
            return cur.fetchall() if cur.description else []

    def insert_job(self, job: jobs.NewJob) -> None:
        self._execute(
            "insert_job",
            {
                "id": job.id,
                "body": Jsonb(job.body),
                "run_at": job.run_at,
                "max_attempts": job.max_attempts,
            },
        )

    def cancel_job(self, job_id: str) -> None:
        self._execute("cancel_job", {"id": job_id})

    def replace_crons(self, crons: Sequence[jobs.CronDefinition]) -> None:
        """Make the cron set exactly `crons`, atomically; unchanged crons keep their timers."""
        with self.transaction() as conn, conn.cursor() as cur:
            cur.execute(QUERIES["lock_crons"])
            cur.execute(QUERIES["delete_crons_except"], {"ids": [c.id for c in crons]})
            removed = [row[0] for row in cur.fetchall()]
            if removed:
                cur.execute(QUERIES["cancel_pending_fires"], {"cron_ids": removed})
            cur.executemany(
                QUERIES["upsert_cron"],
                [{"id": c.id, "spec": c.spec, "timezone": c.timezone} for c in crons],
            )
            cur.execute(QUERIES["notify_crons_changed"])

    def list_crons(self) -> list[jobs.CronJob]:
        return [jobs.CronJob(**row) for row in self._execute("list_crons")]

    def claim_due_jobs(
        self, epoch: int, now: dt.datetime, leased_until: dt.datetime, limit: int
    ) -> list[jobs.Delivery]:
        rows = self._execute(
            "claim_due_jobs",
            {"epoch": epoch, "now": now, "leased_until": leased_until, "limit": limit},
        )
        return [jobs.Delivery(**row) for row in rows]

    def finish_delivery(self, record: AttemptRecord, state: str) -> None:
        with self.transaction() as conn:
            conn.execute(QUERIES["record_attempt"], dataclasses.asdict(record))
            conn.execute(
                QUERIES["finish_delivery"],
                {
                    "job_id": record.job_id,
                    "attempt": record.attempt,
                    "state": state,
                    "status_code": record.status_code,
                    "error": record.error,
                },
            )

    def schedule_retry(self, record: AttemptRecord, next_attempt_at: dt.datetime) -> None:
        with self.transaction() as conn:
            conn.execute(QUERIES["record_attempt"], dataclasses.asdict(record))
            conn.execute(
                QUERIES["schedule_retry"],
                {
                    "job_id": record.job_id,
                    "attempt": record.attempt,
                    "next_attempt_at": next_attempt_at,
                    "status_code": record.status_code,
                    "error": record.error,
                },
            )

    def record_cron_fire(
        self, epoch: int, revision: int, job_id: str, run_at: dt.datetime, max_attempts: int
    ) -> bool:
        """Record one tick of a cron revision; True when it was new."""
        rows = self._execute(
            "record_cron_fire",
            {
                "epoch": epoch,
                "revision": revision,
                "job_id": job_id,
                "run_at": run_at,
                "max_attempts": max_attempts,
            },
        )
        return bool(rows and rows[0]["inserted"])

    def release_orphaned_deliveries(self, epoch: int, now: dt.datetime) -> int:
        return len(self._execute("release_orphaned_deliveries", {"epoch": epoch, "now": now}))

    def release_expired_leases(self, epoch: int, now: dt.datetime) -> int:
        return len(self._execute("release_expired_leases", {"epoch": epoch, "now": now}))

    def prune_finished_jobs(self, before: dt.datetime, limit: int) -> int:
        return len(self._execute("prune_finished_jobs", {"before": before, "limit": limit}))

    def jobs_missing_timers(
        self, now: dt.datetime, until: dt.datetime, limit: int
    ) -> list[tuple[str, dt.datetime]]:
        rows = self._execute("jobs_missing_timers", {"now": now, "until": until, "limit": limit})
        return [(row["id"], row["next_attempt_at"]) for row in rows]

    def stale_job_timers(self) -> list[str]:
        return [row["id"] for row in self._execute("stale_job_timers")]

    def crons_missing_timers(self) -> list[jobs.CronJob]:
        return [
            jobs.CronJob(timezone="", created_at=None, **row)
            for row in self._execute("crons_missing_timers")
        ]

    def stale_cron_timers(self) -> list[str]:
        return [row["id"] for row in self._execute("stale_cron_timers")]

    def count_pending(self) -> int:
        return int(self._execute("count_pending")[0]["pending"])


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
        with wrap_errors():
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
        with wrap_errors():
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
                KEEPALIVES,
                keepalives_idle=1,
                keepalives_interval=1,
                keepalives_count=2,
                tcp_user_timeout=seconds * 1000 // 3,
            )
            with wrap_errors():
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
