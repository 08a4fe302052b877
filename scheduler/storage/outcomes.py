"""What became of claimed deliveries: attempts, closed or retried jobs, and the per-minute rollup.

A batch of outcomes is written in one transaction, the rollup row included, so the rollup counts
exactly the outcomes that were recorded. An outcome whose claim token is no longer the job's
(cancelled, or re-claimed after its dispatcher was declared dead) changes no job.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import operator
from collections.abc import Sequence
from typing import Any

from scheduler import jobs, lateness
from scheduler.storage import db, queries

QUERIES = queries.load(__name__)


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


def _retry_params(settlement: Settlement) -> dict[str, Any]:
    return {
        "job_id": settlement.record.job_id,
        "claim_token": settlement.claim_token,
        "status_code": settlement.record.status_code,
        "error": settlement.record.error,
        "error_kind": settlement.record.error_kind,
        "retry_in": settlement.retry_in,
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


def settle_deliveries(
    database: db.Database,
    settled: Sequence[Settlement],
    unsent: Sequence[tuple[str, int]] = (),
    notices: FailureNotices | None = None,
    dispatcher_id: str | None = None,
) -> None:
    """Record attempts and what becomes of their jobs, and give back claims never sent
    (job id, claim token), all in one transaction. With `dispatcher_id`, the outcomes are also
    added to its row of the per-minute rollup (delivery_minutes)."""
    finals = [s for s in settled if s.state != "scheduled"]
    retries = [s for s in settled if s.state == "scheduled"]
    attempted = [s for s in settled if s.attempted]
    notice = {
        "notice_endpoint": notices.endpoint if notices else None,
        "notice_attempts": notices.max_attempts if notices else 1,
    }
    with database.transaction() as cur:
        if attempted:
            cur.execute(QUERIES["record_attempts"], _attempt_columns(attempted))
        if finals:
            cur.execute(QUERIES["finish_deliveries"], {**_finish_columns(finals), **notice})
        if retries:
            cur.executemany(QUERIES["schedule_retry"], [_retry_params(s) for s in retries])
        if unsent:
            cur.executemany(
                QUERIES["give_back_delivery"],
                [{"job_id": job_id, "claim_token": token} for job_id, token in unsent],
            )
        if settled and dispatcher_id is not None:
            cur.execute(QUERIES["add_delivery_minute"], _minute_params(dispatcher_id, settled))


def delivery_minutes(database: db.Database, since: dt.datetime) -> list[DeliveryMinute]:
    """The per-minute rollup of the minutes starting at or after `since`, oldest first,
    summed over dispatchers; a minute in which no outcome was recorded is absent."""
    rows = database.rows(QUERIES["delivery_minutes"], {"since": since})
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
