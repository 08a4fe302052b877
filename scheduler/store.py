"""PostgreSQL access: one method per named query in queries.sql, driver errors turned into ours."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import importlib.resources
import itertools
import logging
import operator
import re
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
import psycopg_pool
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from scheduler import db, errors, jobs, lateness, migrate

logger = logging.getLogger(__name__)

NOTIFY_CHANNEL = "scheduler"
# The notices queries.sql sends on NOTIFY_CHANNEL, as `<kind>` or `<kind> <argument>`.
# Arguments: seconds until the job is due by the database's clock, then its due time as epoch
# seconds (which an earlier version's dispatcher reads, during a rolling deploy).
JOB_DUE = "j"
JOBS_DUE = "b"  # several jobs were added, or jobs are due now: every dispatcher looks
CRONS_CHANGED = "c"  # the leader resynchronises its cron timers
ENDPOINTS_CHANGED = "e"  # every dispatcher reloads which endpoints are paused or limited
NOTICE_KINDS = (JOB_DUE, JOBS_DUE, CRONS_CHANGED, ENDPOINTS_CHANGED)
# An endpoint held by max_in_flight is looked at again this soon: the delivery that frees a slot
# may be another dispatcher's, which no event here announces.
IN_FLIGHT_RECHECK_SECONDS = 0.25
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


def _next_try(
    due_in: float | None, bucket: float | None, limits: EndpointLimits, room_left: bool
) -> float | None:
    """When a limited endpoint's claim could take more: at its next job's due time, or once a
    token is back, or (held by max_in_flight) soon, since another dispatcher's delivery may end."""
    if due_in is None:
        return None
    wait = max(0.0, due_in)
    if bucket is not None and bucket < 1 and limits.rate_limit is not None:
        wait = max(wait, (1 - bucket) / limits.rate_limit)
    elif not room_left and limits.max_in_flight is not None:
        wait = max(wait, IN_FLIGHT_RECHECK_SECONDS)
    return wait


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
        "endpoint": job.endpoint,
        "traceparent": job.traceparent,
        "tracestate": job.tracestate,
    }


def _job_columns(new_jobs: Sequence[jobs.NewJob]) -> dict[str, list[Any]]:
    """insert_jobs_quietly's arrays, one element per job."""
    return {
        "ids": [j.id for j in new_jobs],
        "bodies": [j.body for j in new_jobs],
        "run_ats": [j.run_at for j in new_jobs],
        # One type per array: a delay given as 60 and another as 1.5 would mix int and float.
        "delays": [None if j.delay is None else float(j.delay) for j in new_jobs],
        "max_attempts": [j.max_attempts for j in new_jobs],
        "endpoints": [j.endpoint for j in new_jobs],
        "traceparents": [j.traceparent for j in new_jobs],
        "tracestates": [j.tracestate for j in new_jobs],
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
    endpoint: str | None = None
    error_kind: str | None = None


@dataclasses.dataclass(frozen=True)
class BulkFilters:
    """Which failed jobs a bulk retry takes: those matching every filter given that had failed by
    `as_of` (the database's time when the user was shown how many), so jobs failing afterwards are
    not swept up by a confirmation that never counted them."""

    as_of: dt.datetime
    cron_id: str | None = None
    endpoint: str | None = None
    error_kind: str | None = None
    before: dt.datetime | None = None
    after: dt.datetime | None = None


@dataclasses.dataclass(frozen=True)
class StateCounts:
    """Jobs per state, exact or (on a large table) the planner's estimate."""

    jobs: dict[str, int]
    estimated: bool


# Below this many rows (by the planner's estimate) jobs per state are counted exactly.
EXACT_COUNT_BELOW = 100_000


@dataclasses.dataclass(frozen=True, kw_only=True)
class AttemptRecord(jobs.Attempt):
    """An attempt to store, with the job it belongs to."""

    job_id: str


@dataclasses.dataclass(frozen=True)
class Settlement:
    """An attempt made under claim `claim_token` and what becomes of its job: `delivered`,
    `failed`, or `scheduled` again `retry_in` seconds from now by the database's clock. A claim
    that could not be sent at all (`attempted` false) is not recorded as an attempt. `lateness`
    (seconds) counts in the per-minute rollup when set."""

    record: AttemptRecord
    claim_token: int
    state: str
    retry_in: float | None = None
    attempted: bool = True
    lateness: float | None = None


@dataclasses.dataclass(frozen=True)
class FailureNotices:
    """Where a job that ends failed is announced (SCHEDULER_FAILURE_ENDPOINT), and how hard."""

    endpoint: str
    max_attempts: int


@dataclasses.dataclass(frozen=True)
class EndpointState:
    """An endpoint's run-time state: paused, and the limits set at run time (`*_set`; None set
    means unlimited) that win over the environment's."""

    name: str
    paused: bool = False
    rate_limit: float | None = None
    rate_limit_set: bool = False
    max_in_flight: int | None = None
    max_in_flight_set: bool = False

    def limits(self, rate_limit: float | None, max_in_flight: int | None) -> EndpointLimits:
        """The limits in force, given the environment's defaults."""
        return EndpointLimits(
            self.rate_limit if self.rate_limit_set else rate_limit,
            self.max_in_flight if self.max_in_flight_set else max_in_flight,
        )


@dataclasses.dataclass(frozen=True)
class EndpointLimits:
    rate_limit: float | None
    max_in_flight: int | None

    @property
    def any(self) -> bool:
        return self.rate_limit is not None or self.max_in_flight is not None


@dataclasses.dataclass(frozen=True)
class EndpointFigures:
    state: EndpointState
    in_flight: int
    due: int


@dataclasses.dataclass(frozen=True)
class EndpointClaim:
    """What one claim for a paused or limited endpoint took, and in how many seconds it could
    take more (None: not before it is woken, or its next job is due)."""

    claimed: list[jobs.Delivery]
    retry_in: float | None


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


@dataclasses.dataclass(frozen=True)
class DeliveryMinute:
    """One minute's outcomes over every dispatcher, and its lateness: counts per bucket of
    lateness.LATENESS_BOUNDS_MS, and the percentiles they give (milliseconds; None when no
    first attempt started that minute)."""

    minute: dt.datetime
    delivered: int
    failed: int
    retried: int
    lateness_p50_ms: float | None
    lateness_p99_ms: float | None
    lateness: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class FailedGroup:
    """Failed jobs whose last error was of one kind (jobs.ERROR_KINDS, `http_<status>`, or
    None: recorded before kinds were)."""

    kind: str | None
    count: int
    latest_finished_at: dt.datetime | None


def _outcome_params(settlement: Settlement) -> dict[str, Any]:
    return {
        "job_id": settlement.record.job_id,
        "claim_token": settlement.claim_token,
        "status_code": settlement.record.status_code,
        "error": settlement.record.error,
        "error_kind": settlement.record.error_kind,
    }


def _attempt_columns(settled: Sequence[Settlement]) -> dict[str, list[Any]]:
    """record_attempts' arrays, one element per attempt."""
    records = [s.record for s in settled]
    return {
        "job_ids": [r.job_id for r in records],
        "attempts": [r.attempt for r in records],
        "started_ats": [r.started_at for r in records],
        "durations_ms": [r.duration_ms for r in records],
        "status_codes": [r.status_code for r in records],
        "errors": [r.error for r in records],
        "excerpts": [r.response_excerpt for r in records],
        "error_kinds": [r.error_kind for r in records],
    }


def _finish_columns(finals: Sequence[Settlement]) -> dict[str, list[Any]]:
    """finish_deliveries' arrays, one element per delivery closed; a notification id for each
    that failed (used only if failure notifications are on)."""
    return {
        "job_ids": [s.record.job_id for s in finals],
        "claim_tokens": [s.claim_token for s in finals],
        "states": [s.state for s in finals],
        "attempted": [s.attempted for s in finals],
        "status_codes": [s.record.status_code for s in finals],
        "errors": [s.record.error for s in finals],
        "error_kinds": [s.record.error_kind for s in finals],
        "notice_ids": [jobs.new_job_id() if s.state == "failed" else None for s in finals],
    }


def _minute_params(dispatcher_id: str, settled: Sequence[Settlement]) -> dict[str, Any]:
    states = [s.state for s in settled]
    late = [s.lateness * 1000 for s in settled if s.lateness is not None]
    return {
        "dispatcher_id": dispatcher_id,
        "delivered": states.count("delivered"),
        "failed": states.count("failed"),
        "retried": states.count("scheduled"),
        "lateness": lateness.count_buckets(late),
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
        if key is None and not announce:
            # Grouped single inserts due later than the dispatchers' next look: one statement
            # that commits by itself.
            with db.wrap_errors(), self.pool.connection() as conn:
                conn.execute(QUERIES["insert_jobs_quietly"], _job_columns(new_jobs))
            return [j.id for j in new_jobs]
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
                cur.execute(QUERIES["insert_jobs_quietly"], _job_columns(new_jobs))
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

    def job_state_counts(self) -> StateCounts:
        """Jobs per state: exact on a small table, else from the planner's statistics, which
        cost nothing but are only as fresh as the last ANALYZE."""
        (row,) = self._execute("job_state_estimates")
        total = int(row["total"])
        if total < EXACT_COUNT_BELOW or not row["states"]:
            counted = self._execute("count_jobs_by_state")
            return StateCounts({r["state"]: int(r["jobs"]) for r in counted}, estimated=False)
        shares = zip(row["states"], row["frequencies"], strict=True)
        return StateCounts({state: round(total * share) for state, share in shares}, True)

    def count_due_backlog(self, cap: int) -> int:
        """Jobs due but not sent, counted up to `cap`."""
        return int(self._execute("count_due_backlog", {"cap": cap})[0]["due"])

    def count_delivering(self, cap: int) -> int:
        """Jobs being delivered, counted up to `cap`."""
        return int(self._execute("count_delivering", {"cap": cap})[0]["delivering"])

    def count_failed_matching(self, filters: BulkFilters, cap: int) -> int:
        """Failed jobs a bulk retry with `filters` would take, counted up to `cap`."""
        params = {**dataclasses.asdict(filters), "cap": cap}
        return int(self._execute("count_failed_matching", params)[0]["failed"])

    def retry_failed_batch(self, filters: BulkFilters, limit: int) -> int:
        """Retry up to `limit` of the failed jobs matching `filters`, newest first, in one
        transaction; returns how many were retried (0: none left)."""
        params = {**dataclasses.asdict(filters), "limit": limit}
        return int(self._execute("retry_failed_batch", params)[0]["retried"])

    def cancel_jobs(self, job_ids: Sequence[str]) -> int:
        """Cancel those of the jobs still waiting to be sent; returns how many were."""
        return int(self._execute("cancel_jobs", {"ids": list(job_ids)})[0]["cancelled"])

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
        return self._cron_statuses(self._execute("list_crons_with_outcomes", {"id": cron_id}))

    def cron_statuses_page(self, after: str | None, limit: int) -> list[jobs.CronStatus]:
        """Up to `limit` crons in id order after `after`, with their latest run's outcome."""
        rows = self._execute("list_crons_page", {"after": after, "limit": limit})
        return self._cron_statuses(rows)

    @staticmethod
    def _cron_statuses(rows: list[dict[str, Any]]) -> list[jobs.CronStatus]:
        statuses = []
        for row in rows:
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
        self,
        dispatcher_id: str,
        lease_seconds: float,
        limit: int,
        held: Sequence[str] = (),
        known: Sequence[str] = (),
        ahead: float = 0.0,
    ) -> list[jobs.Delivery]:
        """Claim up to `limit` deliveries due by the database's clock within `ahead` seconds,
        each under a new token, leaving out the `held` endpoints' (paused or limited:
        claim_endpoint_jobs), and those of `known` endpoints paused or limited at run time since
        `held` was read."""
        params = {
            "dispatcher_id": dispatcher_id,
            "lease_seconds": lease_seconds,
            "limit": limit,
            "held": list(held),
            "known": list(known),
            "ahead": ahead,
        }
        return [jobs.Delivery(**row) for row in self._execute("claim_due_jobs", params)]

    def claim_endpoint_jobs(
        self,
        dispatcher_id: str,
        lease_seconds: float,
        limit: int,
        endpoint: str,
        defaults: EndpointLimits,
    ) -> EndpointClaim:
        """Claim up to `limit` of one endpoint's due deliveries within its pause and limits,
        with its row locked so that every dispatcher draws on the same token bucket and
        in-flight count. The bucket holds one second's worth (at least one token)."""
        with self.transaction() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(QUERIES["lock_endpoint"], {"endpoint": endpoint})
            row = cur.fetchone()
            assert row is not None
            tokens, since_refill = row.pop("tokens"), row.pop("since_refill")
            locked_at = row.pop("locked_at")
            state = EndpointState(endpoint, **row)
            limits = state.limits(defaults.rate_limit, defaults.max_in_flight)
            allowance = limit
            bucket: float | None = None
            if limits.rate_limit is not None:
                rate, capacity = limits.rate_limit, max(limits.rate_limit, 1.0)
                if tokens is None or since_refill is None:
                    bucket = capacity
                else:
                    bucket = min(capacity, tokens + rate * max(0.0, since_refill))
                allowance = min(allowance, int(bucket))
            if limits.max_in_flight is not None:
                cur.execute(QUERIES["count_in_flight"], {"endpoint": endpoint})
                in_flight = cur.fetchone()
                assert in_flight is not None
                allowance = min(allowance, limits.max_in_flight - int(in_flight["in_flight"]))
            # While paused only jobs an operator asked to run go, read from an index of those.
            if state.paused:
                claim_query = QUERIES["claim_paused_endpoint_jobs"]
                due_in_query = QUERIES["paused_endpoint_due_in"]
            else:
                claim_query = QUERIES["claim_endpoint_jobs"]
                due_in_query = QUERIES["endpoint_due_in"]
            claimed: list[jobs.Delivery] = []
            if allowance > 0:
                cur.execute(
                    claim_query,
                    {
                        "dispatcher_id": dispatcher_id,
                        "lease_seconds": lease_seconds,
                        "limit": allowance,
                        "endpoint": endpoint,
                    },
                )
                claimed = [jobs.Delivery(**found) for found in cur.fetchall()]
            if bucket is not None:
                bucket -= len(claimed)
                cur.execute(
                    QUERIES["save_tokens"],
                    {"endpoint": endpoint, "tokens": bucket, "refilled_at": locked_at},
                )
            if len(claimed) == limit:
                # No room left here: the senders wake the claim loop when there is.
                return EndpointClaim(claimed, None)
            cur.execute(due_in_query, {"endpoint": endpoint})
            due = cur.fetchone()
            due_in: float | None = due["due_in"] if due else None
        return EndpointClaim(claimed, _next_try(due_in, bucket, limits, len(claimed) < allowance))

    def settle_deliveries(
        self,
        settled: Sequence[Settlement],
        unsent: Sequence[tuple[str, int]] = (),
        notices: FailureNotices | None = None,
        dispatcher_id: str | None = None,
    ) -> None:
        """Record attempts and what becomes of their jobs, and give back claims never sent
        (job id, claim token), all in one transaction. An outcome whose claim is no longer
        current (cancelled, or re-claimed after its dispatcher was declared dead) changes no
        job. With `dispatcher_id`, the outcomes are also added to its row of the per-minute
        rollup (delivery_minutes), in one more statement."""
        finals = [s for s in settled if s.state != "scheduled"]
        retries = [s for s in settled if s.state == "scheduled"]
        attempted = [s for s in settled if s.attempted]
        notice = {
            "notice_endpoint": notices.endpoint if notices else None,
            "notice_attempts": notices.max_attempts if notices else 1,
        }
        with self.transaction() as conn, conn.cursor() as cur:
            if attempted:
                cur.execute(QUERIES["record_attempts"], _attempt_columns(attempted))
            if finals:
                cur.execute(QUERIES["finish_deliveries"], {**_finish_columns(finals), **notice})
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
            if settled and dispatcher_id is not None:
                cur.execute(QUERIES["add_delivery_minute"], _minute_params(dispatcher_id, settled))

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
        """Delete up to `limit` delivered, cancelled and skipped jobs that finished before
        `before`, with their attempts; how many jobs."""
        params = {"before": before, "limit": limit}
        return int(self._execute("prune_finished_jobs", params)[0]["pruned"])

    def prune_failed_jobs(self, before: dt.datetime, limit: int) -> int:
        """Delete up to `limit` failed jobs that failed before `before`, with their attempts."""
        params = {"before": before, "limit": limit}
        return int(self._execute("prune_failed_jobs", params)[0]["pruned"])

    def prune_idempotency_keys(self, before: dt.datetime, limit: int) -> int:
        return len(self._execute("prune_idempotency_keys", {"before": before, "limit": limit}))

    def next_due_in(self, held: Sequence[str] = (), known: Sequence[str] = ()) -> float | None:
        """Seconds until the next waiting job of an endpoint not held (as in claim_due_jobs) is
        due, by the database's clock; None if none."""
        params = {"held": list(held), "known": list(known)}
        due_in = self._execute("next_due_in", params)[0]["due_in"]
        return None if due_in is None else float(due_in)

    def endpoint_states(self) -> list[EndpointState]:
        return [EndpointState(**row) for row in self._execute("endpoint_states")]

    def endpoint_figures(
        self, names: Sequence[str], due_cap: int | None = None
    ) -> list[EndpointFigures]:
        """Each named endpoint's state, in flight and due (counted up to `due_cap`, if given), in
        the order given."""
        figures = []
        params = {"names": list(names), "due_cap": due_cap}
        for row in self._execute("endpoint_figures", params):
            in_flight, due = int(row.pop("in_flight")), int(row.pop("due"))
            figures.append(EndpointFigures(EndpointState(**row), in_flight, due))
        return figures

    def set_endpoint_limits(self, endpoint: str, limits: dict[str, float | int | None]) -> None:
        """Override the limits named in `limits` (rate_limit, max_in_flight; None: unlimited),
        leaving the other as it is, and tell every dispatcher."""
        with self.transaction() as conn:
            conn.execute(
                QUERIES["set_endpoint_limits"],
                {
                    "endpoint": endpoint,
                    "rate_limit": limits.get("rate_limit"),
                    "set_rate_limit": "rate_limit" in limits,
                    "max_in_flight": limits.get("max_in_flight"),
                    "set_max_in_flight": "max_in_flight" in limits,
                },
            )
            conn.execute(QUERIES["notify_endpoints_changed"])

    def reset_endpoint_limits(self, endpoint: str) -> None:
        with self.transaction() as conn:
            conn.execute(QUERIES["reset_endpoint_limits"], {"endpoint": endpoint})
            conn.execute(QUERIES["notify_endpoints_changed"])

    def set_endpoint_paused(self, endpoint: str, paused: bool) -> None:
        with self.transaction() as conn:
            conn.execute(QUERIES["set_endpoint_paused"], {"endpoint": endpoint, "paused": paused})
            conn.execute(QUERIES["notify_endpoints_changed"])

    def unknown_endpoints(self, names: Sequence[str]) -> list[str]:
        """Endpoint names that waiting jobs or crons use and `names` lacks."""
        rows = self._execute("unknown_endpoints", {"names": list(names)})
        return sorted(row["endpoint"] for row in rows)

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

    def insert_dashboard_session(
        self, id_sha256: str, csrf_token: str, client_address: str, lifetime: float
    ) -> None:
        params = {
            "id_sha256": id_sha256,
            "csrf_token": csrf_token,
            "client_address": client_address,
            "lifetime": lifetime,
        }
        self._execute("insert_dashboard_session", params)

    def dashboard_session_csrf_token(self, id_sha256: str) -> str | None:
        """The CSRF token of a live session; None when it ended or never existed."""
        rows = self._execute("dashboard_session_csrf_token", {"id_sha256": id_sha256})
        return str(rows[0]["csrf_token"]) if rows else None

    def delete_dashboard_session(self, id_sha256: str) -> None:
        self._execute("delete_dashboard_session", {"id_sha256": id_sha256})

    def reserve_login_attempt(self, client_address: str, limit: int, window: float) -> float | None:
        """Count an attempt against `client_address`: None when counted, else the seconds until
        its `window` ends and it may try again (it had `limit` attempts in the window)."""
        params = {"client_address": client_address, "limit": limit, "window": window}
        if self._execute("reserve_login_attempt", params):
            return None
        rows = self._execute("login_retry_after", params)
        # Pruned between the two statements: the window had just ended.
        return float(rows[0]["retry_after"]) if rows else 0.0

    def forgive_login_attempt(self, client_address: str) -> None:
        self._execute("forgive_login_attempt", {"client_address": client_address})

    def prune_dashboard_logins(self, window: float) -> tuple[int, int]:
        """Delete expired sessions and passed login windows; how many of each."""
        row = self._execute("prune_dashboard_logins", {"window": window})[0]
        return int(row["sessions"]), int(row["failures"])

    def delivery_minutes(self, since: dt.datetime) -> list[DeliveryMinute]:
        """The per-minute rollup of the minutes starting at or after `since`, oldest first,
        summed over dispatchers; a minute in which no outcome was recorded is absent."""
        rows = self._execute("delivery_minutes", {"since": since})
        minutes = []
        for minute, group in itertools.groupby(rows, key=operator.itemgetter("minute")):
            dispatchers = list(group)
            counts = lateness.add_buckets(row["lateness"] for row in dispatchers)
            minutes.append(
                DeliveryMinute(
                    minute,
                    sum(row["delivered"] for row in dispatchers),
                    sum(row["failed"] for row in dispatchers),
                    sum(row["retried"] for row in dispatchers),
                    lateness.percentile(counts, 0.5),
                    lateness.percentile(counts, 0.99),
                    tuple(counts),
                )
            )
        return minutes

    def prune_delivery_minutes(self, before: dt.datetime) -> int:
        """Delete rollup rows of minutes before `before`; how many."""
        return int(self._execute("prune_delivery_minutes", {"before": before})[0]["pruned"])

    def failed_groups(self) -> list[FailedGroup]:
        """Failed jobs grouped by the kind of their last error, the largest group first."""
        return [FailedGroup(**row) for row in self._execute("failed_groups")]


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
