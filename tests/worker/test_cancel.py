"""A cancel wins, end to end in one process: a whole dispatcher sends to a real receiver that holds
its answer while the API cancels the job (or removes its cron); the attempt in flight finishes, is
recorded, and no other starts."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from flask.testing import FlaskClient

from scheduler import config, tuning
from scheduler.web import app as app_module
from scheduler.worker import dispatcher
from tests import support

AUTH = {"Scheduler-Secret": support.SECRET}
# Marks what the receiver holds: a job whose body has this field true, or a run of the cron of
# this id.
HELD = "held"


class Held:
    """The receiver holds its answer to what HELD marks until `answer` gives it."""

    def __init__(self, receiver: support.Receiver) -> None:
        self.status = 500
        self.release = threading.Event()

        def respond(request: support.Received) -> tuple[int, float]:
            if not _is_held(request):
                return 200, 0.0
            self.release.wait(30)
            return self.status, 0.0

        receiver.respond = respond

    def answer(self, status: int) -> None:
        self.status = status
        self.release.set()


def _is_held(request: support.Received) -> bool:
    body = request.json.get("body")
    if request.json.get("cron_id") == HELD:
        return True
    return isinstance(body, dict) and body.get(HELD) is True


@pytest.fixture
def held(receiver: support.Receiver) -> Iterator[Held]:
    holding = Held(receiver)
    yield holding
    holding.release.set()


@pytest.fixture
def settings(make_settings: Callable[..., config.Settings]) -> config.Settings:
    # Failure notifications on, to the same receiver: a cancelled job must never make one.
    return make_settings(SCHEDULER_FAILURE_ENDPOINT="default", SCHEDULER_LEADER_TIMEOUT="5")


@pytest.fixture
def client(settings: config.Settings) -> Iterator[FlaskClient]:
    flask_app = app_module.create_app(settings)
    flask_app.extensions["scheduler.database"].pool.wait()
    yield flask_app.test_client()
    flask_app.extensions["scheduler.database"].pool.close()


@pytest.fixture
def running(settings: config.Settings, held: Held) -> Iterator[dispatcher.Dispatcher]:
    each = dispatcher.Dispatcher(settings)
    each.start()
    yield each
    held.release.set()
    assert each.stop(5)


def job(client: FlaskClient, job_id: str) -> dict[str, Any]:
    answer = client.get(f"/jobs/{job_id}", headers=AUTH)
    assert answer.status_code == 200
    document: dict[str, Any] = answer.get_json()
    return document


def insert(client: FlaskClient, body: Any, max_attempts: int = 3) -> str:
    payload = {"delay": 0, "body": body, "max_attempts": max_attempts}
    answer = client.post("/insert", json=payload, headers=AUTH)
    assert answer.status_code == 200
    job_id: str = answer.get_json()["id"]
    return job_id


def ended(client: FlaskClient, job_id: str) -> dict[str, Any]:
    """The job once its attempt in flight is settled."""
    return support.wait_until(
        lambda: (found := job(client, job_id))["state"] != "delivering" and found, timeout=10
    )


def requests_for(receiver: support.Receiver, job_id: str) -> int:
    return sum(1 for r in receiver.received() if r.json.get("id") == job_id)


def goes_on(client: FlaskClient, receiver: support.Receiver) -> None:
    """Wait until a job inserted now is delivered: the dispatcher goes on sending, and anything
    due before that job (a retry due at once, a failure notification) had its turn first."""
    later = insert(client, {"after": True})
    support.wait_until(lambda: requests_for(receiver, later), timeout=10)
    assert ended(client, later)["state"] == "delivered"


def claimed_longer_than(settings: config.Settings, job_id: str, seconds: float) -> bool:
    """Whether the job's claim is more than `seconds` old by the database's clock."""
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute(
            "SELECT now() - updated_at > make_interval(secs => %s) FROM jobs WHERE id = %s",
            (seconds, job_id),
        ).fetchone()
    return bool(row and row[0])


def cancel(client: FlaskClient, route: str, job_id: str) -> None:
    if route == "/delete":
        assert client.post("/delete", json={"id": job_id}, headers=AUTH).status_code == 200
    else:
        assert client.delete(f"/jobs/{job_id}", headers=AUTH).status_code == 204


@pytest.mark.parametrize(
    ("route", "max_attempts"),
    [("/delete", 3), ("DELETE /jobs/<id>", 3), ("/delete", 1)],
    ids=["delete-retries-left", "jobs-route-retries-left", "delete-last-attempt"],
)
def test_a_cancel_during_an_attempt_that_fails_ends_the_job_cancelled(
    client: FlaskClient,
    receiver: support.Receiver,
    held: Held,
    running: dispatcher.Dispatcher,
    route: str,
    max_attempts: int,
) -> None:
    job_id = insert(client, {HELD: True}, max_attempts)
    receiver.wait_for(1)
    cancel(client, route, job_id)
    in_flight = job(client, job_id)
    assert in_flight["state"] == "delivering"
    assert in_flight["cancel_requested_at"] is not None
    listed = client.get("/jobs?state=delivering", headers=AUTH).get_json()["jobs"]
    assert [j["cancel_requested_at"] for j in listed] == [in_flight["cancel_requested_at"]]

    held.answer(500)
    final = ended(client, job_id)
    goes_on(client, receiver)

    assert (final["state"], final["attempts"], final["last_status"]) == ("cancelled", 1, 500)
    assert final["finished_at"] is not None
    assert [(a["attempt"], a["status_code"]) for a in final["history"]] == [(1, 500)]
    assert requests_for(receiver, job_id) == 1
    # A failure notification is a job, written in the transaction that ends the job failed.
    listed = client.get("/jobs", headers=AUTH).get_json()["jobs"]
    assert [j["body"].get("event") for j in listed if isinstance(j["body"], dict)] == [None] * 2
    assert not [r for r in receiver.received() if r.json.get("event") == "job.failed"]


def test_a_cancel_during_an_attempt_that_delivers_ends_the_job_delivered(
    client: FlaskClient, receiver: support.Receiver, held: Held, running: dispatcher.Dispatcher
) -> None:
    job_id = insert(client, {HELD: True})
    receiver.wait_for(1)
    cancel(client, "/delete", job_id)
    held.answer(200)
    final = ended(client, job_id)
    assert (final["state"], final["attempts"], final["last_status"]) == ("delivered", 1, 200)
    assert final["cancel_requested_at"] is not None
    assert requests_for(receiver, job_id) == 1


@pytest.mark.parametrize("removal", ["POST /cron", "DELETE /cron/<id>"])
def test_a_removed_cron_s_run_in_flight_ends_cancelled(
    client: FlaskClient,
    receiver: support.Receiver,
    held: Held,
    running: dispatcher.Dispatcher,
    removal: str,
) -> None:
    put = client.put(f"/cron/{HELD}", json={"spec": "0 3 1 1 *"}, headers=AUTH)
    assert put.status_code == 200
    run = client.post(f"/cron/{HELD}/run", headers=AUTH)
    assert run.status_code == 202
    job_id = run.get_json()["id"]
    receiver.wait_for(1)
    if removal == "POST /cron":
        assert client.post("/cron", json={"jobs": []}, headers=AUTH).status_code == 200
    else:
        assert client.delete(f"/cron/{HELD}", headers=AUTH).status_code == 204
    assert job(client, job_id)["cancel_requested_at"] is not None

    held.answer(503)
    final = ended(client, job_id)
    goes_on(client, receiver)

    assert (final["state"], final["attempts"]) == ("cancelled", 1)
    assert [a["status_code"] for a in final["history"]] == [503]
    assert sum(1 for r in receiver.received() if r.json.get("cron_id") == HELD) == 1


def test_a_job_claimed_behind_a_busy_thread_and_cancelled_is_never_sent(
    make_settings: Callable[..., config.Settings],
    client: FlaskClient,
    receiver: support.Receiver,
) -> None:
    first = threading.Event()
    release = threading.Event()

    def respond(request: support.Received) -> tuple[int, float]:
        if not first.is_set():
            first.set()
            release.wait(30)
        return 200, 0.0

    receiver.respond = respond
    settings = make_settings(SCHEDULER_DELIVERY_THREADS="1")
    window = tuning.CLAIM_AHEAD_SECONDS
    running = dispatcher.Dispatcher(settings)
    running.start()
    try:
        both = [{"delay": 0, "body": n} for n in range(2)]
        ids = client.post("/jobs/batch", json={"jobs": both}, headers=AUTH).get_json()["ids"]
        (sent,) = receiver.wait_for(1)
        (queued,) = [job_id for job_id in ids if job_id != sent.json["id"]]
        cancel(client, "/delete", queued)
        # The rule's one exception is a delivery claimed at most the claim-ahead window before
        # it starts: keep the thread busy past that.
        support.wait_until(lambda: claimed_longer_than(settings, queued, window), timeout=10)
        release.set()
        goes_on(client, receiver)
    finally:
        release.set()
        assert running.stop(5)
    assert requests_for(receiver, queued) == 0
    assert job(client, queued)["state"] == "cancelled"
