"""Supervised threads, in-process on a real database: an exception injected into each is logged with
its stack, then restarted or the process's exit taken, and shown in the metric, the heartbeat row
(GET /dispatchers) and /readyz."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import prometheus_client
import pytest
import requests
from flask.testing import FlaskClient

from scheduler import config, tuning
from scheduler.storage import db
from scheduler.storage import jobs as job_rows
from scheduler.web import app as app_module
from scheduler.worker import dispatcher, main, metrics, supervisor
from tests import support
from tests.worker.conftest import FakeClock, insert_due

AUTH = {"Scheduler-Secret": support.SECRET}
RESTARTED = [name for name, policy in supervisor.POLICIES.items() if policy == supervisor.RESTART]
ENDED = [name for name, policy in supervisor.POLICIES.items() if policy == supervisor.EXIT]


class Injected(RuntimeError):
    """The exception tests inject."""


class Faults:
    """A fault hook: raises once in each thread named, and remembers every name it ran for."""

    def __init__(self, *names: str) -> None:
        self.pending = set(names)
        self.seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, name: str) -> None:
        with self._lock:
            self.seen.add(name)
            if name in self.pending:
                self.pending.discard(name)
                raise Injected(name)


def failing_once(call: Callable[..., Any]) -> Callable[..., Any]:
    """`call`, except that its first call raises Injected."""
    calls = []

    def wrapped(*args: Any) -> Any:
        calls.append(args)
        if len(calls) == 1:
            raise Injected("injected")
        return call(*args)

    return wrapped


def sample(metric: str, name: str) -> float:
    value = prometheus_client.REGISTRY.get_sample_value(metric, {"thread": name})
    return value or 0.0


def threads_down_listed(client: FlaskClient, dispatcher_id: str) -> dict[str, str] | None:
    """The dispatcher's `threads_down` as GET /dispatchers lists it; None when not listed."""
    answer = client.get("/dispatchers", headers=AUTH)
    assert answer.status_code == 200
    for row in answer.get_json()["dispatchers"]:
        if row["id"] == dispatcher_id:
            found: dict[str, str] = row["threads_down"]
            return found
    return None


def failures_logged(caplog: pytest.LogCaptureFixture) -> list[tuple[str, type[BaseException]]]:
    """The thread and exception class of each failure logged with its stack."""
    return [
        (record.thread_name, record.exc_info[0])
        for record in caplog.records
        if getattr(record, "action", None) == "thread_failed" and record.exc_info
    ]


@pytest.fixture
def settings(make_settings: Callable[..., config.Settings]) -> config.Settings:
    return make_settings(SCHEDULER_LEADER_TIMEOUT="5", SCHEDULER_METRICS_PORT="0")


@pytest.fixture
def client(settings: config.Settings) -> Iterator[FlaskClient]:
    flask_app = app_module.create_app(settings)
    flask_app.extensions["scheduler.database"].pool.wait()
    yield flask_app.test_client()
    flask_app.extensions["scheduler.database"].pool.close()


@pytest.fixture
def caplog(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="scheduler")
    return caplog


def test_every_long_lived_thread_runs_under_the_supervisor(
    settings: config.Settings, database: db.Database, receiver: support.Receiver
) -> None:
    faults = Faults()
    watching = supervisor.Supervisor(fault=faults)
    server = metrics.serve(support.free_port(), (support.SECRET,), True, watching.start)
    assert server is not None
    running = dispatcher.Dispatcher(settings, server.server_port, watching)
    running.start()
    try:
        # A lone dispatcher leads: its timers and maintenance run too. A delivery runs a task.
        assert running.leadership.term is not None
        insert_due(database, 1)
        receiver.wait_for(1, timeout=10)
        support.wait_until(lambda: faults.seen == set(supervisor.POLICIES), timeout=10)
    finally:
        assert running.stop(5)
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("name", RESTARTED)
def test_a_thread_that_fails_is_logged_shown_and_restarted(
    name: str,
    settings: config.Settings,
    database: db.Database,
    receiver: support.Receiver,
    client: FlaskClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    watching = supervisor.Supervisor(clock, Faults(name))
    restarts = sample("scheduler_thread_restarts_total", name)
    port = support.free_port()
    server = metrics.serve(port, (support.SECRET,), True, watching.start)
    assert server is not None
    running = dispatcher.Dispatcher(settings, server.server_port, watching)
    running.start()
    try:
        # It waits for its restart until the clock moves: what shows meanwhile is stable.
        support.wait_until(lambda: watching.threads_down() == {name: "restarting"}, timeout=10)
        assert failures_logged(caplog) == [(name, Injected)]
        assert sample("scheduler_thread_restarts_total", name) == restarts + 1
        assert sample("scheduler_thread_down", name) == 1
        support.wait_until(
            lambda: threads_down_listed(client, running.id) == {name: "restarting"}, timeout=10
        )
        answer = client.get("/readyz")
        assert answer.status_code == 503
        assert (
            f"dispatcher {running.id}: {name} restarting" in answer.get_json()["error"]["message"]
        )

        clock.advance(tuning.THREAD_RESTART_FIRST_SECONDS)
        watching.poke()
        support.wait_until(lambda: watching.threads_down() == {}, timeout=10)
        support.wait_until(lambda: threads_down_listed(client, running.id) == {}, timeout=10)
        support.wait_until(lambda: client.get("/readyz").status_code == 200, timeout=10)
        scraped = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert f'scheduler_thread_down{{thread="{name}"}} 0.0' in scraped
        assert f'scheduler_thread_restarts_total{{thread="{name}"}}' in scraped
        # Running again: a job due now is delivered.
        (job_id,) = insert_due(database, 1)
        (arrival,) = receiver.wait_for(1, timeout=10)
        assert arrival.json["id"] == job_id
    finally:
        assert running.stop(5)
        server.shutdown()
        server.server_close()
    assert failures_logged(caplog) == [(name, Injected)], "failed once, restarted once"


@pytest.mark.parametrize("name", ENDED)
def test_a_thread_that_cannot_be_restarted_ends_the_process(
    name: str,
    make_settings: Callable[..., config.Settings],
    database: db.Database,
    receiver: support.Receiver,
    client: FlaskClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings(
        SCHEDULER_LEADER_TIMEOUT="5", SCHEDULER_METRICS_PORT="0", SCHEDULER_SHUTDOWN_GRACE="0"
    )
    (job_id,) = insert_due(database, 1)
    watching = supervisor.Supervisor(fault=Faults(name))
    # The whole of the entry point but its signals: it returns once the thread failed.
    assert main.run(settings, threading.Event(), watching) == main.THREAD_FAILED
    assert (name, Injected) in failures_logged(caplog)
    assert watching.threads_down() == {name: "dead"}
    assert sample("scheduler_thread_down", name) == 1
    # Its row stays, with the thread dead, until it is stale.
    (row,) = client.get("/dispatchers", headers=AUTH).get_json()["dispatchers"]
    assert row["threads_down"] == {name: "dead"}
    answer = client.get("/readyz")
    assert answer.status_code == 503
    assert f"dispatcher {row['id']}: {name} dead" in answer.get_json()["error"]["message"]

    # The Procfile's manager starts a fresh dispatcher: nothing was lost.
    fresh = dispatcher.Dispatcher(settings)
    fresh.start()
    try:
        support.wait_until(
            lambda: job_rows.get_job(database, job_id)[0].state == "delivered", timeout=30
        )
    finally:
        assert fresh.stop(5)
    assert job_id in {arrival.json["id"] for arrival in receiver.received()}


def test_a_leader_whose_campaign_fails_steps_down_so_that_another_leads(
    settings: config.Settings, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    first = dispatcher.Dispatcher(settings, supervising=supervisor.Supervisor(clock))
    first.start()
    second = dispatcher.Dispatcher(settings)
    second.start()
    try:
        assert first.leadership.term is not None and second.leadership.term is None
        lease = first.leadership._lease
        # Any error but StoreUnavailable, at its next probe.
        lease.renew = failing_once(lease.renew)  # type: ignore[method-assign]
        support.wait_until(lambda: second.leadership.term is not None, timeout=10)
        assert first.leadership.term is None
        support.wait_until(
            lambda: first.supervisor.threads_down() == {"campaign": "restarting"}, timeout=10
        )
        assert failures_logged(caplog) == [("campaign", Injected)]

        clock.advance(tuning.THREAD_RESTART_FIRST_SECONDS)
        first.supervisor.poke()
        support.wait_until(lambda: first.supervisor.threads_down() == {}, timeout=10)
        assert not first.leadership.campaign_once(), "the lease is the other's now"
    finally:
        assert first.stop(5)
        assert second.stop(5)


def test_a_heartbeat_that_fails_unexpectedly_beats_again(
    settings: config.Settings, client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    running = dispatcher.Dispatcher(settings, supervising=supervisor.Supervisor(clock))
    running.start()
    try:
        # Any error but StoreUnavailable, at its next beat; the report of it beats again.
        running.membership.beat = failing_once(running.membership.beat)  # type: ignore[method-assign]
        support.wait_until(
            lambda: threads_down_listed(client, running.id) == {"heartbeat": "restarting"},
            timeout=10,
        )
        assert failures_logged(caplog) == [("heartbeat", Injected)]
        clock.advance(tuning.THREAD_RESTART_FIRST_SECONDS)
        running.supervisor.poke()
        support.wait_until(lambda: threads_down_listed(client, running.id) == {}, timeout=10)
        assert running.membership.is_live()
    finally:
        assert running.stop(5)


def test_an_error_inside_a_look_restarts_the_claim_loop_which_then_delivers(
    settings: config.Settings,
    database: db.Database,
    receiver: support.Receiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    running = dispatcher.Dispatcher(settings, supervising=supervisor.Supervisor(clock))
    restarts = sample("scheduler_thread_restarts_total", "claim")
    running.claims.claim_and_send = failing_once(running.claims.claim_and_send)  # type: ignore[method-assign]
    running.start()
    try:
        support.wait_until(
            lambda: running.supervisor.threads_down() == {"claim": "restarting"}, timeout=10
        )
        assert failures_logged(caplog) == [("claim", Injected)]
        assert sample("scheduler_thread_restarts_total", "claim") == restarts + 1
        clock.advance(tuning.THREAD_RESTART_FIRST_SECONDS)
        running.supervisor.poke()
        (job_id,) = insert_due(database, 1)
        (arrival,) = receiver.wait_for(1, timeout=10)
        assert arrival.json["id"] == job_id
        assert running.supervisor.threads_down() == {}
    finally:
        assert running.stop(5)
