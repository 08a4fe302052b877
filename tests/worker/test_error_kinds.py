"""The kind of a failed attempt, classified from what really happened on real sockets: a refused
port, a name that does not resolve, TLS against plain HTTP, silence, garbage, an HTTP status."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from scheduler import jobs
from scheduler.worker import attempt, watchdog
from tests import support
from tests.worker.test_attempt import TIMEOUTS, one_delivery, settings_for


@pytest.fixture
def guard() -> Iterator[watchdog.Watchdog]:
    running = watchdog.Watchdog()
    yield running
    running.stop()


@contextlib.contextmanager
def raw_endpoint(serve: Callable[[socket.socket], None]) -> Iterator[str]:
    """A listener on 127.0.0.1 that hands each connection to `serve`; its URL."""
    listener = socket.create_server(("127.0.0.1", 0))

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                with conn, contextlib.suppress(OSError):
                    serve(conn)

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
    finally:
        listener.close()


def read_request(conn: socket.socket) -> None:
    support.read_request(conn, b"")


def send_attempt(url: str, guard: watchdog.Watchdog, **extra: str) -> attempt.Outcome:
    outcome = attempt.deliver(settings_for(url, **{**TIMEOUTS, **extra}), one_delivery(), guard)
    assert not outcome.ok
    assert outcome.error_kind is not None and jobs.is_error_kind(outcome.error_kind)
    return outcome


def test_a_refused_port_is_refused(guard: watchdog.Watchdog) -> None:
    outcome = send_attempt(f"http://127.0.0.1:{support.free_port()}/hook", guard)
    assert outcome.error_kind == "refused"
    assert outcome.error is not None and outcome.error.startswith("connection failed")


def test_a_host_name_that_does_not_resolve_is_dns(guard: watchdog.Watchdog) -> None:
    # .invalid is reserved (RFC 2606): no resolver answers it with an address.
    outcome = send_attempt("http://nonexistent.invalid/hook", guard)
    assert outcome.error_kind == "dns"


def test_tls_against_a_plain_http_server_is_tls(
    receiver: support.Receiver, guard: watchdog.Watchdog
) -> None:
    outcome = send_attempt(receiver.url.replace("http://", "https://"), guard)
    assert outcome.error_kind == "tls"
    assert receiver.received() == []


def test_an_endpoint_that_never_answers_is_a_timeout(guard: watchdog.Watchdog) -> None:
    answered = threading.Event()

    def stay_silent(conn: socket.socket) -> None:
        read_request(conn)
        answered.wait(10)

    with raw_endpoint(stay_silent) as url:
        outcome = send_attempt(url, guard, SCHEDULER_READ_TIMEOUT="0.5")
        answered.set()
    assert outcome.error_kind == "timeout"
    assert outcome.error == "timeout: ReadTimeout"


def test_an_answer_past_the_attempt_deadline_is_a_timeout(guard: watchdog.Watchdog) -> None:
    endpoint = support.HostileEndpoint("drip_head", size=1000, drip_seconds=0.5)
    try:
        outcome = send_attempt(endpoint.url, guard)
    finally:
        endpoint.close()
    assert outcome.error_kind == "timeout"
    assert outcome.error is not None and outcome.error.startswith("timeout: no answer within")


def test_an_answer_that_is_not_http_is_an_invalid_response(guard: watchdog.Watchdog) -> None:
    def babble(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b"HELLO THERE\r\n\r\n")

    with raw_endpoint(babble) as url:
        outcome = send_attempt(url, guard)
    assert outcome.error_kind == "invalid_response"


def test_a_connection_closed_without_an_answer_is_a_connection_failure(
    guard: watchdog.Watchdog,
) -> None:
    with raw_endpoint(read_request) as url:
        outcome = send_attempt(url, guard)
    assert outcome.error_kind == "connection"


@pytest.mark.parametrize("status", [302, 404, 429, 500, 503])
def test_an_answer_outside_2xx_is_its_status(
    receiver: support.Receiver, guard: watchdog.Watchdog, status: int
) -> None:
    receiver.respond = lambda request: (status, 0.0)
    outcome = send_attempt(receiver.url, guard)
    assert (outcome.status_code, outcome.error_kind) == (status, f"http_{status}")


def test_a_delivery_has_no_kind_and_an_unknown_endpoint_is_not_sent(
    receiver: support.Receiver, guard: watchdog.Watchdog
) -> None:
    settings = settings_for(receiver.url)
    assert attempt.deliver(settings, one_delivery(), guard).error_kind is None
    unknown = dataclasses.replace(one_delivery(), endpoint="gone")
    assert attempt.deliver(settings, unknown, guard).error_kind == "not_sent"


def test_a_first_attempt_reports_its_lateness_and_a_retry_none(
    receiver: support.Receiver, guard: watchdog.Watchdog
) -> None:
    settings = settings_for(receiver.url)
    due = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=2)
    first = dataclasses.replace(one_delivery(), run_at=due, due_at=due)
    lateness = attempt.deliver(settings, first, guard).lateness
    assert lateness is not None and 2 <= lateness < 60
    retry = dataclasses.replace(first, attempts=2)
    assert attempt.deliver(settings, retry, guard).lateness is None
