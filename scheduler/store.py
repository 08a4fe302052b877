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

from scheduler import db, errors, jobs, migrate

logger = logging.getLogger(__name__)

NOTIFY_CHANNEL = "scheduler"
# The notices queries.sql sends on NOTIFY_CHANNEL, as `<kind>` or `<kind> <argument>`.
# Arguments: seconds until the job is due by the database's clock, then its due time as epoch
# seconds (which an earlier version's dispatcher reads, during a rolling deploy).
JOB_DUE = "j"
JOBS_DUE = "b"  # several jobs were added, or jobs are due now: every dispatcher looks
CRONS_CHANGED = "c"  # the leader resynchronises its cron timers
NOTICE_KINDS = (JOB_DUE, JOBS_DUE, CRONS_CHANGED)
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


@dataclasses.dataclass(frozen=True)
class Notice:
    """A parsed notification; `due_in` is set for JOB_DUE."""

    kind: str
    due_in: float | None = None


def parse_notice(payload: str) -> Notice:
    """Read a notification; anything unexpected (such as an earlier version's `j <id> <epoch>`
    during a rolling deploy) reads as JOBS_DUE, which costs one look and misses nothing."""
    kind, _, arguments = payload.partition(" ")
    if kind == JOB_DUE:
        try:
            return Notice(JOB_DUE, float(arguments.split(" ")[0]))
        except ValueError:
            return Notice(JOBS_DUE)
    return Notice(kind if kind in NOTICE_KINDS else JOBS_DUE)


def _as_is(text: str) -> str:
    return text


def _job_params(job: jobs.NewJob) -> dict[str, Any]:
    return {
        "id": job.id,
        # Already JSON text (jsonb.encode), written once by the web process to measure it.
        "body": Jsonb(job.body, dumps=_as_is),
        "run_at": job.run_at,
        "delay": job.delay,
        "max_attempts": job.max_attempts,
        "traceparent": job.traceparent,
        "tracestate": job.tracestate,
    }


@dataclasses.dataclass(frozen=True)
class Idempotency:
    """An idempotency key and a digest of the request it was first used with."""

    key: str
    digest: str


@dataclasses.dataclass(frozen=True)
class JobFilters:
    limit: int
    state: str | None = None
    cron_id: str | None = None
    before: dt.datetime | None = None
    after: dt.datetime | None = None
    cursor: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class AttemptRecord(jobs.Attempt):
    """An attempt to store, with the job it belongs to."""

    job_id: str


@dataclasses.dataclass(frozen=True)
class Settlement:
    """An attempt made under claim `claim_token` and what becomes of its job: `delivered`,
    `failed`, or `scheduled` again `retry_in` seconds from now by the database's clock."""

    record: AttemptRecord
    claim_token: int
    state: str
    retry_in: float | None = None


@dataclasses.dataclass(frozen=True)
class RecordedTicks:
    """Cron ticks new to the table, and how many of those were recorded as skipped."""

    recorded: int
    skipped: int


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


def _outcome_params(settlement: Settlement) -> dict[str, Any]:
    return {
        "job_id": settlement.record.job_id,
        "claim_token": settlement.claim_token,
        "status_code": settlement.record.status_code,
        "error": settlement.record.error,
    }


class Store:
    def __init__(self, pool: psycopg_pool.ConnectionPool) -> None:
        self.pool = pool

    @contextlib.contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        """One connection, one transaction, committed on success."""
        with db.wrap_errors(), self.pool.connection() as conn, conn.transaction():
            yield conn

    def _execute(self, name: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run one statement, which commits by itself: no BEGIN and COMMIT round trips."""
        with (
            db.wrap_errors(),
            self.pool.connection() as conn,
            conn.cursor(row_factory=dict_row) as cur,
        ):
            # Always pass parameters so `%%` in a query means `%` whether or not it has any.
            cur.execute(QUERIES[name], params or {})
            return cur.fetchall() if cur.description else []

    def insert_jobs(
        self,
        new_jobs: Sequence[jobs.NewJob],
        key: Idempotency | None = None,
        announce_within: float | None = None,
    ) -> list[str]:
        """Insert jobs in one transaction, or return what an earlier request with `key` made.

        Jobs due within `announce_within` seconds (every job when it is None) wake the
        dispatchers with a notification; they find later ones on their own periodic look.

        :raise errors.IdempotencyConflict: `key` was used for a different request.
        """
        now = dt.datetime.now(dt.UTC)
        announce = announce_within is None or any(
            j.due_within(announce_within, now) for j in new_jobs
        )
        single = QUERIES["insert_job"] if announce else QUERIES["insert_job_quietly"]
        if key is None and len(new_jobs) == 1:
            # The hot path: one statement that commits by itself, no BEGIN and COMMIT round
            # trips, and no rows to build.
            with db.wrap_errors(), self.pool.connection() as conn:
                conn.execute(single, _job_params(new_jobs[0]))
            return [new_jobs[0].id]
        with self.transaction() as conn, conn.cursor() as cur:
            if key is not None:
                cur.execute(
                    QUERIES["claim_idempotency_key"],
                    {
                        "key": key.key,
                        "job_ids": [j.id for j in new_jobs],
                        "request_hash": key.digest,
                    },
                )
                if cur.fetchone() is None:
                    return self._earlier_result(cur, key)
            if len(new_jobs) == 1:
                cur.execute(single, _job_params(new_jobs[0]))
            else:
                cur.executemany(QUERIES["insert_job_quietly"], [_job_params(j) for j in new_jobs])
                if announce:
                    cur.execute(QUERIES["notify_jobs_due"])
        return [j.id for j in new_jobs]

    @staticmethod
    def _earlier_result(cur: psycopg.Cursor[Any], key: Idempotency) -> list[str]:
        cur.execute(QUERIES["find_idempotency_key"], {"key": key.key})
        row = cur.fetchone()
        assert row is not None, "a key that conflicted exists once its owner committed"
        job_ids, digest = row
        if digest != key.digest:
            raise errors.IdempotencyConflict(key.key)
        return list(job_ids)

    def cancel_job(self, job_id: str) -> None:
        self._execute("cancel_job", {"id": job_id})

    def get_job(self, job_id: str) -> tuple[jobs.JobRecord, list[jobs.Attempt]]:
        """:raise errors.JobNotFound: no job has this id."""
        with self.transaction() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(QUERIES["get_job"], {"id": job_id})
            row = cur.fetchone()
            if row is None:
                raise errors.JobNotFound(job_id)
            cur.execute(QUERIES["list_attempts"], {"job_id": job_id})
            attempts = [jobs.Attempt(**a) for a in cur.fetchall()]
        return jobs.JobRecord(**row), attempts

    def list_jobs(self, filters: JobFilters) -> list[jobs.JobRecord]:
        rows = self._execute("list_jobs", dataclasses.asdict(filters))
        return [jobs.JobRecord(**row) for row in rows]

    def run_job_now(self, job_id: str) -> None:
        """:raise errors.JobNotFound, errors.Conflict: unknown, or not waiting to be sent."""
        if not self._execute("run_job_now", {"id": job_id}):
            self._explain(job_id, "only a scheduled job can be run now")

    def retry_job(self, job_id: str) -> None:
        """:raise errors.JobNotFound, errors.Conflict: unknown, or not failed."""
        if not self._execute("retry_failed_job", {"id": job_id}):
            self._explain(job_id, "only a failed job can be retried")

    def _explain(self, job_id: str, rule: str) -> None:
        rows = self._execute("job_state", {"id": job_id})
        if not rows:
            raise errors.JobNotFound(job_id)
        raise errors.Conflict(f"job {job_id} is {rows[0]['state']}: {rule}")

    def replace_crons(self, crons: Sequence[jobs.CronDefinition]) -> None:
        """Make the cron set exactly `crons`, atomically; unchanged crons keep their timers."""
        with self.transaction() as conn, conn.cursor() as cur:
            cur.execute(QUERIES["lock_crons"])
            cur.execute(QUERIES["delete_crons_except"], {"ids": [c.id for c in crons]})
            removed = [row[0] for row in cur.fetchall()]
            if removed:
                cur.execute(QUERIES["cancel_pending_fires"], {"cron_ids": removed})
            cur.executemany(QUERIES["upsert_cron"], [dataclasses.asdict(c) for c in crons])
            cur.execute(QUERIES["notify_crons_changed"])

    def list_crons(self) -> list[jobs.CronJob]:
        return [jobs.CronJob(**row) for row in self._execute("list_crons")]

    def cron_statuses(self, cron_id: str | None = None) -> list[jobs.CronStatus]:
        """Crons (all, or the one named) with their latest run's outcome."""
        statuses = []
        for row in self._execute("list_crons_with_outcomes", {"id": cron_id}):
            last_state, last_status = row.pop("last_state"), row.pop("last_status")
            statuses.append(jobs.CronStatus(jobs.CronJob(**row), last_state, last_status))
        return statuses

    def put_cron(self, cron: jobs.CronDefinition) -> None:
        """Create or redefine one cron, leaving the others alone."""
        with self.transaction() as conn:
            conn.execute(QUERIES["upsert_cron"], dataclasses.asdict(cron))
            conn.execute(QUERIES["notify_crons_changed"])

    def delete_cron(self, cron_id: str) -> bool:
        """Remove one cron and cancel its runs still waiting; False if there was none."""
        with self.transaction() as conn:
            if conn.execute(QUERIES["delete_crons_by_id"], {"id": cron_id}).fetchone() is None:
                return False
            conn.execute(QUERIES["cancel_pending_fires"], {"cron_ids": [cron_id]})
            conn.execute(QUERIES["notify_crons_changed"])
        return True

    def set_cron_paused(self, cron_id: str, paused: bool) -> None:
        """:raise errors.CronNotFound: no cron has this id."""
        with self.transaction() as conn:
            row = conn.execute(
                QUERIES["set_cron_paused"], {"id": cron_id, "paused": paused}
            ).fetchone()
            if row is None:
                raise errors.CronNotFound(cron_id)
            conn.execute(QUERIES["notify_crons_changed"])

    def run_cron_now(self, cron_id: str, job_id: str, max_attempts: int) -> str:
        """Schedule one extra run of a cron, due now; its job id.

        :raise errors.CronNotFound: no cron has this id.
        """
        with self.transaction() as conn:
            row = conn.execute(
                QUERIES["run_cron_now"],
                {"id": cron_id, "job_id": job_id, "max_attempts": max_attempts},
            ).fetchone()
            if row is None:
                raise errors.CronNotFound(cron_id)
        return str(row[0])

    def backfill_cron(
        self, cron: jobs.CronJob, ticks: Sequence[jobs.CronTick], max_attempts: int
    ) -> int:
        """Record `ticks` of `cron` as its revision defines them; how many are new or due again
        (ticks overlap skipped).

        :raise errors.Conflict: the cron was redefined or removed meanwhile.
        """
        with self.transaction() as conn:
            row = conn.execute(
                QUERIES["backfill_cron"],
                {
                    "id": cron.id,
                    "revision": cron.revision,
                    "job_ids": [t.job_id for t in ticks],
                    "run_ats": [t.run_at for t in ticks],
                    "max_attempts": max_attempts,
                },
            ).fetchone()
            assert row is not None
            found, recorded = row
            if not found:
                raise errors.Conflict(f"cron {cron.id} was changed meanwhile: ask again")
            if recorded:
                conn.execute(QUERIES["notify_jobs_due"])
        return int(recorded)

    def read_leader(self) -> dict[str, Any]:
        return self._execute("read_leader")[0]

    def pending_migrations(self) -> list[str]:
        with self.transaction() as conn:
            return migrate.pending(conn)

    def claim_due_jobs(
        self, dispatcher_id: str, lease_seconds: float, limit: int
    ) -> list[jobs.Delivery]:
        """Claim up to `limit` deliveries due by the database's clock, each under a new token."""
        rows = self._execute(
            "claim_due_jobs",
            {"dispatcher_id": dispatcher_id, "lease_seconds": lease_seconds, "limit": limit},
        )
        return [jobs.Delivery(**row) for row in rows]

    def settle_deliveries(
        self, settled: Sequence[Settlement], unsent: Sequence[tuple[str, int]] = ()
    ) -> None:
        """Record attempts and what becomes of their jobs, and give back claims never sent
        (job id, claim token), all in one transaction. An outcome whose claim is no longer
        current (cancelled, or re-claimed after its dispatcher was declared dead) changes no
        job."""
        finals = [s for s in settled if s.state != "scheduled"]
        retries = [s for s in settled if s.state == "scheduled"]
        with self.transaction() as conn, conn.cursor() as cur:
            if settled:
                cur.executemany(
                    QUERIES["record_attempt"], [dataclasses.asdict(s.record) for s in settled]
                )
            if finals:
                cur.executemany(
                    QUERIES["finish_delivery"],
                    [{**_outcome_params(s), "state": s.state} for s in finals],
                )
            if retries:
                cur.executemany(
                    QUERIES["schedule_retry"],
                    [{**_outcome_params(s), "retry_in": s.retry_in} for s in retries],
                )
            if unsent:
                cur.executemany(
                    QUERIES["give_back_delivery"],
                    [{"job_id": job_id, "claim_token": token} for job_id, token in unsent],
                )

    def record_cron_fires(
        self, epoch: int, ticks: Sequence[jobs.CronTick], max_attempts: int
    ) -> RecordedTicks:
        """Record cron ticks in one statement; how many were new, and how many of those were
        skipped (overlap)."""
        rows = self._execute(
            "record_cron_fires",
            {
                "epoch": epoch,
                "revisions": [t.revision for t in ticks],
                "job_ids": [t.job_id for t in ticks],
                "run_ats": [t.run_at for t in ticks],
                "max_attempts": max_attempts,
            },
        )
        return RecordedTicks(int(rows[0]["inserted"]), int(rows[0]["skipped"]))

    def release_unowned_claims(self, epoch: int) -> int:
        return len(self._execute("release_unowned_claims", {"epoch": epoch}))

    def release_dead_claims(self, epoch: int, live_seconds: float) -> int:
        """Re-queue what dispatchers without a heartbeat in `live_seconds` hold, and expired
        leases; how many."""
        params = {"epoch": epoch, "live_seconds": live_seconds}
        return len(self._execute("release_dead_claims", params))

    def prune_finished_jobs(self, before: dt.datetime, limit: int) -> int:
        return len(self._execute("prune_finished_jobs", {"before": before, "limit": limit}))

    def prune_idempotency_keys(self, before: dt.datetime, limit: int) -> int:
        return len(self._execute("prune_idempotency_keys", {"before": before, "limit": limit}))

    def next_due_in(self) -> float | None:
        """Seconds until the next waiting job is due, by the database's clock; None if none."""
        due_in: float | None = self._execute("next_due_in")[0]["due_in"]
        return due_in

    def database_now(self) -> dt.datetime:
        now: dt.datetime = self._execute("database_now")[0]["database_now"]
        return now

    def beat_dispatcher(
        self,
        dispatcher_id: str,
        host: str,
        pid: int,
        in_flight: int,
        delivered: int,
        metrics_port: int | None,
    ) -> dt.datetime:
        """Register or renew a dispatcher's heartbeat; the database's clock at that moment."""
        params = {
            "id": dispatcher_id,
            "host": host,
            "pid": pid,
            "in_flight": in_flight,
            "delivered": delivered,
            "metrics_port": metrics_port,
        }
        now: dt.datetime = self._execute("beat_dispatcher", params)[0]["database_now"]
        return now

    def notify_jobs_due(self) -> None:
        """Have every dispatcher look for due deliveries now."""
        self._execute("notify_jobs_due")

    def remove_dispatcher(self, dispatcher_id: str) -> None:
        self._execute("remove_dispatcher", {"id": dispatcher_id})

    def prune_dispatchers(self, older_than: float) -> int:
        return len(self._execute("prune_dispatchers", {"older_than": older_than}))

    def list_dispatchers(self, live_seconds: float) -> list[LiveDispatcher]:
        rows = self._execute("list_dispatchers", {"live_seconds": live_seconds})
        return [LiveDispatcher(**row) for row in rows]

    def stale_job_timers(self) -> list[str]:
        return [row["id"] for row in self._execute("stale_job_timers")]

    def crons_missing_timers(self) -> list[jobs.CronJob]:
        return [jobs.CronJob(**row) for row in self._execute("crons_missing_timers")]

    def stale_cron_timers(self) -> list[str]:
        return [row["id"] for row in self._execute("stale_cron_timers")]

    def count_due_jobs(self, now: dt.datetime) -> int:
        return int(self._execute("count_due_jobs", {"now": now})[0]["due"])


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
                db.KEEPALIVES,
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
