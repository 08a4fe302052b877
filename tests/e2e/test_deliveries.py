"""End to end: the Procfile's web and worker as subprocesses, a real receiver, real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import signal
import threading
import time

import psycopg
import pytest
import requests

from tests import support
from tests.e2e.conftest import System

pytestmark = pytest.mark.e2e


def at(seconds: float) -> str:
    moment = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_job_arrives_on_time_with_the_seed_payload(system: System) -> None:
    system.start("web")
    system.start("worker")
    due = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)
    job_id = system.insert(due.isoformat(timespec="milliseconds"), {"foo": "bar", "n": [1, 2]})

    (request,) = system.receiver.wait_for(1, timeout=15)
    assert request.method == "POST"
    assert request.path == "/hook"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Scheduler-Secret"] == support.SECRET
    assert request.headers["Scheduler-Delivery-Id"] == job_id
    assert request.headers["Scheduler-Attempt"] == "1"
    assert request.json == {"id": job_id, "cron_id": "", "body": {"foo": "bar", "n": [1, 2]}}
    lateness = request.arrived_at - due.timestamp()
    print(f"lateness of a job inserted 2 s ahead: {lateness * 1000:.1f} ms")
    assert lateness >= 0
    with psycopg.connect(system.db_url) as conn:
        state = wait_for_state(conn, job_id, "delivered")
        attempts = conn.execute(
            "SELECT attempt, status_code FROM delivery_attempts WHERE job_id = %s", (job_id,)
        ).fetchall()
    assert state == "delivered"
    assert attempts == [(1, 200)]


def test_job_due_after_the_announce_horizon_is_found_by_the_periodic_look(
    system: System,
) -> None:
    # SCHEDULER_POLL_INTERVAL=0.5 here: jobs due more than 5.5 s ahead send no notification.
    system.start("web")
    system.start("worker")
    due = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=7.5)
    job_id = system.insert(due.isoformat(timespec="milliseconds"), {"far": True})

    (request,) = system.receiver.wait_for(1, timeout=20)
    assert request.headers["Scheduler-Delivery-Id"] == job_id
    lateness = request.arrived_at - due.timestamp()
    print(f"lateness of a job found by the periodic look: {lateness * 1000:.1f} ms")
    assert 0 <= lateness < 1.5


def wait_for_state(conn: psycopg.Connection, job_id: str, state: str) -> str:
    def current() -> str | None:
        row = conn.execute("SELECT state FROM jobs WHERE id = %s", (job_id,)).fetchone()
        conn.commit()
        return row[0] if row and row[0] == state else None

    found: str = support.wait_until(current, timeout=10)
    return found


def test_past_timestamp_fires_at_once_and_deleted_job_never(system: System) -> None:
    system.start("web")
    system.start("worker")
    doomed = system.insert(at(1.5), {"doomed": True})
    assert system.call("POST", "/delete", {"id": doomed}).status_code == 200
    past = system.insert("2020-01-01T00:00:00+02:00", {"late": True})
    marker = system.insert(at(2.5), {"marker": True})

    system.receiver.wait_for(2, timeout=15)
    time.sleep(0.5)
    bodies = [r.json for r in system.receiver.received()]
    assert {"id": past, "cron_id": "", "body": {"late": True}} in bodies
    assert {"id": marker, "cron_id": "", "body": {"marker": True}} in bodies
    assert all(b["id"] != doomed for b in bodies)


def test_every_second_cron_fires_and_stops_when_replaced(system: System) -> None:
    system.start("web")
    system.start("worker")
    response = system.call("POST", "/cron", {"jobs": [{"id": "tick", "spec": "* * * * * *"}]})
    assert response.status_code == 200
    system.receiver.wait_for(4, timeout=15)
    assert system.call("POST", "/cron", {"jobs": []}).status_code == 200
    stopped_at = time.time()
    time.sleep(2.5)

    fires = system.receiver.received()
    assert all(r.json == {"id": "", "cron_id": "tick", "body": None} for r in fires)
    scheduled = [r.headers["Scheduler-Scheduled-At"] for r in fires]
    assert len(scheduled) == len(set(scheduled)), "a tick was delivered twice"
    ticks = sorted(dt.datetime.fromisoformat(s).timestamp() for s in scheduled)
    assert all(t == int(t) for t in ticks), "cron ticks fall on whole seconds"
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert all(g == 1 for g in gaps), gaps
    late = [r for r in fires if r.arrived_at > stopped_at + 0.5]
    assert late == [], "the cron kept firing after it was replaced by []"


def test_job_due_while_dispatcher_was_down_arrives_after_restart(system: System) -> None:
    system.start("web")
    worker = system.start("worker")
    assert worker.stop() == 0
    job_id = system.insert(at(0.5), {"while": "down"})
    time.sleep(1.5)
    assert system.receiver.received() == []

    system.start("worker")
    (request,) = system.receiver.wait_for(1, timeout=15)
    assert request.json["id"] == job_id


def test_sigterm_lets_in_flight_delivery_finish(system: System) -> None:
    system.receiver.respond = lambda request: (200, 2.0)
    system.start("web")
    worker = system.start("worker")
    job_id = system.insert(at(0.2), {"slow": True})
    system.receiver.wait_for(1, timeout=10)
    worker.signal(signal.SIGTERM)
    assert worker.proc is not None
    assert worker.proc.wait(15) == 0
    with psycopg.connect(system.db_url) as conn:
        row = conn.execute("SELECT state FROM jobs WHERE id = %s", (job_id,)).fetchone()
    assert row == ("delivered",)


def test_sigterm_gives_back_claimed_deliveries_not_yet_started(system: System) -> None:
    system.receiver.respond = lambda request: (200, 2.0)
    system.start("web")
    worker = system.start("worker", SCHEDULER_DELIVERY_THREADS="1")
    first = system.insert(at(0.2), {"n": 1})
    second = system.insert(at(0.2), {"n": 2})
    (arrived,) = system.receiver.wait_for(1, timeout=10)
    worker.signal(signal.SIGTERM)
    assert worker.proc is not None
    assert worker.proc.wait(15) == 0
    sent = arrived.json["id"]
    held = second if sent == first else first
    with psycopg.connect(system.db_url) as conn:
        rows = dict(
            (row[0], row[1:])
            for row in conn.execute("SELECT id, state, attempts FROM jobs").fetchall()
        )
    assert rows[sent] == ("delivered", 1)
    # Claimed alongside the first (two slots per thread), never sent: due again, no attempt spent.
    assert rows[held] == ("scheduled", 0)
    assert len(system.receiver.received()) == 1


@pytest.mark.parametrize("name", ["web", "worker"])
@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DATABASE_URL", ""),
        ("SECRET", ""),
        ("ENDPOINT", ""),
        ("ENDPOINT", "ftp://x"),
        ("DATABASE_URL", "mysql://x"),
    ],
)
def test_processes_refuse_to_start_without_configuration(
    system: System, name: str, variable: str, value: str
) -> None:
    process = support.Process(name, dict(system.env, **{variable: value}), system.logs).start()
    assert process.proc is not None
    code = process.proc.wait(30)
    process.log.close()
    assert code != 0
    lines = [line for line in process.output().splitlines() if variable in line]
    assert lines, process.output()
    assert "Traceback" not in process.output()
    print(json.dumps(lines))


def test_web_sigterm_drops_no_accepted_insert(system: System) -> None:
    web = system.start("web")
    accepted: list[str] = []
    refused: list[str] = []
    stop = threading.Event()

    def client() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                try:
                    response = session.post(
                        system.url + "/insert",
                        json={"timestamp": "2031-01-01T00:00:00Z", "body": {}},
                        headers={"Scheduler-Secret": support.SECRET},
                        timeout=5,
                    )
                except requests.RequestException as exc:
                    refused.append(type(exc).__name__)
                    time.sleep(0.01)
                    continue
                assert response.status_code == 200, response.text
                accepted.append(response.json()["id"])

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    support.wait_until(lambda: len(accepted) >= 50, timeout=10)
    web.signal(signal.SIGTERM)
    assert web.proc is not None
    assert web.proc.wait(30) == 0
    stop.set()
    for thread in threads:
        thread.join()
    with psycopg.connect(system.db_url) as conn:
        stored = {row[0] for row in conn.execute("SELECT id FROM jobs")}
    print(f"{len(accepted)} inserts accepted, {len(refused)} refused after SIGTERM")
    assert stored == set(accepted)
