"""One HTTP attempt against real endpoints, hostile ones included: what it records of the answer,
and that neither a huge nor an endless answer holds the sending thread or its memory."""

from __future__ import annotations

import dataclasses
import datetime as dt
import ssl
import threading
import time
from collections.abc import Iterator

import certifi
import pytest
import requests

from scheduler import config, jobs
from scheduler.worker import attempt, watchdog
from tests import support

TIMEOUTS = {"SCHEDULER_CONNECT_TIMEOUT": "1", "SCHEDULER_READ_TIMEOUT": "2"}


def settings_for(url: str, **extra: str) -> config.Settings:
    env = {"DATABASE_URL": "postgresql://unused/db", "SECRET": support.SECRET, "ENDPOINT": url}
    return config.Settings.from_env({**env, **extra})


def one_delivery() -> jobs.Delivery:
    return jobs.Delivery(
        id=jobs.new_job_id(),
        cron_id=None,
        body='{"k": 1}',
        run_at=dt.datetime.now(dt.UTC),
        attempts=1,
        max_attempts=3,
        claim_token=1,
    )


@pytest.fixture
def guard() -> Iterator[watchdog.Watchdog]:
    running = watchdog.Watchdog()
    yield running
    running.stop()


@pytest.mark.parametrize(
    ("body", "content_type", "excerpt"),
    [
        ("déjà vu".encode(), "text/plain; charset=utf-8", "déjà vu"),
        ("déjà vu".encode("latin-1"), "text/plain; charset=latin-1", "déjà vu"),
        (b'{"ok": true}', "application/json", '{"ok": true}'),
        (b"\xff\xfe broken", None, "\ufffd\ufffd broken"),
        ("déjà".encode(), "text/plain; charset=no-such-charset", "déjà"),
        # Codecs errors="replace" does not make total, which once made deliver() raise after a
        # 2xx: idna refuses "replace", undefined every input, base64 is from bytes to bytes.
        (b"ok", "text/plain; charset=idna", "ok"),
        (b"ok", "text/plain; charset=undefined", "ok"),
        (b"b2s=", "text/plain; charset=base64", "b2s="),
        # What PostgreSQL's text cannot hold: a NUL, a lone surrogate (utf-7 makes one).
        (b"a\x00b", "text/plain", "a\ufffdb"),
        (b"+2AA-", "text/plain; charset=utf-7", "\ufffd"),
        (b"x" * 5000, "text/plain", "x" * attempt.EXCERPT_LENGTH),
        (b"", "text/plain", None),
    ],
)
def test_the_answer_is_kept_as_a_short_excerpt_whatever_its_encoding(
    receiver: support.Receiver,
    guard: watchdog.Watchdog,
    body: bytes,
    content_type: str | None,
    excerpt: str | None,
) -> None:
    receiver.answer = (body, content_type)
    outcome = attempt.deliver(settings_for(receiver.url), one_delivery(), guard)
    assert outcome.ok
    assert outcome.status_code == 200
    assert outcome.response_excerpt == excerpt


def test_a_refused_connection_is_a_failed_attempt_not_an_exception(
    guard: watchdog.Watchdog,
) -> None:
    outcome = attempt.deliver(settings_for("http://127.0.0.1:9/hook"), one_delivery(), guard)
    assert not outcome.ok
    assert outcome.status_code is None
    assert outcome.error is not None and outcome.error.startswith("connection failed")


def test_a_400_mb_answer_is_read_only_as_far_as_its_excerpt(guard: watchdog.Watchdog) -> None:
    endpoint = support.HostileEndpoint("huge")
    try:
        outcome = attempt.deliver(settings_for(endpoint.url, **TIMEOUTS), one_delivery(), guard)
        support.wait_until(lambda: endpoint.requests == 1, timeout=5)
    finally:
        endpoint.close()
    assert outcome.ok
    assert outcome.response_excerpt == "x" * attempt.EXCERPT_LENGTH
    # The connection was dropped instead of drained: most of the answer was never even sent.
    assert endpoint.sent < endpoint.size // 4


@pytest.mark.parametrize(
    ("mode", "ok", "error"),
    [
        # The status line arrived: the endpoint has answered, only its body is cut short.
        ("drip_body", True, None),
        ("drip_head", False, "timeout: no answer within 3s"),
    ],
)
def test_an_answer_dripped_a_byte_a_second_ends_at_the_attempt_deadline(
    guard: watchdog.Watchdog, mode: str, ok: bool, error: str | None
) -> None:
    endpoint = support.HostileEndpoint(mode, size=1000, drip_seconds=0.5)
    settings = settings_for(endpoint.url, **TIMEOUTS)
    try:
        outcome = attempt.deliver(settings, one_delivery(), guard)
    finally:
        endpoint.close()
    assert outcome.ok is ok
    assert outcome.error == error
    # Each byte came well within the read timeout, so only the attempt's deadline ended it;
    # it must not run much past that deadline (a correctness bound, not a speed goal).
    assert settings.attempt_deadline * 1000 <= outcome.duration_ms
    assert outcome.duration_ms < (settings.attempt_deadline + 2) * 1000
    assert endpoint.sent < 100


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1000\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",
    ],
    ids=["connection close", "no length"],
)
def test_the_deadline_ends_the_body_of_an_answer_that_ends_its_connection(
    guard: watchdog.Watchdog, head: bytes
) -> None:
    # http.client hands such a connection's socket over to the answer; the watchdog, which
    # once looked for it on the connection only, found none and let the drip go on.
    endpoint = support.DrippingEndpoint(head, b"x" * 60, drip_seconds=0.5)
    settings = settings_for(endpoint.url, **TIMEOUTS)
    try:
        outcome = attempt.deliver(settings, one_delivery(), guard)
    finally:
        endpoint.close()
    assert outcome.ok and outcome.status_code == 200
    assert outcome.response_excerpt is not None and set(outcome.response_excerpt) == {"x"}
    # As in the test above: a correctness bound on how far past the deadline it ran.
    assert outcome.duration_ms < (settings.attempt_deadline + 2) * 1000
    assert endpoint.sent < 30


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_watchdog_ends_only_attempts_past_their_deadline() -> None:
    clock = FakeClock()
    guard = watchdog.Watchdog(clock)
    try:
        with guard.watch(5) as early, guard.watch(50) as late:
            clock.now += 10
            guard.poke()
            support.wait_until(lambda: early.expired, timeout=5)
            assert not late.expired
    finally:
        guard.stop()


def test_the_watchdog_ends_attempts_once_the_heartbeat_no_longer_vouches_for_them() -> None:
    clock = FakeClock()
    vouched = [clock.now + 50]
    guard = watchdog.Watchdog(clock, vouched_until=lambda: vouched[0])
    try:
        with guard.watch(5) as early, guard.watch(500) as long:
            clock.now += 10
            guard.poke()
            support.wait_until(lambda: early.expired, timeout=5)
            assert not long.expired, "vouched for still"
            clock.now += 50  # past the vouch: the leader may hand its claim on
            guard.poke()
            support.wait_until(lambda: long.expired, timeout=5)
    finally:
        guard.stop()


def test_a_deadline_before_the_one_the_watchdog_sleeps_until_wakes_it() -> None:
    guard = watchdog.Watchdog()
    try:
        with guard.watch(3600):
            # Asleep until that deadline: a later one would leave it asleep, an earlier one not.
            support.wait_until(lambda: guard._wake_at > time.monotonic() + 3000, timeout=5)
            with guard.watch(0.01) as early:
                support.wait_until(lambda: early.expired, timeout=5)
    finally:
        guard.stop()


@pytest.mark.parametrize(
    ("status", "header", "retry_after", "error"),
    [
        (503, "120", 120.0, "HTTP 503"),
        # Not valid delays: the normal backoff applies, and the attempt says why.
        (429, "\N{SUPERSCRIPT TWO}", None, "HTTP 429; Retry-After ignored: '\N{SUPERSCRIPT TWO}'"),
        (503, "1.5", None, "HTTP 503; Retry-After ignored: '1.5'"),
        (
            429,
            "Mon, 01 Jan 2024 00:00:00 +9999999999999999999",  # deliver() once raised
            None,
            "HTTP 429; Retry-After ignored: 'Mon, 01 Jan 2024 00:00:00 +9999999999999'…",
        ),
        (200, "120", None, None),  # only a refusal says when to come back
        (500, "soon", None, "HTTP 500"),
    ],
)
def test_a_refusal_s_retry_after_is_kept_as_seconds_or_noted_as_ignored(
    receiver: support.Receiver,
    guard: watchdog.Watchdog,
    status: int,
    header: str,
    retry_after: float | None,
    error: str | None,
) -> None:
    receiver.respond = lambda request: (status, 0.0)
    receiver.headers_for = lambda request: {"Retry-After": header}
    outcome = attempt.deliver(settings_for(receiver.url), one_delivery(), guard)
    assert outcome.status_code == status
    assert outcome.retry_after == retry_after
    assert outcome.error == error


def test_an_endpoint_s_cookies_are_neither_kept_nor_sent_back(
    receiver: support.Receiver, guard: watchdog.Watchdog
) -> None:
    receiver.headers_for = lambda request: {"Set-Cookie": "session=abc; Path=/"}
    settings = settings_for(receiver.url)
    for _ in range(2):
        assert attempt.deliver(settings, one_delivery(), guard).ok
    _, second = receiver.wait_for(2)
    assert "Cookie" not in second.headers


def test_a_connection_that_switched_protocols_unasked_is_not_lent_again(
    guard: watchdog.Watchdog,
) -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    upgrade = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    )
    endpoint = support.KeepAliveEndpoint([ok, upgrade, ok])
    settings = settings_for(endpoint.url)
    try:
        outcomes = [attempt.deliver(settings, one_delivery(), guard) for _ in range(3)]
    finally:
        endpoint.close()
    assert [outcome.status_code for outcome in outcomes] == [200, 101, 200]
    assert (outcomes[1].error, outcomes[1].error_kind) == ("HTTP 101", "http_101")
    # The first connection carried the first 200 and the 101, and was dropped after it.
    assert endpoint.connections == 2


def test_a_job_for_an_unknown_endpoint_is_not_sent(guard: watchdog.Watchdog) -> None:
    settings = settings_for("http://127.0.0.1:9/hook")
    item = dataclasses.replace(one_delivery(), endpoint="gone")
    outcome = attempt.deliver(settings, item, guard)
    assert not outcome.attempted and not outcome.ok
    assert outcome.error == "endpoint 'gone' is not configured; not sent"


def test_an_attempt_carries_the_job_s_trace_under_a_new_parent_id(
    receiver: support.Receiver, guard: watchdog.Watchdog
) -> None:
    traced = dataclasses.replace(
        one_delivery(),
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        tracestate="congo=t61rcWkgMzE",
    )
    settings = settings_for(receiver.url)
    for delivery in (traced, one_delivery()):
        assert attempt.deliver(settings, delivery, guard).ok
    with_trace, without = receiver.wait_for(2)
    _, trace_id, parent_id, flags = with_trace.headers["traceparent"].split("-")
    assert (trace_id, flags) == ("0af7651916cd43dd8448eb211c80319c", "01")
    assert parent_id not in ("b7ad6b7169203331", "0" * 16)
    assert with_trace.headers["tracestate"] == "congo=t61rcWkgMzE"
    assert "traceparent" not in without.headers and "tracestate" not in without.headers


def test_a_ca_bundle_is_loaded_once_not_looked_up_per_request() -> None:
    bundle = certifi.where()  # requests' own dependency, so always there
    adapter = watchdog.WatchedAdapter(ca_bundle=bundle)
    assert adapter.ssl_context is not None
    assert adapter.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert adapter.poolmanager.connection_pool_kw["ssl_context"] is adapter.ssl_context
    assert watchdog.WatchedAdapter().ssl_context is None


def test_an_attempt_sends_these_headers_in_this_order(
    receiver: support.Receiver, guard: watchdog.Watchdog
) -> None:
    traced = dataclasses.replace(
        one_delivery(),
        event="job.failed",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        tracestate="congo=t61rcWkgMzE",
    )
    assert attempt.deliver(settings_for(receiver.url), traced, guard).ok
    (sent,) = receiver.wait_for(1)
    assert list(sent.headers) == [
        "Host",
        "User-Agent",
        "Accept-Encoding",
        "Accept",
        "Connection",
        "Content-Type",
        "Scheduler-Signature",
        "Scheduler-Delivery-Id",
        "Scheduler-Attempt",
        "Scheduler-Scheduled-At",
        "Scheduler-Secret",
        "Scheduler-Event",
        "traceparent",
        "tracestate",
        "Content-Length",
    ]
    fixed = {name: sent.headers[name] for name in list(sent.headers)[1:6]}
    assert fixed == {
        "User-Agent": "scheduler-dispatch",
        "Accept-Encoding": "identity",
        "Accept": "*/*",
        "Connection": "keep-alive",
        "Content-Type": "application/json",
    }
    assert sent.headers["Content-Length"] == str(len(sent.body))
    assert (sent.headers["Scheduler-Delivery-Id"], sent.headers["Scheduler-Attempt"]) == (
        traced.id,
        "1",
    )


def test_a_header_value_http_forbids_fails_the_attempt_unsent(
    receiver: support.Receiver, guard: watchdog.Watchdog
) -> None:
    broken = dataclasses.replace(one_delivery(), id="job\r\nX-Injected: 1")
    outcome = attempt.deliver(settings_for(receiver.url), broken, guard)
    assert (outcome.status_code, outcome.error_kind) == (None, "invalid_response")
    assert outcome.error is not None and outcome.error.startswith("connection failed: Invalid")
    assert attempt.deliver(settings_for(receiver.url), one_delivery(), guard).ok
    assert len(receiver.wait_for(1)) == 1


def test_a_proxy_named_in_the_environment_carries_the_attempts(
    receiver: support.Receiver, guard: watchdog.Watchdog, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = receiver.url.removesuffix("/hook")
    monkeypatch.setenv("HTTP_PROXY", proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    settings = settings_for("http://endpoint.invalid/hook")
    outcomes: list[attempt.Outcome] = []
    # A thread of its own: a sending thread reads the environment once, at its first attempt.
    sender = threading.Thread(
        target=lambda: outcomes.append(attempt.deliver(settings, one_delivery(), guard))
    )
    sender.start()
    sender.join()
    assert outcomes[0].ok
    (sent,) = receiver.wait_for(1)
    assert sent.path == "http://endpoint.invalid/hook"
    assert sent.headers["Host"] == "endpoint.invalid"


def test_a_pool_closed_since_it_was_kept_is_looked_up_again(receiver: support.Receiver) -> None:
    adapter = watchdog.WatchedAdapter()
    request = requests.Request("POST", receiver.url, data=b"{}").prepare()
    assert adapter.send(request, timeout=5).status_code == 200
    # Dropped and closed, as a pool manager that closes the pools it drops would (urllib3 1.x).
    kept = adapter.get_connection_with_tls_context(request, True)
    adapter.poolmanager.clear()
    kept.close()
    assert adapter.send(request, timeout=5).status_code == 200
    assert adapter.get_connection_with_tls_context(request, True) is not kept
    receiver.wait_for(2)
