"""What became of claimed deliveries: attempts, closed or retried jobs, and the per-minute rollup.

A batch of outcomes is written in one transaction, the rollup row included, so the rollup counts
exactly the outcomes that were recorded. An outcome whose claim token is no longer the job's
(cancelled, or re-claimed after its dispatcher was declared dead) changes no job.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
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
    # A job with a callback that ends: the callback's id, and its `response` (callbacks.py).
    callback_id: str | None = None
    response: dict[str, Any] | None = None


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


def json_rows(rows: list[dict[str, Any]]) -> str:
    """Rows as one JSON parameter for json_to_recordset. psycopg builds an array parameter in
    Python, element by element, and sixteen of them per batch cost the recorder more than the
    rest of its work; json.dumps is one call in C."""
    return json.dumps(rows, ensure_ascii=False, default=_json_value)


def _json_value(value: object) -> str:
    # The only other type in the rows: an attempt's start, which timestamptz reads back exactly.
    assert isinstance(value, dt.datetime)
    return value.isoformat()


def _attempt_rows(settled: Sequence[Settlement]) -> str:
    """settle_outcomes' attempt rows, one per attempt."""
    return json_rows(
        [
            {
                "job_id": r.job_id,
                "attempt": r.attempt,
                "started_at": r.started_at,
                "duration_ms": r.duration_ms,
                "status_code": r.status_code,
                "error": r.error,
                "response_excerpt": r.response_excerpt,
                "error_kind": r.error_kind,
            }
            for r in (s.record for s in settled)
        ]
    )


def _finish_rows(finals: Sequence[Settlement]) -> str:
    """settle_outcomes' rows of deliveries closed, one each; a notification id for each that failed
    (used only if failure notifications are on)."""
    return json_rows(
        [
            {
                "job_id": s.record.job_id,
                "claim_token": s.claim_token,
                "state": s.state,
                "attempted": s.attempted,
                "status_code": s.record.status_code,
                "error": s.record.error,
                "error_kind": s.record.error_kind,
                "notice_id": jobs.new_job_id() if s.state == "failed" else None,
                "callback_id": s.callback_id,
                "response": s.response,
            }
            for s in finals
        ]
    )


def _retry_params(settlement: Settlement) -> dict[str, Any]:
    return {
        "job_id": settlement.record.job_id,
        "claim_token": settlement.claim_token,
        "status_code": settlement.record.status_code,
        "error": settlement.record.error,
        "error_kind": settlement.record.error_kind,
        "retry_in": settlement.retry_in,
    }


def _minute_params(dispatcher_id: str | None, settled: Sequence[Settlement]) -> dict[str, Any]:
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
    callback_attempts: int = 1,
) -> None:
    """Record attempts and what becomes of their jobs, and give back claims never sent
    (job id, claim token), all in one transaction. With `dispatcher_id`, the outcomes are also
    added to its row of the per-minute rollup (delivery_minutes). Callbacks made try
    `callback_attempts` times."""
    retries = [s for s in settled if s.state == "scheduled"]
    # What needs statements of its own, and so a transaction: retries and give-backs.
    others: list[tuple[str, list[dict[str, Any]]]] = []
    if retries:
        others.append((QUERIES["schedule_retry"], [_retry_params(s) for s in retries]))
    if unsent:
        given_back = [{"job_id": job_id, "claim_token": token} for job_id, token in unsent]
        others.append((QUERIES["give_back_delivery"], given_back))
    params = _settle_params(settled, notices, dispatcher_id, callback_attempts) if settled else None
    if not others:
        if params is not None:
            # One statement commits by itself: no BEGIN and COMMIT round trips.
            database.run(QUERIES["settle_outcomes"], params)
        return
    with database.transaction() as cur:
        if params is not None:
            cur.execute(QUERIES["settle_outcomes"], params)
        for query, rows in others:
            cur.executemany(query, rows)


def _settle_params(
    settled: Sequence[Settlement],
    notices: FailureNotices | None,
    dispatcher_id: str | None,
    callback_attempts: int,
) -> dict[str, Any]:
    return {
        "attempts": _attempt_rows([s for s in settled if s.attempted]),
        "outcomes": _finish_rows([s for s in settled if s.state != "scheduled"]),
        "notice_endpoint": notices.endpoint if notices else None,
        "notice_attempts": notices.max_attempts if notices else 1,
        "callback_attempts": callback_attempts,
        **_minute_params(dispatcher_id, settled),
    }


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
