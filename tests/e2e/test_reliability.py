"""Never lose a job: retries, failures, crashes, two dispatchers and a database outage."""

from __future__ import annotations

import collections
import datetime as dt
import itertools
import threading
import time

import psycopg
import pytest
import requests

from tests import support
from tests.e2e.conftest import System

pytestmark = pytest.mark.e2e

FAST_RETRIES = {"SCHEDULER_RETRY_BASE": "0.2", "SCHEDULER_RETRY_CAP": "0.8"}


def at(seconds: float) -> str:
    moment = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def job_row(db_url: str, job_id: str) -> tuple[str, int]:
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT state, attempts FROM jobs WHERE id = %s", (job_id,)).fetchone()
    assert row is not None
    return row[0], row[1]


def attempts_of(db_url: str, job_id: str) -> list[tuple[int, dt.datetime, int | None, str | None]]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(
            "SELECT attempt, started_at, status_code, error FROM delivery_attempts"
            " WHERE job_id = %s ORDER BY attempt",
            (job_id,),
        ).fetchall()


def wait_state(db_url: str, job_id: str, state: str, timeout: float = 20) -> None:
    support.wait_until(lambda: job_row(db_url, job_id)[0] == state, timeout, interval=0.1)


def test_retries_until_the_endpoint_answers_2xx(system: System) -> None:
    answers = iter([500, 500])
    system.receiver.respond = lambda request: (next(answers, 200), 0.0)
    system.start("web")
    system.start("worker", **FAST_RETRIES)
    job_id = system.insert(at(0.2), {"retry": "me"})

    wait_state(system.db_url, job_id, "delivered")
    received = system.receiver.received()
    assert [r.headers["Scheduler-Attempt"] for r in received] == ["1", "2", "3"]
    assert {r.headers["Scheduler-Delivery-Id"] for r in received} == {job_id}
    assert [(a, code) for a, _, code, _ in attempts_of(system.db_url, job_id)] == [
        (1, 500),
        (2, 500),
        (3, 200),
    ]


def test_always_failing_job_ends_failed_with_backoff_spacing(system: System) -> None:
    system.receiver.respond = lambda request: (503, 0.0)
    system.start("web")
    system.start("worker", SCHEDULER_RETRY_BASE="0.3", SCHEDULER_RETRY_CAP="1.2")
    response = system.call(
        "POST", "/insert", {"timestamp": at(0.2), "body": None, "max_attempts": 5}
    )
    job_id = response.json()["id"]

    wait_state(system.db_url, job_id, "failed", timeout=30)
    attempts = attempts_of(system.db_url, job_id)
    assert [a for a, *_ in attempts] == [1, 2, 3, 4, 5]
    assert all(code == 503 and error == "HTTP 503" for _, _, code, error in attempts)
    starts = [started for _, started, _, _ in attempts]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]
    bounds = [min(1.2, 0.3 * 2 ** (n - 1)) for n in range(1, 5)]
    print("backoff gaps:", [round(g, 3) for g in gaps], "upper bounds:", bounds)
    # Full jitter: each wait lies in [0, bound]; the slack covers timer and request latency.
    assert all(gap <= bound + 0.5 for gap, bound in zip(gaps, bounds, strict=True)), gaps
    time.sleep(1.5)
    assert len(system.receiver.received()) == 5, "a failed job is not retried again"


def test_timeouts_and_refused_connections_are_failed_attempts(system: System) -> None:
    stalls = iter([2.0])
    system.receiver.respond = lambda request: (200, next(stalls, 0.0))
    system.start("web")
    system.start("worker", SCHEDULER_READ_TIMEOUT="0.5", **FAST_RETRIES)
    job_id = system.insert(at(0.2), {"slow": True})
    wait_state(system.db_url, job_id, "delivered")
    first, second = attempts_of(system.db_url, job_id)
    assert first[2] is None and first[3] is not None and first[3].startswith("timeout")
    assert second[2] == 200

    closed = f"http://127.0.0.1:{support.free_port()}/nobody-home"
    worker = system.processes[-1]
    assert worker.stop() == 0
    system.start("worker", ENDPOINT=closed, **FAST_RETRIES)
    response = system.call("POST", "/insert", {"timestamp": at(0.1), "body": 1, "max_attempts": 2})
    refused_id = response.json()["id"]
    wait_state(system.db_url, refused_id, "failed")
    errors = [error for *_, error in attempts_of(system.db_url, refused_id)]
    assert len(errors) == 2
    assert all(error and error.startswith("connection failed") for error in errors), errors


def insert_many(system: System, count: int, timestamp: str) -> list[str]:
    ids: list[str] = []
    lock = threading.Lock()

    def work(chunk: range) -> None:
        with requests.Session() as session:
            for i in chunk:
                response = session.post(
                    system.url + "/insert",
                    json={"timestamp": timestamp, "body": {"n": i}},
                    headers={"Scheduler-Secret": support.SECRET},
                    timeout=10,
                )
                assert response.status_code == 200, response.text
                with lock:
                    ids.append(response.json()["id"])

    threads = [threading.Thread(target=work, args=(range(k, count, 8),)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(ids) == count
    return ids


def test_kill_9_during_a_burst_loses_nothing(system: System) -> None:
    system.receiver.respond = lambda request: (200, 0.02)
    system.start("web")
    worker = system.start("worker", SCHEDULER_DELIVERY_THREADS="4")
    ids = insert_many(system, 300, at(2))

    system.receiver.wait_for(60, timeout=20)
    worker.kill()
    killed_at = len(system.receiver.received())
    system.start("worker", SCHEDULER_DELIVERY_THREADS="4")
    support.wait_until(lambda: states_of(system.db_url) == {"delivered": 300}, timeout=60)
    counts = collections.Counter(r.json["id"] for r in system.receiver.received())
    duplicates = sum(n - 1 for n in counts.values())
    print(f"kill -9 after {killed_at} deliveries: 300 jobs, {duplicates} delivered twice")
    assert set(counts) == set(ids)


def states_of(db_url: str) -> dict[str, int]:
    with psycopg.connect(db_url) as conn:
        return dict(conn.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall())
