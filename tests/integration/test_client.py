"""scheduler.client against the real app served over real HTTP, on a fresh database per test."""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import json
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import requests
from flask import Flask
from werkzeug.serving import make_server

from scheduler import client, config
from scheduler.web import app as app_module
from tests import support

FUTURE = dt.datetime(2031, 1, 1, tzinfo=dt.UTC)


@contextlib.contextmanager
def serving(flask_app: Flask) -> Iterator[str]:
    """The app on a real threaded HTTP server on a free port, for the length of the block."""
    server = make_server("127.0.0.1", 0, flask_app, threaded=True)
    # A short poll interval so that shutting down takes milliseconds, not half a second.
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def base_url(app: Flask) -> Iterator[str]:
    with serving(app) as url:
        yield url


@pytest.fixture
def api(base_url: str) -> Iterator[client.Client]:
    with client.Client(base_url, support.SECRET) as scheduler_client:
        yield scheduler_client


def count_jobs(db: psycopg.Connection) -> Any:
    row = db.execute("SELECT count(*) FROM jobs").fetchone()
    assert row is not None
    return row[0]


def test_insert_at_an_aware_time_and_get_it_back(api: client.Client) -> None:
    at = dt.datetime(2031, 1, 1, 2, 0, 0, 250000, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    job_id = api.insert({"order": [1, 2]}, at=at, max_attempts=4)
    job = api.get(job_id)
    assert job.id == job_id and len(job_id) == 26
    assert (job.state, job.body, job.cron_id) == ("scheduled", {"order": [1, 2]}, None)
    assert job.timestamp == at and job.timestamp.utcoffset() == dt.timedelta(0)
    assert job.next_attempt_at == at
    assert (job.attempts, job.max_attempts, job.last_status, job.last_error) == (0, 4, None, None)
    assert job.history == () and job.finished_at is None
    assert job.created_at <= job.updated_at <= dt.datetime.now(dt.UTC)


def test_insert_passes_a_string_time_through(api: client.Client) -> None:
    job_id = api.insert(None, at="2031-01-01T03:00:00+03:00")
    assert api.get(job_id).timestamp == FUTURE


def test_insert_with_a_delay(api: client.Client, db: psycopg.Connection) -> None:
    before = dt.datetime.now(dt.UTC)
    seconds = api.insert("a", delay=90)
    hour = api.insert("b", delay=dt.timedelta(hours=1))
    fraction = api.insert("c", delay=1.5)
    after = dt.datetime.now(dt.UTC)
    due: dict[Any, Any] = dict(db.execute("SELECT id, run_at FROM jobs").fetchall())
    for job_id, delay in [(seconds, 90), (hour, 3600), (fraction, 1.5)]:
        offset = dt.timedelta(seconds=delay)
        assert before + offset <= due[job_id] <= after + offset


def test_bad_arguments_fail_before_sending(api: client.Client, db: psycopg.Connection) -> None:
    with pytest.raises(ValueError, match="naive"):
        api.insert(at=dt.datetime(2031, 1, 1))
    with pytest.raises(ValueError, match="exactly one"):
        api.insert(at=FUTURE, delay=5)
    with pytest.raises(ValueError, match="exactly one"):
        api.insert({"no": "time"})
    with pytest.raises(ValueError):
        api.insert(float("nan"), delay=1)
    with pytest.raises(ValueError, match="unknown keys"):
        api.insert_batch([{"timestamp": FUTURE}])
    with pytest.raises(ValueError, match="naive"):
        api.list(before=dt.datetime(2031, 1, 1))
    with pytest.raises(ValueError, match="http"):
        client.Client("localhost:8080", support.SECRET)
    assert count_jobs(db) == 0


def test_a_bad_timestamp_is_an_invalid_request_with_fields(
    api: client.Client, db: psycopg.Connection
) -> None:
    with pytest.raises(client.InvalidRequest) as caught:
        api.insert(at="2021-02-30T00:00:00Z", max_attempts=0)
    error = caught.value
    assert (error.status, error.code) == (400, "invalid_request")
    assert error.fields is not None and set(error.fields) == {"timestamp", "max_attempts"}
    assert "400 invalid_request" in str(error)
    assert count_jobs(db) == 0


def test_a_wrong_secret_is_unauthorized(base_url: str, db: psycopg.Connection) -> None:
    with client.Client(base_url, "not-the-secret") as intruder:
        with pytest.raises(client.Unauthorized) as caught:
            intruder.insert(delay=1)
        assert "not-the-secret" not in repr(intruder)
    assert (caught.value.status, caught.value.code) == (401, "unauthorized")
    assert count_jobs(db) == 0


def test_unknown_jobs_are_not_found(api: client.Client) -> None:
    for call in (api.get, api.run, api.retry):
        for job_id in ("01m8dd8yqdh7n7gfnsea966a31", "no such id", "x" * 200):
            with pytest.raises(client.NotFound) as caught:
                call(job_id)
            assert (caught.value.status, caught.value.code) == (404, "not_found")


def test_a_reused_idempotency_key_returns_the_job_or_conflicts(
    api: client.Client, db: psycopg.Connection
) -> None:
    first = api.insert({"charge": 10}, delay=60, idempotency_key="charge-7")
    again = api.insert({"charge": 10}, delay=dt.timedelta(minutes=1), idempotency_key="charge-7")
    assert first == again
    with pytest.raises(client.Conflict) as caught:
        api.insert({"charge": 11}, delay=60, idempotency_key="charge-7")
    assert (caught.value.status, caught.value.code) == (409, "conflict")
    assert "charge-7" in caught.value.message
    assert count_jobs(db) == 1


def test_idempotent_retries_from_many_threads_make_one_job(
    base_url: str, db: psycopg.Connection
) -> None:
    barrier = threading.Barrier(8)

    def attempt(_: int) -> str:
        # One client per thread: requests does not promise a shared Session is thread-safe.
        with client.Client(base_url, support.SECRET) as own:
            barrier.wait()
            return own.insert({"order": 42}, at=FUTURE, idempotency_key="order-42")

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(attempt, range(8)))
    assert len(ids) == 1
    assert count_jobs(db) == 1


def test_insert_batch(api: client.Client, db: psycopg.Connection) -> None:
    jobs = [{"body": i, "at": FUTURE} for i in range(3)] + [{"delay": 5, "max_attempts": 2}]
    ids = api.insert_batch(jobs, idempotency_key="batch-1")
    assert api.insert_batch(jobs, idempotency_key="batch-1") == ids
    stored: dict[Any, Any] = dict(db.execute("SELECT id, body FROM jobs").fetchall())
    assert [stored[job_id] for job_id in ids] == [0, 1, 2, None]
    assert api.get(ids[3]).max_attempts == 2
    with pytest.raises(client.InvalidRequest) as caught:
        api.insert_batch([{"delay": 1}, {"at": "yesterday"}])
    assert caught.value.fields is not None
    assert set(caught.value.fields["jobs"]) == {"1"}
    with pytest.raises(client.Conflict):
        api.insert_batch(jobs[:1], idempotency_key="batch-1")
    assert count_jobs(db) == 4


def test_delete_cancels(api: client.Client) -> None:
    job_id = api.insert(delay=600)
    api.delete(job_id)
    job = api.get(job_id)
    assert job.state == "cancelled" and job.finished_at is not None
    api.delete("01m8dd8yqdh7n7gfnsea966a31")
    with pytest.raises(client.InvalidRequest) as caught:
        api.delete("no such id")
    assert caught.value.fields is not None and "id" in caught.value.fields


def test_list_filters_and_pages(api: client.Client, db: psycopg.Connection) -> None:
    ids = [api.insert(i, at=FUTURE) for i in range(5)]
    api.delete(ids[0])
    first = api.list(limit=2)
    assert [job.id for job in first.jobs] == [ids[4], ids[3]]
    assert first.next_cursor == ids[3] and first.jobs[0].history is None
    rest = api.list(limit=10, cursor=first.next_cursor)
    assert [job.id for job in rest.jobs] == [ids[2], ids[1], ids[0]] and rest.next_cursor is None
    assert [job.id for job in api.list(state="cancelled").jobs] == [ids[0]]
    db.execute("UPDATE jobs SET run_at = '2030-06-01Z' WHERE id = %s", (ids[2],))
    boundary = dt.datetime(2030, 12, 31, tzinfo=dt.UTC)
    assert [job.id for job in api.list(before=boundary).jobs] == [ids[2]]
    assert ids[2] not in {job.id for job in api.list(after="2030-12-31T00:00:00Z").jobs}
    with pytest.raises(client.InvalidRequest) as caught:
        api.list(state="lost", limit=0)
    assert caught.value.fields is not None and set(caught.value.fields) == {"state", "limit"}


def test_iter_jobs_follows_the_cursor(base_url: str) -> None:
    session = requests.Session()
    pages: list[str] = []
    session.hooks["response"].append(lambda response, **kwargs: pages.append(response.url))
    with client.Client(base_url, support.SECRET, session=session) as api:
        ids = api.insert_batch([{"body": i, "at": FUTURE} for i in range(25)])
        pages.clear()
        seen = [job.id for job in api.iter_jobs(limit=10)]
        # Newest first by id; ids made in the same millisecond sort randomly among themselves.
        assert seen == sorted(ids, reverse=True)
        assert len(pages) == 3 and all("limit=10" in url for url in pages)
        assert list(api.iter_jobs(state="failed", limit=10)) == []
    session.close()


def test_run_and_retry(api: client.Client, db: psycopg.Connection) -> None:
    job_id = api.insert(delay=3600, max_attempts=3)
    api.run(job_id)
    assert api.get(job_id).next_attempt_at <= dt.datetime.now(dt.UTC)
    with pytest.raises(client.Conflict):
        api.retry(job_id)
    db.execute(
        "UPDATE jobs SET state = 'failed', attempts = 3, finished_at = now() WHERE id = %s",
        (job_id,),
    )
    with pytest.raises(client.Conflict) as caught:
        api.run(job_id)
    assert "failed" in caught.value.message
    api.retry(job_id)
    job = api.get(job_id)
    assert (job.state, job.attempts, job.max_attempts, job.finished_at) == ("scheduled", 3, 6, None)


def test_get_shows_the_delivery_history(api: client.Client, db: psycopg.Connection) -> None:
    job_id = api.insert(delay=60)
    db.execute(
        "INSERT INTO delivery_attempts VALUES (%s, 1, '2030-01-01T00:00:00.123Z', 12, 500,"
        " 'HTTP 500', 'oops'), (%s, 2, '2030-01-01T00:01:00Z', 7, NULL, 'timed out', NULL)",
        (job_id, job_id),
    )
    history = api.get(job_id).history
    assert history == (
        client.Attempt(
            1, dt.datetime(2030, 1, 1, 0, 0, 0, 123000, dt.UTC), 12, 500, "HTTP 500", "oops"
        ),
        client.Attempt(2, dt.datetime(2030, 1, 1, 0, 1, tzinfo=dt.UTC), 7, None, "timed out", None),
    )


def test_set_and_list_crons(api: client.Client, db: psycopg.Connection) -> None:
    api.set_crons({"b_hourly": "@hourly", "a_tick": "30 * * * * *"})
    crons = api.list_crons()
    assert [(c.id, c.spec, c.timezone, c.paused) for c in crons] == [
        ("a_tick", "30 * * * * *", "UTC", False),
        ("b_hourly", "@hourly", "UTC", False),
    ]
    now = dt.datetime.now(dt.UTC)
    assert all(c.next_fire_at is not None and c.next_fire_at > now for c in crons)
    api.set_crons([("c", "CRON_TZ=Europe/Paris 0 0 9 * * *")])
    (paris,) = api.list_crons()
    assert paris.id == "c" and paris.timezone == "Europe/Paris"
    with pytest.raises(client.InvalidRequest) as caught:
        api.set_crons([("ok", "@daily"), ("bad", "61 * * * * *")])
    assert caught.value.fields is not None and "1" in caught.value.fields["jobs"]
    assert [c.id for c in api.list_crons()] == ["c"]
    api.set_crons({})
    assert api.list_crons() == []
    assert db.execute("SELECT count(*) FROM crons").fetchone() == (0,)


def test_manage_one_cron(api: client.Client) -> None:
    created = api.put_cron("report", "0 30 9 * * *", timezone="Europe/Paris")
    assert (created.id, created.spec) == ("report", "CRON_TZ=Europe/Paris 0 30 9 * * *")
    assert created.timezone == "Europe/Paris" and created.next_fire_at is not None
    assert created.next_fire_at.utcoffset() in (dt.timedelta(hours=1), dt.timedelta(hours=2))
    assert api.get_cron("report") == created
    with pytest.raises(client.InvalidRequest) as caught:
        api.put_cron("report", "CRON_TZ=UTC @daily", timezone="UTC")
    assert caught.value.fields is not None and "timezone" in caught.value.fields
    paused = api.pause_cron("report")
    assert paused.paused and paused.next_fire_at is None
    resumed = api.resume_cron("report")
    assert not resumed.paused and resumed.next_fire_at is not None
    first, second = api.run_cron("report"), api.run_cron("report")
    runs = api.cron_runs("report")
    assert [job.id for job in runs.jobs] == [second, first] and runs.next_cursor is None
    assert all(job.cron_id == "report" and job.body is None for job in runs.jobs)
    one = api.cron_runs("report", limit=1)
    assert [job.id for job in one.jobs] == [second] and one.next_cursor == second
    older = api.cron_runs("report", limit=1, cursor=one.next_cursor)
    assert [job.id for job in older.jobs] == [first]
    assert api.cron_runs("report", after=FUTURE).jobs == ()
    api.delete_cron("report")
    api.delete_cron("report")
    for call in (api.get_cron, api.pause_cron, api.resume_cron, api.run_cron, api.cron_runs):
        with pytest.raises(client.NotFound):
            call("report")


def test_cron_policies_and_backfill(api: client.Client, db: psycopg.Connection) -> None:
    spread = api.put_cron("spread", "*/10 * * * * *", jitter=dt.timedelta(seconds=90))
    assert (spread.jitter, spread.overlap) == (90.0, "allow")
    assert api.put_cron("spread", "*/10 * * * * *", overlap="skip").jitter == 0.0
    api.set_crons(
        {"plain": "@hourly", "spread": {"spec": "*/10 * * * * *", "jitter": 1.5, "overlap": "skip"}}
    )
    assert {(c.id, c.jitter, c.overlap) for c in api.list_crons()} == {
        ("plain", 0.0, "allow"),
        ("spread", 1.5, "skip"),
    }
    with pytest.raises(ValueError, match="unknown keys"):
        api.set_crons({"x": {"spec": "@daily", "jiter": 1}})
    with pytest.raises(client.InvalidRequest) as caught:
        api.put_cron("spread", "@daily", overlap="never")
    assert caught.value.fields is not None and "overlap" in caught.value.fields

    start = dt.datetime(2031, 1, 1, tzinfo=dt.UTC)
    assert api.backfill_cron("spread", start, start + dt.timedelta(minutes=1)) == client.Backfill(
        recorded=6, ticks=6
    )
    again = api.backfill_cron("spread", "2031-01-01T00:00:30Z", "2031-01-01T00:01:30Z")
    assert again == client.Backfill(recorded=3, ticks=6)
    assert db.execute("SELECT count(*) FROM jobs WHERE cron_id = 'spread'").fetchone() == (9,)
    with pytest.raises(client.InvalidRequest) as refused:
        api.backfill_cron("spread", start, start)
    assert refused.value.fields is not None and "to" in refused.value.fields
    with pytest.raises(client.NotFound):
        api.backfill_cron("nope", start, start + dt.timedelta(minutes=1))


def test_insert_sends_the_trace_context(api: client.Client, db: psycopg.Connection) -> None:
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    one = api.insert(None, at=FUTURE, traceparent=traceparent, tracestate="congo=1")
    many = api.insert_batch([{"at": FUTURE}, {"delay": 60}], traceparent=traceparent)
    rows = dict(db.execute("SELECT id, (traceparent, tracestate)::text FROM jobs").fetchall())
    assert rows[one] == f"({traceparent},congo=1)"
    assert [rows[job_id] for job_id in many] == [f"({traceparent},)"] * 2


def test_ids_that_look_like_paths_stay_ids(api: client.Client) -> None:
    api.set_crons({".a.": "@daily", "a..b": "@hourly"})
    assert api.get_cron(".a.").spec == "@daily"
    assert api.get_cron("a..b").spec == "@hourly"
    with pytest.raises(client.InvalidRequest):
        api.set_crons({"..": "@daily"})
    with pytest.raises(client.NotFound):
        api.get_cron("a?b")
    with pytest.raises(client.NotFound):
        api.get("x#y")
    for job_id in ("../cron", "a/run"):
        with pytest.raises(ValueError, match="id"):
            api.get(job_id)


def test_preview(api: client.Client) -> None:
    after = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    assert api.preview("0 0 12 * * *", after=after, count=2) == [
        dt.datetime(2030, 1, 1, 12, tzinfo=dt.UTC),
        dt.datetime(2030, 1, 2, 12, tzinfo=dt.UTC),
    ]
    (zoned,) = api.preview("CRON_TZ=America/New_York 0 0 9 * * *", after=after, count=1)
    assert zoned.utcoffset() == dt.timedelta(hours=-5)
    assert zoned == dt.datetime(2030, 1, 1, 14, tzinfo=dt.UTC)
    assert api.preview("0 0 0 30 Feb ?") == []
    assert len(api.preview("@every 10s")) == 5
    with pytest.raises(client.InvalidRequest) as caught:
        api.preview("61 * * * * *")
    assert caught.value.fields is not None and "spec" in caught.value.fields


def test_health_and_readiness(api: client.Client, db: psycopg.Connection) -> None:
    assert api.alive()
    health = api.health()
    assert not health.ready and health.reason == "No dispatcher has ever been active."
    assert not api.ready()
    db.execute("UPDATE dispatcher_leader SET epoch = 1, heartbeat_at = now()")
    health = api.health()
    assert health.ready and health.reason is None
    assert health.dispatcher_heartbeat_age is not None and health.dispatcher_heartbeat_age >= 0
    assert api.ready()


def test_a_closed_port_is_a_connection_failure() -> None:
    with client.Client(f"http://127.0.0.1:{support.free_port()}", support.SECRET) as nowhere:
        with pytest.raises(client.ConnectionFailed) as caught:
            nowhere.insert(delay=1, idempotency_key="k")
        assert not nowhere.ready() and not nowhere.alive()
    error = caught.value
    assert (error.status, error.code) == (None, "connection_failed")
    assert isinstance(error.__cause__, requests.ConnectionError)
    assert not isinstance(error, client.Unavailable)


def test_a_timeout_is_a_connection_failure(receiver: support.Receiver) -> None:
    receiver.respond = lambda request: (200, 2.0)
    base = receiver.url.removesuffix("/hook")
    with (
        client.Client(base, support.SECRET, timeout=0.2) as slow,
        pytest.raises(client.ConnectionFailed) as caught,
    ):
        slow.insert(delay=1)
    assert isinstance(caught.value.__cause__, requests.Timeout)


def test_answers_that_are_not_the_api_s(receiver: support.Receiver) -> None:
    base = receiver.url.removesuffix("/hook")
    with client.Client(base, support.SECRET) as proxied:
        receiver.respond = lambda request: (502, 0.0)
        with pytest.raises(client.ServerError) as server_error:
            proxied.insert(delay=1)
        receiver.respond = lambda request: (503, 0.0)
        with pytest.raises(client.Unavailable) as unavailable:
            proxied.insert(delay=1)
        receiver.respond = lambda request: (200, 0.0)
        with pytest.raises(client.SchedulerError) as garbled:
            proxied.insert(delay=1)
    assert (server_error.value.status, server_error.value.code) == (502, "http_502")
    assert "nope" in server_error.value.message
    assert unavailable.value.retry_after is None
    assert (garbled.value.status, garbled.value.code) == (200, "invalid_response")
    assert receiver.received()[0].headers["Scheduler-Secret"] == support.SECRET


def test_endpoint_limits_and_weights(api: client.Client) -> None:
    assert api.get_endpoint("default").weight == 1.0
    heavy = api.set_endpoint_limits("default", weight=2.5)
    assert (heavy.weight, heavy.rate_limit, heavy.max_in_flight) == (2.5, None, None)
    limited = api.set_endpoint_limits("default", max_in_flight=3)
    assert (limited.weight, limited.max_in_flight) == (2.5, 3)
    assert api.reset_endpoint("default").weight == 2.5, "a reset returns the limits only"
    assert api.set_endpoint_limits("default", weight=None).weight == 1.0
    assert [item.weight for item in api.endpoints()] == [1.0]
    with pytest.raises(client.InvalidRequest) as caught:
        api.set_endpoint_limits("default", weight="2")
    assert caught.value.fields == {"weight": ["Not a valid number."]}


def test_an_endpoint_from_an_older_or_a_newer_server(receiver: support.Receiver) -> None:
    shown = {
        "name": "default",
        "url": "http://127.0.0.1:9/hook",
        "rate_limit": None,
        "max_in_flight": None,
        "paused": False,
        "in_flight": 0,
        "due": 2,
    }
    base = receiver.url.removesuffix("/hook")
    with client.Client(base, support.SECRET) as older:
        receiver.answer = (json.dumps(shown).encode(), "application/json")
        assert older.reset_endpoint("default").weight == 1.0, "no weight: every one weighs 1"
        receiver.answer = (json.dumps({**shown, "weight": 2, "colour": "blue"}).encode(), None)
        assert older.reset_endpoint("default").weight == 2


def test_a_database_outage_is_unavailable_with_retry_after() -> None:
    settings = config.Settings(
        database_url=f"postgresql://postgres@127.0.0.1:{support.free_port()}/nowhere",
        secrets=(support.SECRET,),
        endpoint="http://127.0.0.1:9/hook",
    )
    flask_app = app_module.create_app(settings)
    try:
        with serving(flask_app) as base, client.Client(base, support.SECRET) as api:
            with pytest.raises(client.Unavailable) as caught:
                api.insert(delay=1)
            assert api.alive()
    finally:
        flask_app.extensions["scheduler.database"].pool.close()
    error = caught.value
    assert (error.status, error.code, error.retry_after) == (503, "unavailable", 5.0)


def test_flow_keys_go_with_jobs_and_are_listed(api: client.Client) -> None:
    api.insert(1, delay=0, flow={"key": "tenant-1", "rate": 2})
    api.insert_batch([{"body": 2, "delay": 0, "flow": {"key": "tenant-1", "max_in_flight": 3}}])
    (listed,) = api.flows("default")
    assert (listed.key, listed.rate, listed.max_in_flight, listed.due) == ("tenant-1", None, 3, 2)
    assert listed.used_at.tzinfo is not None
    with pytest.raises(client.InvalidRequest):
        api.insert(3, delay=0, flow={"key": ""})
    with pytest.raises(client.NotFound):
        api.flows("nowhere")


def test_update_changes_what_it_is_given_and_answers_the_job(
    api: client.Client, db: psycopg.Connection
) -> None:
    job_id = api.insert({"v": 1}, at=FUTURE, max_attempts=3, flow={"key": "k"})
    later = FUTURE + dt.timedelta(days=1, microseconds=250)
    job = api.update(job_id, body=None, at=later, max_attempts=5)
    assert (job.id, job.body, job.timestamp, job.max_attempts, job.flow_key) == (
        job_id,
        None,
        later,
        5,
        "k",
    )
    assert job.history == ()
    job = api.update(job_id, flow=None, max_attempts=None, delay=dt.timedelta(minutes=5))
    assert (job.flow_key, job.max_attempts) == (None, 8)
    assert job.next_attempt_at - job.updated_at == dt.timedelta(minutes=5)
    with pytest.raises(ValueError, match="at most one"):
        api.update(job_id, at=later, delay=5)
    with pytest.raises(ValueError, match="Give something"):
        api.update(job_id)
    with pytest.raises(client.InvalidRequest) as invalid:
        api.update(job_id, max_attempts=0)
    assert invalid.value.fields is not None and set(invalid.value.fields) == {"max_attempts"}
    db.execute("UPDATE jobs SET state = 'delivered'")
    with pytest.raises(client.Conflict, match="is delivered"):
        api.update(job_id, body=2)
    with pytest.raises(client.NotFound):
        api.update("01m8dd8yqdh7n7gfnsea966a31", body=2)


def test_debounce_joins_the_waiting_job_and_says_so(
    api: client.Client, db: psycopg.Connection
) -> None:
    first = api.debounce("digest-42", {"n": 1}, period=dt.timedelta(minutes=5), max_wait=3600)
    assert first.debounced is False
    second = api.debounce("digest-42", {"n": 2}, period=300, idempotency_key="i")
    assert second == client.Debounced(first.id, True)
    assert api.debounce("digest-42", {"n": 2}, period=300, idempotency_key="i") == second
    job = api.get(first.id)
    assert (job.body, job.debounce_key) == ({"n": 2}, "digest-42")
    assert job.debounce_until == job.created_at + dt.timedelta(hours=1)
    ids = api.insert_batch(
        [
            {"body": 3, "debounce": {"key": "digest-42", "period": 60}},
            {"body": 4, "debounce": {"key": "other", "period": dt.timedelta(seconds=60)}},
        ]
    )
    assert ids[0] == first.id and ids[1] != first.id
    with pytest.raises(ValueError, match="neither at nor delay"):
        api.insert_batch([{"debounce": {"key": "k", "period": 1}, "delay": 5}])
    with pytest.raises(ValueError, match="unknown keys"):
        api.insert_batch([{"debounce": {"key": "k", "period": 1, "wait": 5}}])
    with pytest.raises(client.InvalidRequest) as invalid:
        api.debounce("k", period=60, max_wait=30)
    assert invalid.value.fields == {"debounce": {"max_wait": ["Must be at least period."]}}
    assert count_jobs(db) == 2


def test_cron_lifecycles_and_catch_up_windows(api: client.Client) -> None:
    start = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    made = api.put_cron(
        "report",
        "0 0 12 * * *",
        start_at=start,
        end_at=start + dt.timedelta(days=30),
        max_runs=3,
        delete_after_end=True,
        catchup_window=dt.timedelta(minutes=10),
    )
    assert (made.state, made.runs, made.runs_left, made.max_runs) == ("active", 0, 3, 3)
    assert (made.start_at, made.end_at) == (start, start + dt.timedelta(days=30))
    assert made.delete_after_end and made.catchup_window == 600
    assert made.next_fire_at == start + dt.timedelta(hours=12)
    api.set_crons({"report": {"spec": "0 0 12 * * *", "max_runs": 2}})
    (listed,) = api.list_crons()
    assert (listed.max_runs, listed.start_at, listed.catchup_window) == (2, None, None)
    with pytest.raises(client.InvalidRequest) as refused:
        api.put_cron("report", "@daily", start_at=start, end_at=start)
    assert "end_at" in refused.value.fields


def test_a_job_s_own_request_goes_in_and_comes_back_with_secrets_redacted(
    api: client.Client, db: psycopg.Connection
) -> None:
    job_id = api.insert(
        {"order": 42},
        delay=60,
        path="/orders/42?src=x",
        method="put",
        headers={"Authorization": "Bearer abc", "X-Tenant": "t1", "X-Api-Key": "k"},
        timeout=dt.timedelta(minutes=2),
        retry={"base": 5, "cap": dt.timedelta(hours=1)},
        callback="default",
        idempotency_key="order-42",
    )
    job = api.get(job_id)
    assert (job.path, job.method, job.timeout, job.retry, job.callback) == (
        "/orders/42?src=x",
        "PUT",
        120.0,
        client.Retry(5.0, 3600.0),
        "default",
    )
    assert job.headers == {
        "Authorization": "[redacted]",
        "X-Tenant": "t1",
        "X-Api-Key": "[redacted]",
    }
    (listed,) = api.list().jobs
    assert (listed.headers, listed.retry) == (job.headers, job.retry)
    stored = db.execute("SELECT http_options -> 'headers' FROM jobs").fetchone()
    assert stored == ([["Authorization", "Bearer abc"], ["X-Tenant", "t1"], ["X-Api-Key", "k"]],)
    again = api.insert(
        {"order": 42},
        delay=60,
        path="/orders/42?src=x",
        method="put",
        headers={"Authorization": "Bearer abc", "X-Tenant": "t1", "X-Api-Key": "k"},
        timeout=120,
        retry=client.Retry(5, 3600),
        callback="default",
        idempotency_key="order-42",
    )
    assert again == job_id, "the same request, however its durations are written"
    with pytest.raises(client.Conflict):
        api.insert({"order": 42}, delay=60, method="PATCH", idempotency_key="order-42")
    plain = api.get(api.insert(None, delay=60))
    assert (plain.path, plain.method, plain.headers, plain.timeout, plain.retry) == (
        None,
        "POST",
        {},
        None,
        None,
    )
    assert plain.callback is None


def test_batch_items_and_debounced_inserts_take_request_options(api: client.Client) -> None:
    first, second = api.insert_batch(
        [
            {"body": 1, "delay": 60, "path": "a/b", "timeout": 30},
            {"body": 2, "delay": 60, "method": "DELETE", "retry": {"base": 1, "cap": 2}},
        ]
    )
    assert (api.get(first).path, api.get(first).timeout, api.get(first).method) == (
        "a/b",
        30.0,
        "POST",
    )
    assert (api.get(second).method, api.get(second).retry) == ("DELETE", client.Retry(1.0, 2.0))
    made = api.debounce("digest", 1, period=60, headers={"X-Digest": "1"}, callback="default")
    joined = api.debounce("digest", 2, period=60, headers={"X-Digest": "2"})
    assert joined == client.Debounced(made.id, True)
    job = api.get(made.id)
    assert (job.headers, job.callback) == ({"X-Digest": "2"}, None), "the latest insert's"
    with pytest.raises(ValueError, match="unknown keys"):
        api.insert_batch([{"delay": 1, "headers": {}, "verb": "PUT"}])


def test_update_sets_request_options_and_null_resets_one(api: client.Client) -> None:
    job_id = api.insert(1, at=FUTURE, headers={"Authorization": "Bearer abc"}, callback="default")
    job = api.update(job_id, path="v2/hooks", method="PATCH", timeout=dt.timedelta(seconds=45))
    assert (job.path, job.method, job.timeout, job.callback) == (
        "v2/hooks",
        "PATCH",
        45.0,
        "default",
    )
    assert job.headers == {"Authorization": "[redacted]"}, "what is left out stays"
    job = api.update(job_id, retry=client.Retry(base=2, cap=dt.timedelta(minutes=10)))
    assert (job.retry, job.path) == (client.Retry(2.0, 600.0), "v2/hooks")
    job = api.update(job_id, path=None, callback=None)
    assert (job.path, job.callback, job.method, job.timeout) == (None, None, "PATCH", 45.0)
    job = api.update(job_id, headers={"X-Tenant": "t2"})
    assert job.headers == {"X-Tenant": "t2"}, "headers replace the whole set"
    job = api.update(job_id, method=None, headers=None, timeout=None, retry=None)
    assert (job.method, job.headers, job.timeout, job.retry) == ("POST", {}, None, None)
    assert api.get(job_id).history == ()


def test_bad_request_options_are_refused_by_field_and_write_nothing(
    api: client.Client, db: psycopg.Connection
) -> None:
    for options, fields in [
        ({"path": "../admin"}, {"path": ["Must not contain '..' in the path."]}),
        ({"path": "//evil.example/x"}, {"path": ["Must not contain '//'."]}),
        ({"method": "GET"}, {"method": ["Must be one of POST, PUT, PATCH, DELETE."]}),
        (
            {"headers": {"Host": "evil"}},
            {"headers": {"Host": ["The endpoint's URL sets the host."]}},
        ),
        (
            {"headers": {"Scheduler-Attempt": "9"}},
            {"headers": {"Scheduler-Attempt": ["Scheduler-* headers are the scheduler's own."]}},
        ),
        ({"timeout": 301}, {"timeout": ["Must be at most 300 seconds (SCHEDULER_MAX_TIMEOUT)."]}),
        ({"retry": {"base": 10, "cap": 5}}, {"retry": {"cap": ["Must be at least base."]}}),
        (
            {"callback": "nowhere"},
            {"callback": ["Unknown endpoint 'nowhere'; configured: default."]},
        ),
    ]:
        with pytest.raises(client.InvalidRequest) as refused:
            api.insert(1, delay=60, **options)
        assert refused.value.fields == fields, options
    with pytest.raises(client.InvalidRequest) as in_batch:
        api.insert_batch([{"delay": 1}, {"delay": 1, "headers": {"Connection": "close"}}])
    assert in_batch.value.fields is not None and set(
        in_batch.value.fields["jobs"]["1"]["headers"]
    ) == {"Connection"}
    with pytest.raises(ValueError, match="retry: unknown keys"):
        api.insert(1, delay=60, retry={"base": 1, "max": 2})
    assert count_jobs(db) == 0
    job_id = api.insert(1, at=FUTURE, timeout=60)
    with pytest.raises(client.InvalidRequest) as edit:
        api.update(job_id, timeout=dt.timedelta(hours=1))
    assert edit.value.fields == {
        "timeout": ["Must be at most 300 seconds (SCHEDULER_MAX_TIMEOUT)."]
    }
    assert api.get(job_id).timeout == 60.0


def test_crons_carry_request_options_and_a_redefinition_without_them_drops_them(
    api: client.Client,
) -> None:
    made = api.put_cron(
        "report",
        "@hourly",
        path="reports/hourly",
        method="PUT",
        headers={"X-Secret-Thing": "s", "X-Kind": "report"},
        timeout=90,
        retry={"base": 1, "cap": 60},
        callback="default",
    )
    assert (made.path, made.method, made.timeout, made.retry, made.callback) == (
        "reports/hourly",
        "PUT",
        90.0,
        client.Retry(1.0, 60.0),
        "default",
    )
    assert made.headers == {"X-Secret-Thing": "[redacted]", "X-Kind": "report"}
    run = api.get(api.run_cron("report"))
    assert (run.path, run.method, run.headers, run.callback) == (
        "reports/hourly",
        "PUT",
        made.headers,
        "default",
    )
    api.set_crons(
        {
            "report": {"spec": "@hourly", "method": "DELETE", "timeout": dt.timedelta(seconds=5)},
            "plain": "@daily",
        }
    )
    report, plain = api.get_cron("report"), api.get_cron("plain")
    assert (report.method, report.timeout, report.path, report.headers, report.callback) == (
        "DELETE",
        5.0,
        None,
        {},
        None,
    )
    assert (plain.method, plain.headers, plain.retry) == ("POST", {}, None)
    with pytest.raises(client.InvalidRequest) as refused:
        api.set_crons({"report": {"spec": "@hourly", "path": "a\\b"}})
    assert refused.value.fields == {"jobs": {"0": {"path": ["Must not contain '\\'."]}}}
    with pytest.raises(ValueError, match="unknown keys"):
        api.set_crons({"report": {"spec": "@hourly", "verb": "PUT"}})


def test_a_cron_from_a_server_without_request_options_has_the_defaults(
    receiver: support.Receiver,
) -> None:
    shown = {"id": "report", "spec": "@hourly", "timezone": "UTC", "paused": True}
    shown["updated_at"] = "2030-01-01T00:00:00Z"
    base = receiver.url.removesuffix("/hook")
    with client.Client(base, support.SECRET) as older:
        receiver.answer = (json.dumps(shown).encode(), "application/json")
        cron = older.pause_cron("report")
    assert (cron.path, cron.method, cron.headers, cron.timeout, cron.retry, cron.callback) == (
        None,
        "POST",
        {},
        None,
        None,
        None,
    )
