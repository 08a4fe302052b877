"""End to end: named endpoints with limits that hold across two dispatchers, pauses, Retry-After,
failure notifications, and what a named endpoint receives."""

from __future__ import annotations

import collections
import datetime as dt
import email.utils
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from scheduler import signing
from tests import support
from tests.e2e.conftest import System

pytestmark = pytest.mark.e2e

OTHER_SECRET = "other-secret-0123456789"


@pytest.fixture
def other() -> Iterator[support.Receiver]:
    """A second receiver, for the endpoint named `other`."""
    server = support.Receiver()
    yield server
    server.close()


# A short grace for unknown endpoints, so that a test sees it end.
GRACE = 3.0


def with_other(system: System, other: support.Receiver, **env: str) -> None:
    system.env.update(SCHEDULER_ENDPOINTS=f"other={other.url}", **env)


def start_two_dispatchers(system: System, other: support.Receiver, **env: str) -> None:
    """The web process and two dispatchers, with the endpoint `other` configured."""
    with_other(system, other, **env)
    system.start("web")
    system.start("worker")
    system.start("worker")


def due_now(system: System, count: int, endpoint: str = "other", **fields: object) -> list[str]:
    return system.client.insert_batch(
        [{"body": n, "delay": 0, "endpoint": endpoint, **fields} for n in range(count)]
    )


def states_of(db_url: str) -> dict[str, int]:
    with psycopg.connect(db_url) as conn:
        return dict(conn.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall())


def most_in_window(arrivals: list[float], window: float) -> int:
    """The most arrivals in any interval of `window` seconds."""
    times = sorted(arrivals)
    most, start = 0, 0
    for end, moment in enumerate(times):
        while moment - times[start] > window:
            start += 1
        most = max(most, end - start + 1)
    return most


def test_a_rate_limit_holds_across_two_dispatchers(system: System, other: support.Receiver) -> None:
    start_two_dispatchers(system, other)
    # Every sending thread opens its connection first, so that an arrival follows its start by
    # the same few milliseconds: the bound is on starts, and it is measured at the receiver.
    warm = due_now(system, 96)
    other.wait_for(len(warm), timeout=30)
    rate = 20.0
    system.client.set_endpoint_limits("other", rate_limit=rate)
    ids = due_now(system, 100)
    support.wait_until(lambda: len(other.received()) >= len(warm) + 100, timeout=30)
    received = [r for r in other.received() if r.json["id"] in set(ids)]
    arrivals = [r.arrived_at for r in received]
    assert {r.json["id"] for r in received} == set(ids)
    assert len(received) == 100, "a delivery was sent twice"
    # At most rate * w + max(rate, 1) starts in any w seconds; arrivals add a few milliseconds
    # of jitter to the starts, allowed for here.
    for window in (0.25, 0.5, 1.0, 2.0, 3.0):
        assert most_in_window(arrivals, window) <= rate * (window + 0.05) + max(rate, 1), window
    # 100 starts with a bucket of 20 take at least (100 - 20) / 20 s.
    assert max(arrivals) - min(arrivals) >= (100 - rate) / rate * 0.95


def test_max_in_flight_holds_across_two_dispatchers(
    system: System, other: support.Receiver
) -> None:
    concurrent = 0
    most = 0
    lock = threading.Lock()

    def slow(request: support.Received) -> tuple[int, float]:
        nonlocal concurrent, most
        with lock:
            concurrent += 1
            most = max(most, concurrent)
        time.sleep(0.2)  # the endpoint's own slowness, not a wait for the test
        with lock:
            concurrent -= 1
        return 200, 0.0

    other.respond = slow
    start_two_dispatchers(system, other, SCHEDULER_MAX_IN_FLIGHT="3")
    assert system.client.get_endpoint("other").max_in_flight == 3
    due_now(system, 24)
    other.wait_for(24, timeout=30)
    support.wait_until(lambda: states_of(system.db_url) == {"delivered": 24}, timeout=10)
    assert most == 3


def test_pause_holds_within_a_second_and_resume_delivers_in_due_order(
    system: System, other: support.Receiver
) -> None:
    start_two_dispatchers(system, other)
    system.client.pause_endpoint("other")
    paused_at = time.time()
    start = dt.datetime.now(dt.UTC)
    ids = system.client.insert_batch(
        [
            {"body": n, "at": start + dt.timedelta(seconds=0.1 * n), "endpoint": "other"}
            for n in range(20)
        ]
    )
    tick = system.client.put_cron("tick", "* * * * * *", endpoint="other")
    # Every job comes due while paused, and cron ticks are still recorded.
    support.wait_until(
        lambda: len(system.client.list(cron_id="tick").jobs) >= 2 and time.time() > paused_at + 2.5,
        timeout=15,
    )
    assert tick.endpoint == "other"
    assert other.received() == [], "delivered while paused"
    figures = system.client.get_endpoint("other")
    assert figures.paused and figures.due >= 20
    # One at a time, so arrivals show the order of claims.
    system.client.set_endpoint_limits("other", max_in_flight=1)
    system.client.delete_cron("tick")
    system.client.resume_endpoint("other")
    support.wait_until(lambda: set(ids) <= {r.json["id"] for r in other.received()}, timeout=20)
    jobs_in_order = [r.json["id"] for r in other.received() if r.json["id"]]
    assert jobs_in_order == ids


def test_a_new_limit_holds_on_both_dispatchers_within_a_second(
    system: System, other: support.Receiver
) -> None:
    start_two_dispatchers(system, other)
    start = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    system.client.insert_batch(
        [
            {"body": n, "at": start + dt.timedelta(seconds=0.02 * n), "endpoint": "other"}
            for n in range(300)
        ]
    )
    other.wait_for(20, timeout=15)
    limited_at = time.time()
    system.client.set_endpoint_limits("other", rate_limit=2)

    def after_the_second() -> list[float]:
        # When each attempt started, as its dispatcher recorded it: on a loaded machine the
        # receiver can read requests in a bunch that were started at the limited rate.
        with psycopg.connect(system.db_url) as conn:
            rows = conn.execute(
                "SELECT extract(epoch FROM a.started_at) FROM delivery_attempts a"
                " JOIN jobs j ON j.id = a.job_id WHERE j.endpoint = 'other'"
                " AND a.started_at > to_timestamp(%s)",
                (limited_at + 1,),
            ).fetchall()
        return [float(started) for (started,) in rows]

    # Once the second has passed, starts follow the new rate: at most 2 * w + 2 in w seconds.
    later = support.wait_until(
        lambda: (found := after_the_second()) and len(found) >= 8 and found, 15, interval=0.2
    )
    for window in (0.5, 1.0, 2.0, 3.0):
        assert most_in_window(later, window) <= 2 * (window + 0.05) + 2, window


def test_retry_after_in_seconds_and_as_a_date_delays_the_next_attempt(
    system: System, other: support.Receiver
) -> None:
    answers: dict[str, int] = collections.Counter()

    def busy_once(request: support.Received) -> tuple[int, float]:
        job_id = request.json["id"]
        answers[job_id] += 1
        return (429 if answers[job_id] == 1 else 200), 0.0

    other.respond = busy_once
    with_other(system, other, SCHEDULER_RETRY_BASE="0.01")
    system.start("web")
    system.start("worker")
    headers = {"seconds": "3", "date": ""}

    def answer_header(request: support.Received) -> dict[str, str]:
        if request.json["body"] == "date":
            moment = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=4)
            return {"Retry-After": email.utils.format_datetime(moment, usegmt=True)}
        return {"Retry-After": headers["seconds"]}

    other.headers_for = answer_header
    ids = system.client.insert_batch(
        [{"body": kind, "delay": 0, "endpoint": "other"} for kind in ("seconds", "date")]
    )
    support.wait_until(lambda: states_of(system.db_url) == {"delivered": 2}, timeout=20)
    with psycopg.connect(system.db_url) as conn:
        rows = conn.execute(
            "SELECT job_id, array_agg(started_at ORDER BY attempt) FROM delivery_attempts"
            " GROUP BY job_id"
        ).fetchall()
    gaps = {job_id: (times[1] - times[0]).total_seconds() for job_id, times in rows}
    assert gaps[ids[0]] >= 3
    assert gaps[ids[1]] >= 2.5  # an HTTP date has whole seconds


def test_a_failed_job_and_a_failed_cron_fire_each_notify_once(
    system: System, other: support.Receiver
) -> None:
    system.receiver.respond = lambda request: (500, 0.0)
    with_other(
        system,
        other,
        SCHEDULER_FAILURE_ENDPOINT="other",
        SCHEDULER_MAX_ATTEMPTS="2",
        SCHEDULER_RETRY_BASE="0.01",
        SCHEDULER_RETRY_CAP="0.05",
    )
    system.start("web")
    system.start("worker")
    job_id = system.client.insert({"will": "fail"}, delay=0)
    system.client.set_crons({"tick": "* * * * * *"})
    support.wait_until(
        lambda: (
            {r.json["job"]["id"] for r in other.received()} >= {job_id}
            and any(r.json["job"]["cron_id"] == "tick" for r in other.received())
        ),
        timeout=20,
    )
    system.client.set_crons({})

    def failed_jobs() -> set[str]:
        with psycopg.connect(system.db_url) as conn:
            rows = conn.execute("SELECT id FROM jobs WHERE state = 'failed'").fetchall()
        return {row[0] for row in rows}

    def settled() -> bool:
        states = states_of(system.db_url)
        notified = {r.json["job"]["id"] for r in other.received()}
        return (
            not states.get("scheduled")
            and not states.get("delivering")
            and (notified == failed_jobs())
        )

    support.wait_until(settled, timeout=20)
    notices = other.received()
    counts = collections.Counter(r.json["job"]["id"] for r in notices)
    assert max(counts.values()) == 1, "a failure notified twice"
    (first,) = [r for r in notices if r.json["job"]["id"] == job_id]
    assert first.headers["Scheduler-Event"] == "job.failed"
    assert first.json["event"] == "job.failed"
    assert first.json["job"]["endpoint"] == "default"
    assert first.json["job"]["attempts"] == 2
    assert first.json["job"]["last_status"] == 500
    assert first.json["job"]["last_error"] == "HTTP 500"
    signing.verify(first.body, first.headers[signing.HEADER], support.SECRET)


def test_a_named_endpoint_gets_its_own_signature_and_never_the_raw_secret(
    system: System, other: support.Receiver
) -> None:
    with_other(system, other, SCHEDULER_ENDPOINT_SECRET_OTHER=OTHER_SECRET)
    system.start("web")
    system.start("worker")
    due_now(system, 1)
    system.client.insert("plain", delay=0)
    (named,) = other.wait_for(1, timeout=10)
    (plain,) = system.receiver.wait_for(1, timeout=10)
    assert "Scheduler-Secret" not in named.headers
    signing.verify(named.body, named.headers[signing.HEADER], OTHER_SECRET)
    with pytest.raises(signing.SignatureMismatch):
        signing.verify(named.body, named.headers[signing.HEADER], support.SECRET)
    assert plain.headers["Scheduler-Secret"] == support.SECRET


def test_a_job_for_an_endpoint_no_longer_configured_fails_unsent_after_its_grace(
    system: System, other: support.Receiver
) -> None:
    with_other(system, other, SCHEDULER_UNKNOWN_ENDPOINT_GRACE=str(GRACE))
    system.start("web")
    first = system.start("worker")
    system.client.pause_endpoint("other")
    (job_id,) = due_now(system, 1)
    assert first.stop() == 0
    del system.env["SCHEDULER_ENDPOINTS"]
    worker = system.start("worker")
    support.wait_until(lambda: states_of(system.db_url) == {"failed": 1}, timeout=30)
    assert "does not know: other" in worker.output()
    with psycopg.connect(system.db_url) as conn:
        row = conn.execute("SELECT attempts, last_error FROM jobs").fetchone()
        attempts = conn.execute("SELECT count(*) FROM delivery_attempts").fetchone()
        (waited,) = conn.execute(
            "SELECT extract(epoch FROM jobs.finished_at - seen.known_at)"
            " FROM jobs, endpoint_sightings AS seen WHERE seen.name = 'other'"
        ).fetchone()
    assert row == (0, "endpoint 'other' is not configured; not sent")
    assert attempts == (0,)
    assert waited >= GRACE, "failed before the grace since a dispatcher last knew it"
    assert other.received() == []
    assert job_id


def test_a_dispatcher_leaves_jobs_of_an_endpoint_it_does_not_know_to_one_that_knows_it(
    system: System, other: support.Receiver
) -> None:
    # A rolling deploy that adds `other`: the old dispatcher runs on beside the new one.
    system.start("web", SCHEDULER_ENDPOINTS=f"other={other.url}")
    old = system.start("worker")
    due_now(system, 1, endpoint="default")
    system.receiver.wait_for(1, timeout=10)  # the old dispatcher is claiming
    with_other(system, other)
    system.start("worker")
    ids = due_now(system, 20)

    arrived = other.wait_for(20, timeout=30)

    assert sorted(a.json["id"] for a in arrived) == sorted(ids)
    support.wait_until(lambda: states_of(system.db_url) == {"delivered": 21}, timeout=10)
    assert old.proc is not None and old.proc.poll() is None, "the old dispatcher ran throughout"
