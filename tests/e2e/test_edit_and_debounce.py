"""Edits and debounced inserts end to end: the Procfile's web and worker processes, a real
receiver, and the races between requests and the dispatcher's claims."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
from typing import Any

import psycopg
import pytest

from scheduler import client
from tests import support
from tests.e2e.conftest import System

pytestmark = pytest.mark.e2e


def delivered_bodies(system: System) -> dict[str, list[Any]]:
    """Each job id with the bodies delivered for it, in order."""
    found: dict[str, list[Any]] = {}
    for request in system.receiver.received():
        found.setdefault(request.json["id"], []).append(request.json["body"])
    return found


def test_an_edited_job_is_delivered_as_edited_under_its_id(system: System) -> None:
    system.start("web")
    system.start("worker")
    job_id = system.client.insert({"v": "old"}, delay=3600, idempotency_key="order-7")
    edited = system.client.update(job_id, body={"v": "new"}, delay=0.5, max_attempts=2)
    assert (edited.id, edited.state, edited.body) == (job_id, "scheduled", {"v": "new"})
    (request,) = system.receiver.wait_for(1, timeout=15)
    assert request.json == {"id": job_id, "cron_id": "", "body": {"v": "new"}}
    assert request.headers["Scheduler-Delivery-Id"] == job_id
    support.wait_until(lambda: system.client.get(job_id).state == "delivered", timeout=10)
    job = system.client.get(job_id)
    assert (job.attempts, job.max_attempts, len(job.history or ())) == (1, 2, 1)
    # The idempotency key still answers the job, and schedules nothing.
    again = system.client.insert({"v": "old"}, delay=3600, idempotency_key="order-7")
    assert again == job_id
    with pytest.raises(client.Conflict, match="is delivered: only a scheduled job"):
        system.client.update(job_id, body={"v": "newer"})
    refused = system.call("PATCH", f"/jobs/{job_id}", {"delay": -1})
    assert refused.status_code == 400
    assert set(refused.json()["error"]["fields"]) == {"delay"}


def test_edits_racing_the_dispatcher_are_sent_whole_or_refused(system: System, db_url: str) -> None:
    """Jobs come due while they are edited over and over: each is delivered once, with the body
    of the last edit that was answered 200; every later edit was a 409."""
    system.start("web")
    system.start("worker")
    start = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    ids = [
        system.client.insert({"edit": -1}, at=start + dt.timedelta(milliseconds=50 * n))
        for n in range(20)
    ]
    last_saved = dict.fromkeys(ids, -1)
    open_jobs = set(ids)
    edit = 0

    def edit_round() -> bool:
        nonlocal edit
        for job_id in sorted(open_jobs):
            edit += 1
            answer = system.call("PATCH", f"/jobs/{job_id}", {"body": {"edit": edit}})
            if answer.status_code == 200:
                last_saved[job_id] = edit
            else:
                assert answer.status_code == 409, answer.text
                assert (
                    answer.json()["error"]["message"]
                    .split(": ")[0]
                    .endswith(("is delivering", "is delivered"))
                )
                open_jobs.discard(job_id)
        return not open_jobs

    support.wait_until(edit_round, timeout=30, interval=0.0)
    support.wait_until(lambda: len(system.receiver.received()) >= len(ids), timeout=15)
    sent = delivered_bodies(system)
    assert sent == {job_id: [{"edit": last_saved[job_id]}] for job_id in ids}
    # The race was run: some jobs were edited after the first round and before their claim.
    assert any(saved > len(ids) for saved in last_saved.values())
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM jobs").fetchone() == (len(ids),)


def test_debounced_inserts_are_delivered_once_with_the_last_body(
    system: System, db_url: str
) -> None:
    system.start("web")
    system.start("worker")
    answers = [
        system.client.debounce("digest-7", {"change": n}, period=1.5, max_wait=30) for n in range(5)
    ]
    job_id = answers[0].id
    assert [(a.id, a.debounced) for a in answers] == [(job_id, n > 0) for n in range(5)]
    (request,) = system.receiver.wait_for(1, timeout=15)
    assert request.json == {"id": job_id, "cron_id": "", "body": {"change": 4}}
    support.wait_until(lambda: system.client.get(job_id).state == "delivered", timeout=10)
    # Claimed, it takes no more inserts: the next one starts a new job, delivered in its turn.
    after = system.client.debounce("digest-7", {"change": 5}, period=0.2)
    assert after.debounced is False and after.id != job_id
    system.receiver.wait_for(2, timeout=15)
    assert delivered_bodies(system) == {job_id: [{"change": 4}], after.id: [{"change": 5}]}
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM jobs").fetchone() == (2,)


def test_max_wait_bounds_a_stream_of_inserts(system: System, db_url: str) -> None:
    """Inserts every 0.2 s with a period of 1 s would put the job off for ever: max_wait makes
    it due 3 s after the first, and inserts after its claim start the next job."""
    system.start("web")
    system.start("worker")
    answers: list[client.Debounced] = []

    def insert_until_delivered() -> bool:
        answers.append(system.client.debounce("stream", {"n": len(answers)}, period=1, max_wait=3))
        return bool(system.receiver.received())

    support.wait_until(insert_until_delivered, timeout=20, interval=0.2)
    first = answers[0].id
    (request,) = system.receiver.received()[:1]
    assert request.json["id"] == first
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT run_at, created_at + interval '3 seconds', debounce_until FROM jobs"
            " WHERE id = %s",
            (first,),
        ).fetchone()
    assert row is not None and row[0] == row[1] == row[2]
    scheduled_at = dt.datetime.fromisoformat(request.headers["Scheduler-Scheduled-At"])
    assert scheduled_at == row[0].replace(microsecond=row[0].microsecond // 1000 * 1000)
    # The body sent is the last one that joined the job before its claim.
    joined = [n for n, answer in enumerate(answers) if answer.id == first]
    assert request.json["body"] == {"n": joined[-1]}
    assert all(answer.id != first for answer in answers[joined[-1] + 1 :])


def test_concurrent_debounced_inserts_make_one_delivery(system: System) -> None:
    system.start("web", WEB_CONCURRENCY="2")
    system.start("worker")

    def insert(n: int) -> client.Debounced:
        with client.Client(system.url, support.SECRET) as own:
            return own.debounce("burst", {"n": n}, period=2)

    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(insert, range(32)))
    assert len({answer.id for answer in answers}) == 1
    assert sorted(answer.debounced for answer in answers) == [False] + [True] * 31
    (request,) = system.receiver.wait_for(1, timeout=15)
    assert request.json["id"] == answers[0].id
    support.wait_until(lambda: system.client.get(answers[0].id).state == "delivered", timeout=10)
    assert len(system.receiver.received()) == 1


def test_a_bad_debounce_is_refused_with_nothing_scheduled(system: System, db_url: str) -> None:
    system.start("web")
    answer = system.call(
        "POST", "/insert", {"delay": 5, "debounce": {"key": "k", "period": 1}, "body": 1}
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["fields"] == {
        "delay": ["A debounced job is due `period` after its latest insert: give neither."]
    }
    batch = system.call("POST", "/jobs/batch", {"jobs": [{"debounce": {"key": "k", "period": 0}}]})
    assert batch.status_code == 400
    assert json.dumps(batch.json()["error"]["fields"]) == json.dumps(
        {
            "jobs": {
                "0": {
                    "debounce": {"period": ["Must be more than 0 seconds (and at most 316224000)."]}
                }
            }
        }
    )
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM jobs").fetchone() == (0,)
