"""A job's own request in the dispatcher, in-process against a real database and receiver: its
path, method, headers and signature, its timeout as the attempt's deadline and its claim's
lease, its own backoff, and what it keeps of the answer for its callback."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from scheduler import callbacks, config, jobs, signing
from scheduler.storage import db, deliveries
from scheduler.storage import jobs as job_rows
from scheduler.worker import attempt, senders, watchdog
from tests import support

OPTIONS = jobs.HttpOptions(
    path="orders/42?source=cron",
    method="PUT",
    headers=(("X-Tenant", "acme"), ("User-Agent", "billing-scheduler")),
)


@pytest.fixture
def guard() -> Iterator[watchdog.Watchdog]:
    running = watchdog.Watchdog()
    yield running
    running.stop()


def delivery(**changes: object) -> jobs.Delivery:
    plain = jobs.Delivery(
        id=jobs.new_job_id(),
        cron_id=None,
        body='{"k": 1}',
        run_at=dt.datetime.now(dt.UTC),
        attempts=1,
        max_attempts=3,
        claim_token=1,
    )
    return dataclasses.replace(plain, **changes)  # type: ignore[arg-type]


def test_a_job_s_path_method_and_headers_go_as_given_signed_with_v2(
    settings: config.Settings, receiver: support.Receiver, guard: watchdog.Watchdog
) -> None:
    outcome = attempt.deliver(settings, delivery(http_options=OPTIONS), guard)
    assert outcome.ok, outcome.error
    (request,) = receiver.received()
    assert (request.method, request.path) == ("PUT", "/hook/orders/42?source=cron")
    assert request.headers["X-Tenant"] == "acme"
    assert request.headers["User-Agent"] == "billing-scheduler"
    header = request.headers[signing.HEADER]
    assert "v1=" not in header
    secrets = [support.SECRET]
    signing.verify(request.body, header, secrets, method="PUT", target=request.path)
    # Bound to the method and the target: neither may be replayed with another.
    with pytest.raises(signing.SignatureMismatch):
        signing.verify(request.body, header, secrets, method="POST", target=request.path)
    with pytest.raises(signing.SignatureMismatch):
        signing.verify(request.body, header, secrets, method="PUT", target="/hook")


def test_a_job_that_sets_neither_path_nor_method_keeps_the_v1_signature(
    settings: config.Settings, receiver: support.Receiver, guard: watchdog.Watchdog
) -> None:
    only_headers = jobs.HttpOptions(headers=(("X-Tenant", "acme"),))
    assert attempt.deliver(settings, delivery(http_options=only_headers), guard).ok
    (request,) = receiver.received()
    assert (request.method, request.path) == ("POST", "/hook")
    assert "v2=" not in request.headers[signing.HEADER]
    signing.verify(request.body, request.headers[signing.HEADER], [support.SECRET])


def test_the_job_s_timeout_is_its_attempt_s_deadline_both_ways(
    make_settings: object, receiver: support.Receiver, guard: watchdog.Watchdog
) -> None:
    short = make_settings(  # type: ignore[operator]
        SCHEDULER_CONNECT_TIMEOUT="0.5", SCHEDULER_READ_TIMEOUT="0.5"
    )
    receiver.respond = lambda request: (200, 1.5)
    patient = delivery(http_options=jobs.HttpOptions(timeout=5.0))
    assert attempt.deliver(short, patient, guard).ok
    assert attempt.deadline(short, patient) == 5.0
    cut = attempt.deliver(short, delivery(), guard)
    assert cut.error_kind == "timeout"
    hasty = delivery(http_options=jobs.HttpOptions(timeout=0.3))
    assert attempt.deliver(short, hasty, guard).error_kind == "timeout"


def test_a_timeout_beyond_this_dispatcher_s_maximum_is_held_to_it(
    make_settings: object,
) -> None:
    lowered = make_settings(SCHEDULER_MAX_TIMEOUT="10")  # type: ignore[operator]
    assert attempt.deadline(lowered, delivery(http_options=jobs.HttpOptions(timeout=60))) == 10


def test_only_a_job_with_a_callback_keeps_its_answer_and_reads_16_kib_of_it(
    settings: config.Settings, receiver: support.Receiver, guard: watchdog.Watchdog
) -> None:
    body = bytes(range(256)) * 100  # 25,600 bytes
    receiver.answer = (body, "application/octet-stream")
    receiver.headers_for = lambda request: {"X-Request-Id": "r-1"}
    told = attempt.deliver(settings, delivery(callback="default"), guard)
    assert told.answer is not None
    assert told.answer.status == 200
    assert told.answer.body == body[: callbacks.BODY_BYTES]
    assert told.answer.more
    assert ("X-Request-Id", "r-1") in told.answer.headers
    assert attempt.deliver(settings, delivery(), guard).answer is None


def test_a_lease_is_renewed_only_when_what_is_left_may_not_cover_the_attempt(
    settings: config.Settings,
) -> None:
    plain = delivery()
    granted = senders.granted_lease(settings, plain)
    assert senders.lease_needed(settings, plain, waited=settings.attempt_deadline) is None
    needed = senders.lease_needed(settings, plain, waited=granted)
    assert needed is not None and needed >= settings.attempt_deadline
    long = delivery(http_options=jobs.HttpOptions(timeout=280.0))
    assert senders.granted_lease(settings, long) == senders.lease_seconds(settings) + 280
    # Its own timeout counts in the lease its claim gave it: one usual attempt ahead is covered.
    assert senders.lease_needed(settings, long, waited=settings.attempt_deadline) is None
    # Behind another long attempt, it is not.
    assert senders.lease_needed(settings, long, waited=290.0) == 280 + 30


def lease_of(db_url: str, job_id: str) -> dt.datetime:
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT leased_until FROM jobs WHERE id = %s", (job_id,)).fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def insert_with(database: db.Database, options: jobs.HttpOptions | None, **more: object) -> str:
    job = jobs.NewJob(
        jobs.new_job_id(),
        json.dumps({"n": 1}),
        dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1),
        int(more.pop("max_attempts", 3)),  # type: ignore[call-overload]
        http_options=options,
        **more,  # type: ignore[arg-type]
    )
    return job_rows.insert_jobs(database, [job])[0]


def test_a_claim_holds_a_job_s_lease_as_long_as_its_timeout_more(
    database: db.Database, db_url: str
) -> None:
    plain = insert_with(database, None)
    patient = insert_with(database, jobs.HttpOptions(timeout=250.0))
    claimed = deliveries.claim_due_jobs(database, "test", 60, 10)
    assert {item.id for item in claimed} == {plain, patient}
    held = lease_of(db_url, patient) - lease_of(db_url, plain)
    assert abs(held.total_seconds() - 250) < 1


def test_renewing_a_lease_needs_the_claim_and_says_whether_a_cancel_came(
    database: db.Database, db_url: str
) -> None:
    job_id = insert_with(database, None)
    (claim,) = deliveries.claim_due_jobs(database, "test", 60, 1)
    before = lease_of(db_url, job_id)
    assert deliveries.renew_lease(database, job_id, claim.claim_token, 600) is False
    assert (lease_of(db_url, job_id) - before).total_seconds() > 500
    # Never shortened.
    assert deliveries.renew_lease(database, job_id, claim.claim_token, 1) is False
    assert (lease_of(db_url, job_id) - before).total_seconds() > 500
    assert deliveries.renew_lease(database, job_id, claim.claim_token + 1, 600) is None
    job_rows.cancel_job(database, job_id)
    assert deliveries.renew_lease(database, job_id, claim.claim_token, 600) is True


def test_a_delivery_that_waited_past_its_lease_is_renewed_or_not_sent(
    make_settings: object, database: db.Database, receiver: support.Receiver, db_url: str
) -> None:
    # A usual attempt of 0.1 s: a claim's lease of 30.2 s. Delivered after waiting 31 s for its
    # thread (as behind an attempt with a long timeout), a job would outlive its lease.
    brief = make_settings(  # type: ignore[operator]
        SCHEDULER_CONNECT_TIMEOUT="0.05", SCHEDULER_READ_TIMEOUT="0.05"
    )
    room = threading.Event()
    sending = senders.Senders(brief, database, room.set, lambda seconds: None)
    try:
        kept, cancelled, lost = (insert_with(database, None) for _ in range(3))
        claimed = deliveries.claim_due_jobs(database, "test", senders.lease_seconds(brief), 3)
        job_rows.cancel_job(database, cancelled)
        with psycopg.connect(db_url) as conn:
            # Rescued and claimed again elsewhere meanwhile.
            conn.execute(
                "UPDATE jobs SET claim_token = nextval('claim_tokens') WHERE id = %s", (lost,)
            )
        # As if their claim was answered 31 s ago: each asks for a longer lease first.
        sending.submit(claimed, answered_at=time.monotonic() - 31.0)
        support.wait_until(lambda: sending.in_flight() == 0, timeout=10)
    finally:
        assert sending.close(5)
    with psycopg.connect(db_url) as conn:
        found = dict(conn.execute("SELECT id, state FROM jobs").fetchall())
    assert found == {kept: "delivered", cancelled: "cancelled", lost: "delivering"}
    assert [request.json["id"] for request in receiver.received()] == [kept]
