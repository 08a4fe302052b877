"""The callback a settled job makes, as PostgreSQL writes it: its message has exactly the size
callbacks.py counts (so the limit it keeps is kept), and only jobs that end with a callback,
never notifications or callbacks themselves, make one."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler import callbacks, jobs
from scheduler.storage import cluster, db, deliveries, outcomes
from scheduler.storage import jobs as job_rows


def claim_one(database: db.Database, **more: Any) -> jobs.Delivery:
    due = cluster.database_now(database) - dt.timedelta(seconds=1)
    job = jobs.NewJob(jobs.new_job_id(), "{}", due, 3, **more)
    job_rows.insert_jobs(database, [job])
    (claimed,) = deliveries.claim_due_jobs(database, "claimer", 60, 1)
    return claimed


def settle(
    database: db.Database,
    item: jobs.Delivery,
    state: str,
    error: str | None,
    response: dict[str, Any] | None,
    status: int | None = 500,
) -> str:
    record = outcomes.AttemptRecord(
        job_id=item.id,
        attempt=item.attempts,
        started_at=dt.datetime.now(dt.UTC),
        duration_ms=3,
        status_code=status,
        error=error,
        response_excerpt=None,
        error_kind=None if error is None else "http_500",
    )
    callback_id = jobs.new_job_id()
    settled = outcomes.Settlement(
        record, item.claim_token, state, callback_id=callback_id, response=response
    )
    outcomes.settle_deliveries(database, [settled], callback_attempts=4)
    return callback_id


def stored(db_url: str, job_id: str) -> tuple[Any, ...] | None:
    with psycopg.connect(db_url) as conn:
        return conn.execute(
            "SELECT octet_length(body::text), body, endpoint, event, max_attempts, traceparent"
            " FROM jobs WHERE id = %s",
            (job_id,),
        ).fetchone()


texts = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=200)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(error=st.none() | texts, body=st.binary(max_size=3000), header=texts)
def test_the_message_is_exactly_the_size_callbacks_counts(
    database: db.Database, db_url: str, error: str | None, body: bytes, header: str
) -> None:
    item = claim_one(database, callback="default")
    finished = callbacks.Finished(
        item.id,
        None,
        "default",
        "failed",
        item.attempts,
        500,
        error,
        None if error is None else "http_500",
    )
    answer = callbacks.Answer(500, (("X-Echo", header),), body)
    response = callbacks.response_of(answer, finished, 1 << 20)
    callback_id = settle(database, item, "failed", error, response)
    found = stored(db_url, callback_id)
    assert found is not None
    size, message, *_ = found
    assert size == callbacks.message_size(finished, response)
    assert message["response"] == response
    assert message["job"]["id"] == item.id


def test_a_callback_goes_to_its_endpoint_with_the_job_s_trace_and_fields(
    database: db.Database, db_url: str
) -> None:
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    item = claim_one(database, callback="default", traceparent=traceparent)
    response = {"status": 200, "headers": {}, "body": "ok", "truncated": False}
    callback_id = settle(database, item, "delivered", None, response, status=200)
    found = stored(db_url, callback_id)
    assert found is not None
    _, message, endpoint, event, attempts, trace = found
    assert (endpoint, event, attempts, trace) == ("default", "job.delivered", 4, traceparent)
    assert message["event"] == "job.delivered"
    assert set(message["job"]) == {
        "id", "cron_id", "endpoint", "state", "attempts", "last_status", "last_error",
        "last_error_kind", "timestamp", "created_at", "finished_at",
    }  # fmt: skip
    assert message["job"]["state"] == "delivered"
    assert message["job"]["last_status"] == 200
    assert "body" not in message["job"] and "history" not in message["job"]
    assert message["response"] == response


def test_a_callback_or_a_cancelled_job_makes_no_callback(
    database: db.Database, db_url: str
) -> None:
    item = claim_one(database, callback="default")
    first = settle(database, item, "delivered", None, None, status=200)
    # The callback itself is claimed and fails: it has an event, so it makes nothing more.
    (told,) = deliveries.claim_due_jobs(database, "claimer", 60, 1)
    assert told.id == first and told.event == "job.delivered"
    settle(database, told, "failed", "HTTP 500", None)
    cancelled = claim_one(database, callback="default")
    job_rows.cancel_job(database, cancelled.id)
    settle(database, cancelled, "failed", "HTTP 500", None)
    with psycopg.connect(db_url) as conn:
        (events,) = conn.execute(
            "SELECT count(*) FROM jobs WHERE event IS NOT NULL"
        ).fetchone() or (0,)
        (state,) = conn.execute(
            "SELECT state FROM jobs WHERE id = %s", (cancelled.id,)
        ).fetchone() or ("",)
    assert events == 1
    assert state == "cancelled"
