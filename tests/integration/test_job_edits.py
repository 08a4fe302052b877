"""PATCH /jobs/<id>: a scheduled job edited in place, through the app on a real database, and the
edit racing the dispatchers' claims on the job's row."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from typing import Any

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient
from psycopg.rows import dict_row

from scheduler import config, jobs
from scheduler.storage import cluster, crons, db, deliveries, endpoints, outcomes
from scheduler.storage import jobs as job_rows
from tests import support

FUTURE = "2031-01-01T00:00:00Z"
LATER = "2032-06-01T12:00:00.500Z"


BILLING = config.Endpoint("billing", "http://127.0.0.1:9/billing", (support.SECRET,))


@pytest.fixture
def settings(settings: config.Settings) -> config.Settings:
    return dataclasses.replace(settings, named_endpoints=(BILLING,))


def insert(client: FlaskClient, auth: dict[str, str], **payload: Any) -> str:
    payload.setdefault("timestamp", FUTURE)
    response = client.post("/insert", json=payload, headers=auth)
    assert response.status_code == 200, response.get_json()
    job_id: str = response.get_json()["id"]
    return job_id


def patch(client: FlaskClient, auth: dict[str, str], job_id: str, payload: Any) -> Any:
    return client.patch(f"/jobs/{job_id}", json=payload, headers=auth)


def stored(db_url: str, job_id: str) -> dict[str, Any]:
    with psycopg.connect(db_url, row_factory=dict_row) as conn:
        found = conn.execute("SELECT * FROM jobs WHERE id = %s", (job_id,)).fetchone()
    assert found is not None
    return found


def test_an_edit_changes_each_field_and_answers_the_job_as_get_shows_it(
    client: FlaskClient, auth: dict[str, str], db_url: str
) -> None:
    job_id = insert(client, auth, body={"v": 1}, max_attempts=3)
    before = client.get(f"/jobs/{job_id}", headers=auth).get_json()
    # Sent as text: 1.50 keeps its digits, as in an insert.
    edit = (
        f'{{"timestamp": "{LATER}", "body": {{"v": 2, "exact": 1.50}}, "max_attempts": 7,'
        ' "endpoint": "billing", "flow": {"key": "tenant-1", "rate": 2}}'
    )
    response = client.patch(f"/jobs/{job_id}", data=edit, headers=auth)
    assert response.status_code == 200, response.get_json()
    edited = response.get_json()
    assert edited == client.get(f"/jobs/{job_id}", headers=auth).get_json()
    assert (edited["id"], edited["created_at"]) == (job_id, before["created_at"])
    assert edited["body"] == {"v": 2, "exact": 1.50}
    assert (edited["timestamp"], edited["next_attempt_at"]) == (LATER, LATER)
    assert (edited["max_attempts"], edited["endpoint"], edited["flow_key"]) == (
        7,
        "billing",
        "tenant-1",
    )
    assert edited["state"] == "scheduled" and edited["history"] == []
    assert edited["updated_at"] > before["updated_at"]
    with psycopg.connect(db_url) as conn:
        limits = conn.execute(
            "SELECT rate_limit FROM flows WHERE endpoint = 'billing' AND key = 'tenant-1'"
        ).fetchone()
        # The body is stored as it was sent: 1.50 keeps its digits.
        text = conn.execute("SELECT body::text FROM jobs WHERE id = %s", (job_id,)).fetchone()
    assert limits == (2.0,)
    assert text == ('{"v": 2, "exact": 1.50}',)


def test_a_field_left_out_stays_and_nulls_mean_what_they_say(
    client: FlaskClient, auth: dict[str, str], db_url: str
) -> None:
    job_id = insert(client, auth, body={"v": 1}, max_attempts=3, flow={"key": "k"})
    edited = patch(client, auth, job_id, {"body": None}).get_json()
    assert edited["body"] is None
    assert (edited["timestamp"], edited["max_attempts"], edited["flow_key"]) == (FUTURE, 3, "k")
    edited = patch(client, auth, job_id, {"max_attempts": None, "flow": None}).get_json()
    # null: the default budget (SCHEDULER_MAX_ATTEMPTS), and no flow key.
    assert (edited["max_attempts"], edited["flow_key"]) == (8, None)


def test_a_delay_counts_from_the_edit_on_the_database_clock(
    client: FlaskClient, auth: dict[str, str], db_url: str
) -> None:
    job_id = insert(client, auth)
    response = patch(client, auth, job_id, {"delay": "PT1H"})
    assert response.status_code == 200
    row = stored(db_url, job_id)
    assert row["run_at"] == row["next_attempt_at"] == row["updated_at"] + dt.timedelta(hours=1)


def test_an_edit_keeps_the_idempotency_key_s_answer(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    request = {"timestamp": FUTURE, "body": 1, "idempotency_key": "order-42"}
    job_id = insert(client, auth, **request)
    assert patch(client, auth, job_id, {"body": 2}).status_code == 200
    # A repeat of the insert still answers the same job and schedules nothing; the job keeps
    # its edit.
    assert insert(client, auth, **request) == job_id
    listed = client.get("/jobs", headers=auth).get_json()["jobs"]
    assert [(job["id"], job["body"]) for job in listed] == [(job_id, 2)]


def test_an_edit_of_a_job_waiting_for_a_retry_keeps_its_attempts_and_history(
    client: FlaskClient, auth: dict[str, str], database: db.Database, db_url: str
) -> None:
    job_id = insert(client, auth, timestamp="2020-01-01T00:00:00Z", max_attempts=3)
    (claimed,) = deliveries.claim_due_jobs(database, "one", 60, 10)
    failure(database, claimed)
    assert patch(client, auth, job_id, {"max_attempts": 1}).status_code == 409
    refused = patch(client, auth, job_id, {"max_attempts": 1, "body": 2})
    assert refused.get_json()["error"]["fields"] == {
        "max_attempts": ["Must be more than the 1 attempts the job has made."]
    }
    assert stored(db_url, job_id)["body"] is None  # nothing of the refused edit was written
    edited = patch(client, auth, job_id, {"timestamp": LATER, "max_attempts": 2}).get_json()
    assert (edited["state"], edited["attempts"], edited["max_attempts"]) == ("scheduled", 1, 2)
    assert edited["next_attempt_at"] == LATER
    assert [(a["attempt"], a["status_code"]) for a in edited["history"]] == [(1, 500)]


def failure(database: db.Database, claimed: jobs.Delivery) -> None:
    """The claimed delivery's attempt failed, and it is due again in a minute."""
    record = outcomes.AttemptRecord(
        job_id=claimed.id,
        attempt=claimed.attempts,
        started_at=dt.datetime.now(dt.UTC),
        duration_ms=3,
        status_code=500,
        error="HTTP 500",
        response_excerpt=None,
        error_kind="http_500",
    )
    settled = outcomes.Settlement(record, claimed.claim_token, "scheduled", 60.0)
    outcomes.settle_deliveries(database, [settled])


@pytest.mark.parametrize("state", ["delivering", "delivered", "failed", "cancelled"])
def test_a_job_in_flight_or_finished_is_a_409_naming_its_state(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection, db_url: str, state: str
) -> None:
    job_id = insert(client, auth, body=1)
    db.execute("UPDATE jobs SET state = %s WHERE id = %s", (state, job_id))
    before = stored(db_url, job_id)
    response = patch(client, auth, job_id, {"body": 2})
    assert response.status_code == 409
    error = response.get_json()["error"]
    assert error["code"] == "conflict"
    assert f"is {state}: only a scheduled job can be edited" in error["message"]
    assert stored(db_url, job_id) == before


def test_a_cron_s_run_and_an_unknown_job_cannot_be_edited(
    client: FlaskClient, auth: dict[str, str], database: db.Database
) -> None:
    assert client.put("/cron/nightly", json={"spec": "@daily"}, headers=auth).status_code == 200
    run_id = jobs.new_job_id()
    crons.run_cron_now(database, "nightly", run_id, 3)
    response = patch(client, auth, run_id, {"delay": 60})
    assert response.status_code == 409
    assert "run of cron 'nightly'" in response.get_json()["error"]["message"]
    for job_id in ["01m8dd8yqdh7n7gfnsea966a31", "bad id"]:
        response = patch(client, auth, job_id, {"body": 1})
        assert response.status_code == 404
        assert response.get_json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("payload", "fields"),
    [
        (
            {},
            {"timestamp", "delay", "body", "max_attempts", "endpoint", "flow"}
            | {"path", "method", "headers", "timeout", "retry", "callback"},
        ),
        ({"timestamp": FUTURE, "delay": 5}, {"timestamp", "delay"}),
        ({"timestamp": "tomorrow"}, {"timestamp"}),
        ({"timestamp": None}, {"timestamp"}),
        ({"delay": -1}, {"delay"}),
        ({"delay": "P1Y"}, {"delay"}),
        ({"max_attempts": 0}, {"max_attempts"}),
        ({"max_attempts": "5"}, {"max_attempts"}),
        ({"max_attempts": 101}, {"max_attempts"}),
        ({"endpoint": "nowhere"}, {"endpoint"}),
        ({"endpoint": None}, {"endpoint"}),
        ({"flow": {"key": ""}}, {"flow"}),
        ({"flow": {"key": "k", "rate": "5"}}, {"flow"}),
        ({"body": 1, "debounce": {"key": "k", "period": 1}}, {"debounce"}),
        ({"body": 1, "id": "other"}, {"id"}),
    ],
)
def test_bad_input_is_a_400_naming_the_field_and_writes_nothing(
    client: FlaskClient,
    auth: dict[str, str],
    db_url: str,
    payload: dict[str, Any],
    fields: set[str],
) -> None:
    job_id = insert(client, auth, body={"v": 1})
    before = stored(db_url, job_id)
    response = patch(client, auth, job_id, payload)
    assert response.status_code == 400, response.get_json()
    assert set(response.get_json()["error"]["fields"]) == fields
    assert stored(db_url, job_id) == before


def test_bodies_that_are_not_an_edit_are_refused(
    client: FlaskClient, auth: dict[str, str], app: Flask, db_url: str
) -> None:
    job_id = insert(client, auth, body={"v": 1})
    before = stored(db_url, job_id)
    for data, status, code in [
        ("[1]", 400, "invalid_request"),
        ("{", 400, "invalid_json"),
        ('{"body": "\\u0000"}', 400, "invalid_json"),
    ]:
        response = client.patch(f"/jobs/{job_id}", data=data, headers=auth)
        assert (response.status_code, response.get_json()["error"]["code"]) == (status, code)
    limit = app.config["SETTINGS"].max_body_bytes
    # Within the request limit as sent, over it as stored (1e300 is written out in full).
    response = patch(client, auth, job_id, {"body": [1e300] * (limit // 250)})
    assert response.status_code == 413
    assert set(response.get_json()["error"]["fields"]) == {"body"}
    assert stored(db_url, job_id) == before


def test_a_job_moved_to_another_endpoint_takes_its_flow_key_with_its_limits(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    job_id = insert(client, auth, flow={"key": "tenant-1", "rate": 3, "max_in_flight": 2})
    edited = patch(client, auth, job_id, {"endpoint": "billing"}).get_json()
    assert (edited["endpoint"], edited["flow_key"]) == ("billing", "tenant-1")
    limits = db.execute(
        "SELECT endpoint, rate_limit, max_in_flight FROM flows WHERE key = 'tenant-1'"
        " ORDER BY endpoint"
    ).fetchall()
    assert limits == [("billing", 3.0, 2), ("default", 3.0, 2)]


def test_a_new_time_replaces_a_run_asked_for(
    client: FlaskClient, auth: dict[str, str], db_url: str
) -> None:
    job_id = insert(client, auth)
    assert client.post(f"/jobs/{job_id}/run", headers=auth).status_code == 202
    patch(client, auth, job_id, {"body": 2})
    assert stored(db_url, job_id)["run_requested"] is True
    patch(client, auth, job_id, {"timestamp": LATER})
    row = stored(db_url, job_id)
    assert (row["run_requested"], row["next_attempt_at"]) == (
        False,
        dt.datetime(2032, 6, 1, 12, 0, 0, 500000, tzinfo=dt.UTC),
    )


def test_an_edit_due_soon_wakes_the_dispatchers(
    client: FlaskClient, auth: dict[str, str], db_url: str
) -> None:
    job_id = insert(client, auth)
    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute("LISTEN scheduler")
        assert patch(client, auth, job_id, {"body": 2}).status_code == 200
        assert patch(client, auth, job_id, {"delay": 1}).status_code == 200
        payloads = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
    # The first edit left it due in 2031: no notice. The second made it due within a second.
    (payload,) = payloads
    kind, due_in = payload.split()
    assert kind == "j" and 0 < float(due_in) <= 1


# --- the edit and the claim -----------------------------------------------------------------


def claim_params(limit: int = 10) -> dict[str, Any]:
    """claim_due_jobs' parameters, as deliveries.claim_due_jobs builds them with no shares."""
    return {
        "dispatcher_id": "racer",
        "lease_seconds": 60,
        "limit": limit,
        "held": [],
        "known": [],
        "ahead": 0.0,
        "grace": 0.0,
        "shared": [],
        "rooms": [],
        "holding": [],
        "newcomer": limit,
    }


def waiting_for_a_lock(db_url: str) -> bool:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone()
    return row is not None and row[0] > 0


def test_a_claim_that_commits_first_makes_the_edit_a_409(
    client: FlaskClient, auth: dict[str, str], db_url: str
) -> None:
    job_id = insert(client, auth, timestamp="2020-01-01T00:00:00Z", body=1)
    answers: list[Any] = []
    with psycopg.connect(db_url) as claimer:
        # The claim has taken the row and not committed yet.
        claimed = claimer.execute(deliveries.QUERIES["claim_due_jobs"], claim_params()).fetchall()
        assert [row[0] for row in claimed] == [job_id]
        editor = threading.Thread(
            target=lambda: answers.append(patch(client, auth, job_id, {"body": 2}))
        )
        editor.start()
        # The edit waits for the claim's row lock (FOR UPDATE, not SKIP LOCKED)...
        support.wait_until(lambda: waiting_for_a_lock(db_url), timeout=10)
        claimer.commit()
    editor.join(timeout=10)
    # ...and then reads what the claim committed.
    (response,) = answers
    assert response.status_code == 409
    assert "is delivering" in response.get_json()["error"]["message"]
    assert stored(db_url, job_id)["body"] == 1


def test_an_edit_in_progress_is_skipped_by_a_claim_which_then_sends_it_as_edited(
    client: FlaskClient, auth: dict[str, str], database: db.Database, db_url: str
) -> None:
    job_id = insert(client, auth, timestamp="2020-01-01T00:00:00Z", body=1, flow={"key": "k"})
    answers: list[Any] = []
    with psycopg.connect(db_url) as blocker:
        # Hold the key's row, which the edit refreshes after it has locked the job's row: the
        # edit stops half-way, its lock held and nothing of it committed.
        blocker.execute("SELECT 1 FROM flows WHERE key = 'k' FOR UPDATE")
        editor = threading.Thread(
            target=lambda: answers.append(
                patch(client, auth, job_id, {"body": 2, "flow": {"key": "k"}})
            )
        )
        editor.start()
        support.wait_until(lambda: waiting_for_a_lock(db_url), timeout=10)
        assert claim_keyed(database).claimed == []  # skipped, not waited for
        blocker.commit()
    editor.join(timeout=10)
    assert [r.status_code for r in answers] == [200]
    (claimed,) = claim_keyed(database).claimed
    assert (claimed.id, claimed.body) == (job_id, "2")


def claim_keyed(database: db.Database) -> deliveries.EndpointClaim:
    return deliveries.claim_endpoint_jobs(
        database, "racer", 60, 10, "default", endpoints.EndpointLimits(None, None), keyed=True
    )


def test_edits_racing_claims_are_sent_whole_or_refused(
    app: Flask, auth: dict[str, str], database: db.Database
) -> None:
    """Each round, an edit and a claim race for one due job: either the edit answered 200 and
    the claim (then or at the next look) took the edited job, or it answered 409 and the claim
    had taken the job as it was. Never a mix."""
    client = app.test_client()
    outcomes_seen: set[int] = set()
    for round_number in range(30):
        due = cluster.database_now(database) - dt.timedelta(seconds=1)
        job_id = jobs.new_job_id()
        old = f'{{"v": "old", "round": {round_number}}}'
        job_rows.insert_jobs(database, [jobs.NewJob(job_id, old, due, 3)])
        start = threading.Barrier(2)
        answers: list[Any] = []

        def edit(
            job_id: str = job_id,
            start: threading.Barrier = start,
            answers: list[Any] = answers,
        ) -> None:
            start.wait()
            answers.append(patch(client, auth, job_id, {"body": {"v": "new", "id": job_id}}))

        editor = threading.Thread(target=edit)
        editor.start()
        start.wait()
        claimed = deliveries.claim_due_jobs(database, "racer", 60, 10)
        editor.join(timeout=10)
        if not claimed:
            # The edit held the row: the next look takes it, edited.
            claimed = deliveries.claim_due_jobs(database, "racer", 60, 10)
        (delivery,) = claimed
        (response,) = answers
        assert delivery.id == job_id
        if response.status_code == 200:
            assert delivery.body == f'{{"v": "new", "id": "{job_id}"}}'
        else:
            assert response.status_code == 409
            assert delivery.body == old
        outcomes_seen.add(response.status_code)
    assert outcomes_seen <= {200, 409}
