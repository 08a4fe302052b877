"""Whole dispatchers in-process on one database: they share the work without sharing a row, and
due-ness is the database's to judge whatever this host's clock says."""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable

import pytest

from scheduler import config
from scheduler.storage import db
from scheduler.storage import jobs as job_rows
from scheduler.worker import claims, dispatcher, senders
from tests import support
from tests.worker.conftest import FakeClock, insert_due


def test_two_dispatchers_in_one_process_claim_disjoint_rows(
    make_settings: Callable[..., config.Settings],
    database: db.Database,
    receiver: support.Receiver,
) -> None:
    receiver.respond = lambda request: (200, 0.002)
    settings = make_settings(SCHEDULER_POLL_INTERVAL="0.2", SCHEDULER_DELIVERY_THREADS="4")
    running = [dispatcher.Dispatcher(settings) for _ in range(2)]
    for each in running:
        each.start()
    try:
        assert [each.leadership.term is not None for each in running] == [True, False]
        ids = insert_due(database, 400, due_in=0.5)
        received = receiver.wait_for(400, timeout=30)
    finally:
        finished = [each.stop(5) for each in running]
    assert finished == [True, True]
    counts = collections.Counter(r.json["id"] for r in received)
    assert set(counts) == set(ids)
    assert max(counts.values()) == 1
    delivered = [each.senders.delivered for each in running]
    assert sum(delivered) == 400 and min(delivered) > 0, delivered


def test_a_claim_loop_sure_a_job_is_overdue_claims_it_only_once_the_database_says_so(
    settings: config.Settings, database: db.Database, receiver: support.Receiver
) -> None:
    clock = FakeClock()
    sending = senders.Senders(settings, database, lambda: None, lambda seconds: None)
    loop = claims.ClaimLoop(settings, database, sending, "test", lambda: True, clock=clock)
    (job_id,) = insert_due(database, 1, due_in=1.5)
    # When it is due, as stored (insert_due read the database's clock before inserting).
    due = job_rows.get_job(database, job_id)[0].next_attempt_at.timestamp()
    stopping = threading.Event()
    # As if this host's clock were an hour ahead: it believes the job long overdue.
    loop.job_due_in(-3600)
    assert loop.claim_and_send(stopping)
    assert sending.in_flight() == 0, "claimed before its time"
    clock.advance(3600)
    thread = threading.Thread(target=loop.run, args=(stopping,))
    thread.start()
    try:
        (arrival,) = receiver.wait_for(1, timeout=10)
    finally:
        stopping.set()
        loop.wake()
        thread.join(5)
        sending.close(5)
    assert arrival.json["id"] == job_id
    # The receiver and the database share this machine's clock.
    assert arrival.arrived_at >= due


def test_a_dispatcher_with_no_free_slot_does_not_query(
    make_settings: Callable[..., config.Settings],
    database: db.Database,
    receiver: support.Receiver,
) -> None:
    release = threading.Event()
    receiver.respond = lambda request: (200, 0.0) if release.wait(30) else (500, 0.0)
    settings = make_settings(SCHEDULER_DELIVERY_THREADS="1")
    sending = senders.Senders(settings, database, lambda: None, lambda seconds: None)
    loop = claims.ClaimLoop(settings, database, sending, "test", lambda: True)
    insert_due(database, 5)
    stopping = threading.Event()
    try:
        assert not loop.claim_and_send(stopping), "two slots, five jobs: not drained"
        assert sending.in_flight() == 2
        claimed = loop.claims
        for _ in range(3):
            loop.wake()
            assert not loop.claim_and_send(stopping)
        assert loop.claims == claimed
    finally:
        release.set()
        sending.close(10)


def synchronous_commit(database: db.Database) -> tuple[str, str]:
    """The setting on the pool's connections, and where it came from."""
    with database.pool.connection() as conn:
        row = conn.execute(
            "SELECT setting, source FROM pg_settings WHERE name = 'synchronous_commit'"
        ).fetchone()
    assert row is not None
    return str(row[0]), str(row[1])


def test_only_claims_and_outcomes_commit_without_waiting_for_the_disk(
    settings: config.Settings,
) -> None:
    running = dispatcher.Dispatcher(settings)
    try:
        assert running.claims.database is running.delivery_database
        assert running.senders.database is running.delivery_database
        assert synchronous_commit(running.delivery_database) == ("off", "client")
        # Ticks, leadership, heartbeats and maintenance keep the server's own setting (which
        # the test suite's server turns off for speed; a real one has it on).
        assert running.routes.database is running.database
        assert synchronous_commit(running.database)[1] != "client"
    finally:
        running.senders.close(1)
        running.pool.close()
        running.delivery_pool.close()


@pytest.mark.parametrize(
    "limit",
    [{"SCHEDULER_RATE_LIMIT": "50"}, {"SCHEDULER_MAX_IN_FLIGHT": "2"}],
    ids=["rate", "in-flight"],
)
def test_a_limited_endpoint_claims_again_as_its_deliveries_are_recorded_not_at_the_poll(
    make_settings: Callable[..., config.Settings],
    database: db.Database,
    receiver: support.Receiver,
    limit: dict[str, str],
) -> None:
    # An hour's poll interval: only freed slots, tokens and notices can make the loop look again.
    receiver.respond = lambda request: (200, 0.01)
    settings = make_settings(
        SCHEDULER_POLL_INTERVAL="3600", SCHEDULER_DELIVERY_THREADS="4", **limit
    )
    running = dispatcher.Dispatcher(settings)
    running.start()
    try:
        ids = insert_due(database, 30)
        running.claims.wake()  # as the batch's notice would
        received = receiver.wait_for(30, timeout=30)
    finally:
        assert running.stop(5)
    assert sorted(r.json["id"] for r in received) == sorted(ids)
