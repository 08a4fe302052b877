"""Jobs as the API sees them: insert (with idempotency keys and debounce keys), read, list, edit,
cancel, run now, retry."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

from psycopg.types.json import Jsonb

from scheduler import errors, jobs
from scheduler.storage import db, flows, notices, queries

QUERIES = queries.load(__name__)
# Below this many rows (by the planner's estimate) jobs per state are counted exactly.
EXACT_COUNT_BELOW = 100_000


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


@dataclasses.dataclass(frozen=True)
class Cancelled:
    """What a cancel changed: jobs cancelled at once (they were waiting to be sent), and jobs
    being delivered that end cancelled, or delivered, when their attempt ends."""

    now: int
    requested: int

    @property
    def total(self) -> int:
        return self.now + self.requested


@dataclasses.dataclass(frozen=True)
class Scheduled:
    """A job a request asked for: its id, and whether it joined a waiting job with its debounce
    key (the id is then that job's) rather than being added."""

    id: str
    debounced: bool = False


@dataclasses.dataclass(frozen=True)
class FailedGroup:
    """Failed jobs whose last error was of one kind (jobs.ERROR_KINDS, `http_<status>`, or
    None: recorded before kinds were)."""

    kind: str | None
    count: int
    latest_finished_at: dt.datetime | None


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
        "flow_key": None if job.flow is None else job.flow.key,
        "http_options": _options_param(job.http_options),
        "callback": job.callback,
    }


def _options_param(options: jobs.HttpOptions | None) -> Jsonb | None:
    stored = None if options is None else options.to_json()
    return None if stored is None else Jsonb(stored)


def _options_text(options: jobs.HttpOptions | None) -> str | None:
    stored = None if options is None else options.to_json()
    return None if stored is None else json.dumps(stored)


def job_record(row: dict[str, Any]) -> jobs.JobRecord:
    """A job_columns row as a jobs.JobRecord."""
    return jobs.JobRecord(
        **{**row, "http_options": jobs.HttpOptions.from_json(row["http_options"])}
    )


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
        "flow_keys": [None if j.flow is None else j.flow.key for j in new_jobs],
        "http_options": [_options_text(j.http_options) for j in new_jobs],
        "callbacks": [j.callback for j in new_jobs],
    }


def insert_jobs(
    database: db.Database,
    new_jobs: Sequence[jobs.NewJob],
    key: Idempotency | None = None,
    announce_within: float | None = None,
) -> list[str]:
    """Insert jobs without a debounce key (insert_debounced_jobs takes those) in one
    transaction, or return what an earlier request with `key` made.

    Jobs due within `announce_within` seconds (every job when it is None) wake the
    dispatchers with a notification; they find later ones on their own periodic look.

    :raise errors.IdempotencyConflict: `key` was used for a different request.
    """
    now = dt.datetime.now(dt.UTC)
    announce = announce_within is None or any(j.due_within(announce_within, now) for j in new_jobs)
    single = QUERIES["insert_job"] if announce else QUERIES["insert_job_quietly"]
    keyed = [j for j in new_jobs if j.flow is not None]
    if key is None and len(new_jobs) == 1 and not keyed:
        # The hot path: one statement that commits by itself, and no rows to build.
        database.run(single, _job_params(new_jobs[0]))
        return [new_jobs[0].id]
    if key is None and not announce and not keyed:
        # Grouped single inserts due later than the dispatchers' next look: one statement
        # that commits by itself.
        database.run(QUERIES["insert_jobs_quietly"], _job_columns(new_jobs))
        return [j.id for j in new_jobs]
    with database.transaction() as cur:
        if key is not None:
            cur.execute(
                QUERIES["claim_idempotency_key"],
                {"key": key.key, "job_ids": [j.id for j in new_jobs], "request_hash": key.digest},
            )
            if cur.fetchone() is None:
                return _earlier_result(cur, key)
        if keyed:
            # In the same transaction as the jobs: their keys' limits hold from the commit.
            named = [(j.endpoint, j.flow) for j in keyed if j.flow is not None]
            flows.use_flows(cur, named, announce=True)
        if len(new_jobs) == 1:
            cur.execute(single, _job_params(new_jobs[0]))
        else:
            cur.execute(QUERIES["insert_jobs_quietly"], _job_columns(new_jobs))
            if announce:
                cur.execute(notices.QUERIES["notify_jobs_due"])
    return [j.id for j in new_jobs]


def _earlier_result(cur: Any, key: Idempotency) -> list[str]:
    return [scheduled.id for scheduled in _earlier_answer(cur, key)]


def _earlier_answer(cur: Any, key: Idempotency) -> list[Scheduled]:
    cur.execute(QUERIES["find_idempotency_key"], {"key": key.key})
    row = cur.fetchone()
    assert row is not None, "a key that conflicted exists once its owner committed"
    if row["request_hash"] != key.digest:
        raise errors.IdempotencyConflict(key.key)
    debounced = row["debounced"] or [False] * len(row["job_ids"])
    return [Scheduled(*answer) for answer in zip(row["job_ids"], debounced, strict=True)]


def _debounce_params(job: jobs.NewJob, announce_within: float | None) -> dict[str, Any]:
    assert job.debounce is not None and job.delay is not None
    return {
        **_job_params(job),
        "debounce_key": job.debounce.key,
        "max_wait": job.debounce.max_wait,
        "announce_within": announce_within,
    }


def insert_debounced_jobs(
    database: db.Database,
    new_jobs: Sequence[jobs.NewJob],
    key: Idempotency | None = None,
    announce_within: float | None = None,
) -> list[Scheduled]:
    """Insert jobs of which some are debounced (jobs.NewJob.debounce) in one transaction, or
    return what an earlier request with `key` made. A debounced job joins the job of its
    endpoint and key that waits and was never claimed, if there is one (debounce_job), in the
    order given, so that of two in one request the second joins the first. The dispatchers are
    woken as insert_jobs wakes them.

    :raise errors.IdempotencyConflict: `key` was used for a different request.
    """
    if key is None and len(new_jobs) == 1 and new_jobs[0].flow is None:
        # One statement that commits by itself, and announces the job as it goes.
        params = {**_debounce_params(new_jobs[0], announce_within), "announce": True}
        (row,) = database.rows(QUERIES["debounce_job"], params)
        return [Scheduled(row["id"], row["debounced"])]
    plain = [j for j in new_jobs if j.debounce is None]
    now = dt.datetime.now(dt.UTC)
    announce = announce_within is None or any(j.due_within(announce_within, now) for j in plain)
    answers = {j.id: Scheduled(j.id) for j in plain}
    with database.transaction() as cur:
        if key is not None:
            cur.execute(
                QUERIES["claim_idempotency_key"],
                {"key": key.key, "job_ids": [j.id for j in new_jobs], "request_hash": key.digest},
            )
            if cur.fetchone() is None:
                return _earlier_answer(cur, key)
        named = [(j.endpoint, j.flow) for j in new_jobs if j.flow is not None]
        if named:
            flows.use_flows(cur, named, announce=True)
        if plain:
            cur.execute(QUERIES["insert_jobs_quietly"], _job_columns(plain))
        # By endpoint and key, so that concurrent requests wait for each other's keys in one
        # order instead of deadlocking; the sort is stable, so one key's jobs keep theirs.
        debounced = sorted(
            (j for j in new_jobs if j.debounce is not None),
            key=lambda j: (j.endpoint, j.debounce.key if j.debounce else ""),
        )
        for job in debounced:
            params = {**_debounce_params(job, announce_within), "announce": False}
            cur.execute(QUERIES["debounce_job"], params)
            upserted = cur.fetchone()
            assert upserted is not None
            answers[job.id] = Scheduled(upserted["id"], upserted["debounced"])
            if announce_within is not None and upserted["due_in"] < announce_within:
                announce = True
        if announce:
            cur.execute(notices.QUERIES["notify_jobs_due"])
        scheduled = [answers[j.id] for j in new_jobs]
        if key is not None:
            cur.execute(
                QUERIES["answer_idempotency_key"],
                {
                    "key": key.key,
                    "job_ids": [s.id for s in scheduled],
                    "debounced": [s.debounced for s in scheduled],
                },
            )
    return scheduled


def get_job(database: db.Database, job_id: str) -> tuple[jobs.JobRecord, list[jobs.Attempt]]:
    """:raise errors.JobNotFound: no job has this id."""
    with database.transaction() as cur:
        return _read_job(cur, job_id)


def _read_job(cur: Any, job_id: str) -> tuple[jobs.JobRecord, list[jobs.Attempt]]:
    cur.execute(QUERIES["get_job"], {"id": job_id})
    row = cur.fetchone()
    if row is None:
        raise errors.JobNotFound(job_id)
    cur.execute(QUERIES["list_attempts"], {"job_id": job_id})
    attempts = [jobs.Attempt(**a) for a in cur.fetchall()]
    return job_record(row), attempts


def list_jobs(database: db.Database, filters: JobFilters) -> list[jobs.JobRecord]:
    rows = database.rows(QUERIES["list_jobs"], dataclasses.asdict(filters))
    return [job_record(row) for row in rows]


def cancel_job(database: db.Database, job_id: str) -> None:
    """Cancel a job: at once if it waits to be sent, when its attempt ends if it is being
    delivered (it may then end delivered); an unknown or finished job is left alone."""
    database.run(QUERIES["cancel_job"], {"id": job_id})


def cancel_jobs(database: db.Database, job_ids: Sequence[str]) -> Cancelled:
    """Cancel the jobs as cancel_job does; how many were cancelled now, and how many once their
    attempt ends."""
    (row,) = database.rows(QUERIES["cancel_jobs"], {"ids": list(job_ids)})
    return Cancelled(now=int(row["cancelled"]), requested=int(row["requested"]))


def edit_job(
    database: db.Database, job_id: str, edit: jobs.JobEdit, announce_within: float | None = None
) -> tuple[jobs.JobRecord, list[jobs.Attempt]]:
    """Change a job that waits to be sent (for its time, or for a retry) as `edit` says, in one
    transaction that holds its row (lock_job), so that a claim either took the job before (the
    edit is refused) or takes it as edited; the job as edited, read in that transaction. Its
    attempts so far stay counted. A changed flow key is made or refreshed as an insert's is; a
    key kept on another endpoint moves with the job (flows.carry_flow). The dispatchers are
    woken when it is due within `announce_within` seconds (always when None).

    :raise errors.JobNotFound: no job has this id.
    :raise errors.Conflict: it is not waiting to be sent, or is a cron's run or a notification.
    :raise errors.AttemptsSpent: `edit.max_attempts` is not above the attempts it has made.
    """
    with database.transaction() as cur:
        cur.execute(QUERIES["lock_job"], {"id": job_id})
        row = cur.fetchone()
        if row is None:
            raise errors.JobNotFound(job_id)
        _check_editable(job_id, row)
        if edit.max_attempts is not None and edit.max_attempts <= row["attempts"]:
            raise errors.AttemptsSpent(job_id, row["attempts"])
        endpoint = edit.endpoint or row["endpoint"]
        if edit.set_flow and edit.flow is not None:
            flows.use_flows(cur, [(endpoint, edit.flow)], announce=True)
        elif not edit.set_flow and row["flow_key"] is not None and endpoint != row["endpoint"]:
            flows.carry_flow(cur, row["flow_key"], row["endpoint"], endpoint)
        cur.execute(
            QUERIES["edit_job"],
            {
                "id": job_id,
                "body": None if edit.body is None else Jsonb(edit.body, dumps=_as_is),
                "run_at": edit.run_at,
                "delay": edit.delay,
                "max_attempts": edit.max_attempts,
                "endpoint": edit.endpoint,
                "set_flow": edit.set_flow,
                "flow_key": None if edit.flow is None else edit.flow.key,
                "set_http_options": bool(edit.http_changes),
                "http_options": _options_param(_merged(row["http_options"], edit.http_changes)),
                "set_callback": edit.set_callback,
                "callback": edit.callback,
                "announce_within": announce_within,
            },
        )
        return _read_job(cur, job_id)


def _merged(stored: dict[str, Any] | None, changes: dict[str, Any]) -> jobs.HttpOptions | None:
    """A job's stored HTTP options with an edit's changes: each option named is replaced, or
    removed when None."""
    merged = {**(stored or {}), **changes}
    return jobs.HttpOptions.from_json({k: v for k, v in merged.items() if v is not None})


def _check_editable(job_id: str, row: dict[str, Any]) -> None:
    if row["cron_id"] is not None:
        raise errors.Conflict(
            f"job {job_id} is a run of cron {row['cron_id']!r}: change the cron instead"
        )
    if row["event"] is not None:
        raise errors.Conflict(f"job {job_id} is a {row['event']} notification: it has no edit")
    if row["state"] != "scheduled":
        raise errors.Conflict(f"job {job_id} is {row['state']}: only a scheduled job can be edited")


def run_job_now(database: db.Database, job_id: str) -> None:
    """:raise errors.JobNotFound, errors.Conflict: unknown, or not waiting to be sent."""
    if not database.rows(QUERIES["run_job_now"], {"id": job_id}):
        _explain(database, job_id, "only a scheduled job can be run now")


def retry_job(database: db.Database, job_id: str) -> None:
    """:raise errors.JobNotFound, errors.Conflict: unknown, or not failed."""
    if not database.rows(QUERIES["retry_failed_job"], {"id": job_id}):
        _explain(database, job_id, "only a failed job can be retried")


def _explain(database: db.Database, job_id: str, rule: str) -> None:
    rows = database.rows(QUERIES["job_state"], {"id": job_id})
    if not rows:
        raise errors.JobNotFound(job_id)
    raise errors.Conflict(f"job {job_id} is {rows[0]['state']}: {rule}")


def count_failed_matching(database: db.Database, filters: BulkFilters, cap: int) -> int:
    """Failed jobs a bulk retry with `filters` would take, counted up to `cap`."""
    params = {**dataclasses.asdict(filters), "cap": cap}
    return int(database.rows(QUERIES["count_failed_matching"], params)[0]["failed"])


def retry_failed_batch(database: db.Database, filters: BulkFilters, limit: int) -> int:
    """Retry up to `limit` of the failed jobs matching `filters`, newest first, in one
    transaction; returns how many were retried (0: none left)."""
    params = {**dataclasses.asdict(filters), "limit": limit}
    return int(database.rows(QUERIES["retry_failed_batch"], params)[0]["retried"])


def job_state_counts(database: db.Database) -> StateCounts:
    """Jobs per state: exact on a small table, else from the planner's statistics, which
    cost nothing but are only as fresh as the last ANALYZE."""
    (row,) = database.rows(QUERIES["job_state_estimates"])
    total = int(row["total"])
    if total < EXACT_COUNT_BELOW or not row["states"]:
        counted = database.rows(QUERIES["count_jobs_by_state"])
        return StateCounts({r["state"]: int(r["jobs"]) for r in counted}, estimated=False)
    shares = zip(row["states"], row["frequencies"], strict=True)
    return StateCounts({state: round(total * share) for state, share in shares}, True)


def count_due(database: db.Database, cap: int | None = None) -> int:
    """Jobs due but not sent, counted up to `cap` (all of them when None)."""
    return int(database.rows(QUERIES["count_due"], {"cap": cap})[0]["due"])


def count_delivering(database: db.Database, cap: int) -> int:
    """Jobs being delivered, counted up to `cap`."""
    return int(database.rows(QUERIES["count_delivering"], {"cap": cap})[0]["delivering"])


def failed_groups(database: db.Database) -> list[FailedGroup]:
    """Failed jobs grouped by the kind of their last error, the largest group first."""
    return [FailedGroup(**row) for row in database.rows(QUERIES["failed_groups"])]
