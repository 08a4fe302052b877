"""The senders in-process, against a real database and receiver: outcomes recorded in batches,
claims given back unsent on close, and the backoff's bounds."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import psycopg
import pytest

from scheduler import config
from scheduler.storage import db, deliveries
from scheduler.worker import senders
from tests import support
from tests.worker.conftest import insert_due


def states(db_url: str) -> dict[str, tuple[str, int]]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT id, state, attempts FROM jobs").fetchall()
    return {row[0]: (row[1], row[2]) for row in rows}


@pytest.fixture
def room() -> threading.Event:
    return threading.Event()


def make_senders(
    settings: config.Settings, database: db.Database, room: threading.Event, **kwargs: object
) -> senders.Senders:
    return senders.Senders(settings, database, room.set, lambda seconds: None, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def held_answers(receiver: support.Receiver) -> Iterator[threading.Event]:
    """The receiver holds every answer until the test sets the event."""
    release = threading.Event()
    receiver.respond = lambda request: (200, 0.0) if release.wait(30) else (500, 0.0)
    yield release
    release.set()


def test_outcomes_that_pile_up_are_recorded_in_one_transaction(
    settings: config.Settings,
    database: db.Database,
    receiver: support.Receiver,
    room: threading.Event,
    db_url: str,
) -> None:
    ids = insert_due(database, 10)
    sending = make_senders(settings, database, room)
    with psycopg.connect(db_url) as blocker:
        # Hold the recorder's first write: every other outcome queues up behind it meanwhile.
        blocker.execute("LOCK TABLE delivery_attempts IN EXCLUSIVE MODE")
        sending.submit(deliveries.claim_due_jobs(database, "test", 60, 10))
        support.wait_until(lambda: sending.attempted == 10, timeout=10)
    support.wait_until(lambda: sending.in_flight() == 0, timeout=10)
    assert sending.close(5)
    with psycopg.connect(db_url) as conn:
        writes = conn.execute("SELECT count(DISTINCT xmin::text) FROM jobs").fetchone()
    assert writes is not None and writes[0] <= 2
    assert set(states(db_url).values()) == {("delivered", 1)}
    assert sending.delivered == len(ids)


def test_attempts_that_ended_are_named_until_their_outcomes_are_recorded(
    settings: config.Settings,
    database: db.Database,
    receiver: support.Receiver,
    room: threading.Event,
    db_url: str,
) -> None:
    ids = insert_due(database, 3)
    sending = make_senders(settings, database, room)
    with psycopg.connect(db_url) as blocker:
        blocker.execute("LOCK TABLE delivery_attempts IN EXCLUSIVE MODE")
        sending.submit(deliveries.claim_due_jobs(database, "test", 60, 3))
        support.wait_until(lambda: sending.attempted == 3, timeout=10)
        # Answered, not yet recorded: the recorder waits for the lock.
        assert sorted(sending.ended_unrecorded("default")) == sorted(ids)
        assert sending.ended_unrecorded("billing") == []
    support.wait_until(lambda: sending.in_flight() == 0, timeout=10)
    assert sending.ended_unrecorded("default") == []
    assert sending.close(5)


def test_the_recorder_adds_each_batch_to_its_dispatcher_s_minute_with_its_kinds(
    settings: config.Settings,
    database: db.Database,
    receiver: support.Receiver,
    room: threading.Event,
    db_url: str,
) -> None:
    ids = insert_due(database, 6)
    failing = set(ids[:2])
    receiver.respond = lambda request: (503 if request.json["id"] in failing else 200, 0.0)
    sending = make_senders(settings, database, room, dispatcher_id="d-one")
    sending.submit(deliveries.claim_due_jobs(database, "d-one", 60, 6))
    support.wait_until(lambda: sending.attempted == 6 and sending.in_flight() == 0, timeout=10)
    assert sending.close(5)
    with psycopg.connect(db_url) as conn:
        rollup = conn.execute(
            "SELECT sum(delivered), sum(failed), sum(retried) FROM delivery_minutes"
            " WHERE dispatcher_id = 'd-one'"
        ).fetchone()
        kinds = conn.execute(
            "SELECT DISTINCT jobs.last_error_kind, delivery_attempts.error_kind FROM jobs"
            " JOIN delivery_attempts ON delivery_attempts.job_id = jobs.id"
            " WHERE jobs.id = ANY(%s)",
            (list(failing),),
        ).fetchall()
    # insert_due's jobs allow three attempts: the two 503s are retried, not failed.
    assert rollup == (4, 0, 2)
    assert kinds == [("http_503", "http_503")]


def test_close_gives_back_what_was_not_started_and_lets_the_rest_finish(
    make_settings: object,
    database: db.Database,
    receiver: support.Receiver,
    held_answers: threading.Event,
    room: threading.Event,
    db_url: str,
) -> None:
    settings = make_settings(SCHEDULER_DELIVERY_THREADS="1")  # type: ignore[operator]
    insert_due(database, 2)
    sending = make_senders(settings, database, room)
    claimed = deliveries.claim_due_jobs(database, "test", 60, sending.planner.room([], ()).shared)
    assert len(claimed) == 2
    sending.submit(claimed)
    receiver.wait_for(1)
    closing = threading.Thread(target=lambda: results.append(sending.close(10)))
    results: list[bool] = []
    closing.start()
    held_answers.set()
    closing.join(15)
    assert results == [True]
    assert sorted(states(db_url).values()) == [("delivered", 1), ("scheduled", 0)]
    assert len(receiver.received()) == 1


def test_a_dispatcher_that_may_not_send_gives_its_claims_back(
    settings: config.Settings,
    database: db.Database,
    receiver: support.Receiver,
    room: threading.Event,
    db_url: str,
) -> None:
    insert_due(database, 3)
    sending = make_senders(settings, database, room, may_send=lambda: False)
    sending.submit(deliveries.claim_due_jobs(database, "test", 60, 10))
    support.wait_until(lambda: sending.in_flight() == 0, timeout=10)
    assert sending.close(5)
    assert set(states(db_url).values()) == {("scheduled", 0)}
    assert receiver.received() == []


def due_at(db_url: str, job_id: str) -> float:
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT next_attempt_at FROM jobs WHERE id = %s", (job_id,)).fetchone()
    assert row is not None
    return float(row[0].timestamp())


def test_a_delivery_claimed_ahead_of_its_time_is_sent_at_its_time_not_before(
    settings: config.Settings,
    database: db.Database,
    receiver: support.Receiver,
    room: threading.Event,
    db_url: str,
) -> None:
    (job_id,) = insert_due(database, 1, due_in=0.5)
    sending = make_senders(settings, database, room)
    (claimed,) = deliveries.claim_due_jobs(database, "test", 60, 10, known=["default"], ahead=5)
    assert claimed.starts_in > 0
    sending.submit([claimed])
    try:
        (arrival,) = receiver.wait_for(1, timeout=10)
    finally:
        sending.close(5)
    # The receiver and the database share this machine's clock.
    assert arrival.arrived_at >= due_at(db_url, job_id)
    assert states(db_url)[job_id] == ("delivered", 1)


def test_close_gives_back_a_delivery_still_waiting_for_its_time(
    settings: config.Settings,
    database: db.Database,
    receiver: support.Receiver,
    room: threading.Event,
    db_url: str,
) -> None:
    insert_due(database, 1, due_in=30)
    sending = make_senders(settings, database, room)
    sending.submit(deliveries.claim_due_jobs(database, "test", 60, 10, known=["default"], ahead=60))
    assert sending.in_flight() == 1
    assert sending.close(10)
    assert set(states(db_url).values()) == {("scheduled", 0)}
    assert receiver.received() == []
