"""The /jobs API and idempotent inserts, against the real app and database."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import threading
from typing import Any

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient

from scheduler.storage import db, deliveries, outcomes

FUTURE = "2031-01-01T00:00:00Z"


def insert(client: FlaskClient, auth: dict[str, str], **payload: Any) -> str:
    payload.setdefault("timestamp", FUTURE)
    response = client.post("/insert", json=payload, headers=auth)
    assert response.status_code == 200, response.get_json()
    job_id: str = response.get_json()["id"]
    return job_id


def test_delay_schedules_relative_to_now(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    before = dt.datetime.now(dt.UTC)
    numeric = client.post("/insert", json={"delay": 90, "body": 1}, headers=auth).get_json()["id"]
    iso = client.post("/insert", json={"delay": "PT1H", "body": 2}, headers=auth).get_json()["id"]
    after = dt.datetime.now(dt.UTC)
    rows = dict(db.execute("SELECT id, run_at FROM jobs").fetchall())
    assert before + dt.timedelta(seconds=90) <= rows[numeric] <= after + dt.timedelta(seconds=90)
    assert before + dt.timedelta(hours=1) <= rows[iso] <= after + dt.timedelta(hours=1)
    # Counted on the database's clock: exactly the delay after the row was written.
    offsets = dict(db.execute("SELECT id, run_at - created_at FROM jobs").fetchall())
    assert offsets == {numeric: dt.timedelta(seconds=90), iso: dt.timedelta(hours=1)}
    assert db.execute("SELECT count(*) FROM jobs WHERE next_attempt_at <> run_at").fetchone() == (
        0,
    )


def test_get_job_shows_state_timestamps_and_body(client: FlaskClient, auth: dict[str, str]) -> None:
    job_id = insert(client, auth, body={"x": [1, 2]}, max_attempts=4)
    job = client.get(f"/jobs/{job_id}", headers=auth).get_json()
    assert job["id"] == job_id
    assert job["state"] == "scheduled"
    assert job["body"] == {"x": [1, 2]}
    assert job["timestamp"] == FUTURE
    assert job["next_attempt_at"] == FUTURE
    assert (job["attempts"], job["max_attempts"]) == (0, 4)
    assert job["history"] == [] and job["cron_id"] is None and job["finished_at"] is None
    assert dt.datetime.fromisoformat(job["created_at"]) <= dt.datetime.now(dt.UTC)


def test_get_job_lists_attempts(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    job_id = insert(client, auth, body=None)
    db.execute(
        "INSERT INTO delivery_attempts VALUES (%s, 1, now(), 12, 500, 'HTTP 500', 'oops'),"
        " (%s, 2, now(), 7, 200, NULL, 'ok')",
        (job_id, job_id),
    )
    db.execute("UPDATE jobs SET attempts = 2, state = 'delivered' WHERE id = %s", (job_id,))
    job = client.get(f"/jobs/{job_id}", headers=auth).get_json()
    assert job["state"] == "delivered"
    assert [
        (a["attempt"], a["status_code"], a["error"], a["response_excerpt"]) for a in job["history"]
    ] == [
        (1, 500, "HTTP 500", "oops"),
        (2, 200, None, "ok"),
    ]


@pytest.mark.parametrize("job_id", ["01m8dd8yqdh7n7gfnsea966a31", "bad id", "x" * 200])
def test_unknown_job_is_404(client: FlaskClient, auth: dict[str, str], job_id: str) -> None:
    for method, path in [("get", ""), ("post", "/run"), ("post", "/retry")]:
        response = getattr(client, method)(f"/jobs/{job_id}{path}", headers=auth)
        assert response.status_code == 404
        assert response.get_json()["error"]["code"] == "not_found"


def test_delete_route_cancels(client: FlaskClient, auth: dict[str, str]) -> None:
    job_id = insert(client, auth)
    assert client.delete(f"/jobs/{job_id}", headers=auth).status_code == 204
    assert client.get(f"/jobs/{job_id}", headers=auth).get_json()["state"] == "cancelled"
    assert client.delete("/jobs/unknown", headers=auth).status_code == 204


def test_run_now_and_conflicts(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    job_id = insert(client, auth)
    response = client.post(f"/jobs/{job_id}/run", headers=auth)
    assert (response.status_code, response.get_json()) == (202, {"id": job_id})
    due = db.execute("SELECT next_attempt_at FROM jobs WHERE id = %s", (job_id,)).fetchone()
    assert due is not None and due[0] <= dt.datetime.now(dt.UTC)
    client.delete(f"/jobs/{job_id}", headers=auth)
    conflict = client.post(f"/jobs/{job_id}/run", headers=auth)
    assert conflict.status_code == 409
    assert "cancelled" in conflict.get_json()["error"]["message"]


def test_retry_requeues_a_failed_job_only(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    job_id = insert(client, auth, max_attempts=3)
    assert client.post(f"/jobs/{job_id}/retry", headers=auth).status_code == 409
    db.execute(
        "UPDATE jobs SET state = 'failed', attempts = 3, finished_at = now() WHERE id = %s",
        (job_id,),
    )
    assert client.post(f"/jobs/{job_id}/retry", headers=auth).status_code == 202
    job = client.get(f"/jobs/{job_id}", headers=auth).get_json()
    assert (job["state"], job["attempts"], job["max_attempts"]) == ("scheduled", 3, 6)
    assert job["finished_at"] is None


def test_list_filters_and_paginates_newest_first(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    ids = [insert(client, auth, body=i) for i in range(7)]
    client.delete(f"/jobs/{ids[0]}", headers=auth)
    seen: list[str] = []
    cursor = None
    while True:
        query = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = client.get("/jobs", query_string=query, headers=auth).get_json()
        seen += [job["id"] for job in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    cancelled = client.get("/jobs?state=cancelled", headers=auth).get_json()
    assert [job["id"] for job in cancelled["jobs"]] == [ids[0]]
    assert cancelled["next_cursor"] is None
    db.execute("UPDATE jobs SET run_at = '2030-06-01Z' WHERE id = %s", (ids[3],))
    early = client.get(
        "/jobs", query_string={"before": "2030-12-31T00:00:00Z"}, headers=auth
    ).get_json()
    assert [job["id"] for job in early["jobs"]] == [ids[3]]
    late = client.get(
        "/jobs", query_string={"after": "2030-12-31T00:00:00Z", "limit": 100}, headers=auth
    ).get_json()
    assert ids[3] not in {job["id"] for job in late["jobs"]} and len(late["jobs"]) == 6


def test_pagination_is_stable_under_concurrent_inserts(app: Flask, auth: dict[str, str]) -> None:
    client = app.test_client()
    first = [insert(client, auth, body=i) for i in range(30)]
    stop = threading.Event()

    def keep_inserting() -> None:
        writer = app.test_client()
        while not stop.is_set():
            insert(writer, auth, body="late")

    writer = threading.Thread(target=keep_inserting)
    writer.start()
    try:
        seen: list[str] = []
        page = client.get("/jobs?limit=4", headers=auth).get_json()
        seen += [job["id"] for job in page["jobs"]]
        while page["next_cursor"]:
            page = client.get(
                "/jobs", query_string={"limit": 4, "cursor": page["next_cursor"]}, headers=auth
            ).get_json()
            seen += [job["id"] for job in page["jobs"]]
    finally:
        stop.set()
        writer.join()
    assert len(seen) == len(set(seen)), "a job appeared on two pages"
    assert set(first) <= set(seen), "a job that existed before listing was skipped"
    assert seen == sorted(seen, reverse=True)


def test_list_rejects_bad_filters(client: FlaskClient, auth: dict[str, str]) -> None:
    for query, field in [
        ("state=lost", "state"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("cursor=a%20b", "cursor"),
        ("before=yesterday", "before"),
    ]:
        response = client.get("/jobs?" + query, headers=auth)
        assert response.status_code == 400, query
        assert field in response.get_json()["error"]["fields"]


def test_idempotent_insert_returns_the_same_job(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    payload = {"timestamp": FUTURE, "body": {"a": 1}}
    headers = {**auth, "Idempotency-Key": "order-42"}
    first = client.post("/insert", json=payload, headers=headers).get_json()["id"]
    again = client.post("/insert", json=payload, headers=headers).get_json()["id"]
    by_field = client.post(
        "/insert", json={**payload, "idempotency_key": "order-42"}, headers=auth
    ).get_json()["id"]
    assert first == again == by_field
    assert db.execute("SELECT count(*) FROM jobs").fetchone() == (1,)
    different = client.post("/insert", json={**payload, "body": {"a": 2}}, headers=headers)
    assert different.status_code == 409
    assert "order-42" in different.get_json()["error"]["message"]
    mismatch = client.post("/insert", json={**payload, "idempotency_key": "other"}, headers=headers)
    assert mismatch.status_code == 400
    assert "idempotency_key" in mismatch.get_json()["error"]["fields"]


def test_idempotent_insert_from_many_threads_makes_one_job(
    app: Flask, auth: dict[str, str], db: psycopg.Connection
) -> None:
    barrier = threading.Barrier(16)

    def attempt(_: int) -> str:
        client = app.test_client()
        barrier.wait()
        response = client.post(
            "/insert",
            json={"delay": 60, "body": {"charge": 10}},
            headers={**auth, "Idempotency-Key": "charge-7"},
        )
        assert response.status_code == 200, response.get_json()
        job_id: str = response.get_json()["id"]
        return job_id

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        ids = set(pool.map(attempt, range(16)))
    assert len(ids) == 1
    assert db.execute("SELECT count(*) FROM jobs").fetchone() == (1,)


def test_batch_inserts_in_order_in_one_transaction(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection, db_url: str
) -> None:
    items = [{"timestamp": FUTURE, "body": i} for i in range(5)] + [{"delay": 5, "body": "d"}]
    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute("LISTEN scheduler")
        response = client.post("/jobs/batch", json={"jobs": items}, headers=auth)
        notices = [n.payload for n in listener.notifies(timeout=1, stop_after=1)]
    assert response.status_code == 200
    ids = response.get_json()["ids"]
    assert len(ids) == 6
    bodies = dict(db.execute("SELECT id, body FROM jobs").fetchall())
    assert [bodies[i] for i in ids] == [0, 1, 2, 3, 4, "d"]
    assert notices == ["b"]


def test_batch_of_jobs_due_after_the_next_look_sends_no_notification(
    client: FlaskClient, auth: dict[str, str], db_url: str
) -> None:
    within = client.application.config["SETTINGS"].announce_within
    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute("LISTEN scheduler")
        far = [{"timestamp": FUTURE, "body": 1}, {"delay": within + 5, "body": 2}]
        assert client.post("/jobs/batch", json={"jobs": far}, headers=auth).status_code == 200
        near = [{"timestamp": FUTURE, "body": 3}, {"delay": within - 2, "body": 4}]
        assert client.post("/jobs/batch", json={"jobs": near}, headers=auth).status_code == 200
        notices = [n.payload for n in listener.notifies(timeout=2, stop_after=2)]
    assert notices == ["b"]


def test_batch_with_an_invalid_item_stores_nothing(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    items = [
        {"timestamp": FUTURE, "body": 1},
        {"timestamp": "2021-02-30T00:00:00Z"},
        {"body": 3},
        {"delay": 1, "max_attempts": 0},
    ]
    response = client.post("/jobs/batch", json={"jobs": items}, headers=auth)
    assert response.status_code == 400
    problems = response.get_json()["error"]["fields"]["jobs"]
    assert sorted(problems) == ["1", "2", "3"]
    assert "timestamp" in problems["1"] and "max_attempts" in problems["3"]
    assert db.execute("SELECT count(*) FROM jobs").fetchone() == (0,)


def test_batch_size_is_bounded(app: Flask, auth: dict[str, str]) -> None:
    client = app.test_client()
    too_many = [{"delay": 1}] * 1001
    response = client.post("/jobs/batch", json={"jobs": too_many}, headers=auth)
    assert response.status_code == 400
    assert "between 1 and 1000" in response.get_json()["error"]["fields"]["jobs"][0]
    empty = client.post("/jobs/batch", json={"jobs": []}, headers=auth)
    assert empty.status_code == 400


def test_batch_is_idempotent_with_a_key(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    payload = {"jobs": [{"delay": 30, "body": i} for i in range(3)]}
    headers = {**auth, "Idempotency-Key": "batch-1"}
    first = client.post("/jobs/batch", json=payload, headers=headers).get_json()["ids"]
    again = client.post("/jobs/batch", json=payload, headers=headers).get_json()["ids"]
    assert first == again
    assert db.execute("SELECT count(*) FROM jobs").fetchone() == (3,)


def test_the_api_shows_the_kind_of_each_attempt_and_of_the_last_error(
    client: FlaskClient, auth: dict[str, str], database: db.Database
) -> None:
    job_id = insert(client, auth, timestamp="2020-01-01T00:00:00Z")
    (claimed,) = deliveries.claim_due_jobs(database, "test", 60, 1)
    record = outcomes.AttemptRecord(
        job_id=job_id,
        attempt=1,
        started_at=dt.datetime.now(dt.UTC),
        duration_ms=4,
        status_code=None,
        error="connection failed: refused",
        response_excerpt=None,
        error_kind="refused",
    )
    outcomes.settle_deliveries(
        database, [outcomes.Settlement(record, claimed.claim_token, "scheduled", 60)]
    )

    answer = client.get(f"/jobs/{job_id}", headers=auth)

    assert answer.status_code == 200
    assert answer.json is not None
    assert answer.json["last_error_kind"] == "refused"
    assert [a["error_kind"] for a in answer.json["history"]] == ["refused"]
    listed = client.get("/jobs", headers=auth).json
    assert listed is not None
    assert [j["last_error_kind"] for j in listed["jobs"]] == ["refused"]
