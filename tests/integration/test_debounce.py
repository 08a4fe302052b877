"""Debounced inserts (`"debounce": {"key", "period", "max_wait"}`) through the app on a real
database: a waiting job with the key is updated instead of another being added, within its
deadline, until a claim takes it; concurrent inserts leave one job; bad ones write nothing."""

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

from scheduler import config
from scheduler.storage import db, deliveries, outcomes
from tests import support
from tests.integration.test_job_edits import failure

BILLING = config.Endpoint("billing", "http://127.0.0.1:9/billing", (support.SECRET,))


@pytest.fixture
def settings(settings: config.Settings) -> config.Settings:
    return dataclasses.replace(settings, named_endpoints=(BILLING,))


def debounce(
    client: FlaskClient,
    auth: dict[str, str],
    body: Any,
    key: str = "digest-42",
    period: Any = 300,
    max_wait: Any = None,
    **extra: Any,
) -> dict[str, Any]:
    spec = {"key": key, "period": period}
    if max_wait is not None:
        spec["max_wait"] = max_wait
    response = client.post("/insert", json={"body": body, "debounce": spec, **extra}, headers=auth)
    assert response.status_code == 200, response.get_json()
    answer: dict[str, Any] = response.get_json()
    return answer


def rows(db_url: str) -> list[dict[str, Any]]:
    with psycopg.connect(db_url, row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT id, body, state, run_at, next_attempt_at, created_at, updated_at, endpoint,"
            " flow_key, max_attempts, debounce_key, debounce_until, debounce_open"
            " FROM jobs ORDER BY id"
        ).fetchall()


def test_a_second_insert_with_the_key_updates_the_waiting_job(
    client: FlaskClient, auth: dict[str, str], db_url: str
) -> None:
    first = debounce(client, auth, {"n": 1})
    assert first["debounced"] is False
    (made,) = rows(db_url)
    assert (
        made["run_at"] == made["next_attempt_at"] == made["created_at"] + dt.timedelta(seconds=300)
    )
    second = debounce(client, auth, {"n": 2}, period="PT10M", max_attempts=4)
    assert second == {"id": first["id"], "debounced": True}
    (joined,) = rows(db_url)
    assert (joined["body"], joined["max_attempts"], joined["created_at"]) == (
        {"n": 2},
        4,
        made["created_at"],
    )
    # Due its period after the latest insert, by the database's clock.
    assert (
        joined["run_at"]
        == joined["next_attempt_at"]
        == joined["updated_at"] + dt.timedelta(minutes=10)
    )
    job = client.get(f"/jobs/{first['id']}", headers=auth).get_json()
    assert (job["debounce_key"], job["debounce_until"], job["body"]) == (
        "digest-42",
        None,
        {"n": 2},
    )


def test_keys_belong_to_their_endpoint(
    client: FlaskClient, auth: dict[str, str], db_url: str
) -> None:
    one = debounce(client, auth, 1)["id"]
    other_key = debounce(client, auth, 2, key="digest-43")["id"]
    other_endpoint = debounce(client, auth, 3, endpoint="billing")["id"]
    assert len({one, other_key, other_endpoint}) == 3
    assert debounce(client, auth, 4, endpoint="billing") == {
        "id": other_endpoint,
        "debounced": True,
    }
    assert [(r["endpoint"], r["debounce_key"], r["body"]) for r in rows(db_url)] == [
        ("default", "digest-42", 1),
        ("default", "digest-43", 2),
        ("billing", "digest-42", 4),
    ]


def test_the_move_never_goes_past_the_first_insert_plus_max_wait(
    client: FlaskClient, auth: dict[str, str], db_url: str
) -> None:
    first = debounce(client, auth, 1, period=100, max_wait=100)
    (made,) = rows(db_url)
    deadline = made["created_at"] + dt.timedelta(seconds=100)
    assert made["run_at"] == made["debounce_until"] == deadline
    # A later insert's own max_wait does not move the deadline.
    assert debounce(client, auth, 2, period=100, max_wait=3600)["id"] == first["id"]
    (joined,) = rows(db_url)
    # Its latest insert asked for 100 s after itself, later than the deadline.
    assert joined["updated_at"] + dt.timedelta(seconds=100) > deadline
    assert joined["run_at"] == joined["next_attempt_at"] == deadline
    job = client.get(f"/jobs/{first['id']}", headers=auth).get_json()
    assert job["debounce_until"] == job["timestamp"]


def test_once_claimed_the_next_insert_starts_a_new_job(
    client: FlaskClient, auth: dict[str, str], database: db.Database, db_url: str
) -> None:
    first = debounce(client, auth, 1, period=0.001)["id"]
    (claimed,) = support.wait_until(
        lambda: deliveries.claim_due_jobs(database, "one", 60, 10), timeout=10
    )
    assert (claimed.id, claimed.body) == (first, "1")
    second = debounce(client, auth, 2, period=0.001)
    assert second["debounced"] is False and second["id"] != first
    claimed_row, new_row = rows(db_url)
    # The claimed job keeps its key for the record, closed.
    assert (claimed_row["state"], claimed_row["debounce_key"], claimed_row["debounce_open"]) == (
        "delivering",
        "digest-42",
        False,
    )
    assert (new_row["body"], new_row["debounce_open"]) == (2, True)
    # The claimed job failing and going back in line for a retry is no new open job: it stays
    # closed, and the statement that puts it back meets no conflict with the new one.
    failure(database, claimed)
    claimed_row, new_row = rows(db_url)
    assert (claimed_row["state"], claimed_row["debounce_open"]) == ("scheduled", False)
    assert debounce(client, auth, 3)["id"] == new_row["id"]


def test_a_claim_given_back_unsent_or_rescued_does_not_reopen_its_key(
    client: FlaskClient, auth: dict[str, str], database: db.Database, db_url: str
) -> None:
    first = debounce(client, auth, 1, period=0.001)["id"]
    (claimed,) = support.wait_until(
        lambda: deliveries.claim_due_jobs(database, "one", 60, 10), timeout=10
    )
    second = debounce(client, auth, 2)["id"]
    outcomes.settle_deliveries(database, [], unsent=[(claimed.id, claimed.claim_token)])
    given_back, waiting = rows(db_url)
    assert (given_back["id"], given_back["state"], given_back["debounce_open"]) == (
        first,
        "scheduled",
        False,
    )
    assert waiting["id"] == second and waiting["debounce_open"] is True
    assert [c.id for c in deliveries.claim_due_jobs(database, "one", 60, 10)] == [first]
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE jobs SET leased_until = now() - interval '1 second'")
    assert deliveries.release_dead_claims(database, 60) == 1
    assert debounce(client, auth, 3)["id"] == second


def test_cancel_closes_the_key_and_a_run_now_is_not_moved(
    client: FlaskClient, auth: dict[str, str], db_url: str
) -> None:
    first = debounce(client, auth, 1)["id"]
    assert client.post(f"/jobs/{first}/run", headers=auth).status_code == 202
    (asked,) = rows(db_url)
    # The operator's run now stands; the body is the latest all the same.
    assert debounce(client, auth, 2) == {"id": first, "debounced": True}
    (joined,) = rows(db_url)
    assert (joined["next_attempt_at"], joined["body"]) == (asked["next_attempt_at"], 2)
    assert client.delete(f"/jobs/{first}", headers=auth).status_code == 204
    assert debounce(client, auth, 3)["debounced"] is False


def test_an_edited_debounced_job_stays_debounced_until_it_changes_endpoint(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    first = debounce(client, auth, 1)["id"]
    assert client.patch(f"/jobs/{first}", json={"body": 2}, headers=auth).status_code == 200
    assert debounce(client, auth, 3) == {"id": first, "debounced": True}
    moved = client.patch(f"/jobs/{first}", json={"endpoint": "billing"}, headers=auth)
    assert moved.status_code == 200
    assert debounce(client, auth, 4)["debounced"] is False
    assert debounce(client, auth, 5, endpoint="billing")["debounced"] is False


def test_the_latest_insert_s_flow_key_and_trace_context_win(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    first = debounce(client, auth, 1, flow={"key": "tenant-1", "rate": 5})["id"]
    response = client.post(
        "/insert",
        json={"body": 2, "debounce": {"key": "digest-42", "period": 60}},
        headers={**auth, "traceparent": traceparent},
    )
    assert response.get_json() == {"id": first, "debounced": True}
    row = db.execute("SELECT flow_key, traceparent FROM jobs WHERE id = %s", (first,)).fetchone()
    assert row == (None, traceparent)


def test_concurrent_inserts_with_one_key_leave_exactly_one_job(
    app: Flask, auth: dict[str, str], db_url: str
) -> None:
    threads = 8
    for round_number in range(5):
        start = threading.Barrier(threads)
        answers: list[dict[str, Any]] = []

        def insert(
            n: int,
            start: threading.Barrier = start,
            answers: list[dict[str, Any]] = answers,
            key: str = f"burst-{round_number}",
        ) -> None:
            client = app.test_client()
            start.wait()
            answers.append(debounce(client, auth, n, key=key))

        workers = [threading.Thread(target=insert, args=(n,)) for n in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=30)
        assert len(answers) == threads
        assert len({answer["id"] for answer in answers}) == 1
        assert sorted(answer["debounced"] for answer in answers) == [False] + [True] * 7
    assert len(rows(db_url)) == 5


def test_an_insert_racing_a_claim_joins_the_job_or_starts_a_new_one_never_loses_its_body(
    app: Flask, auth: dict[str, str], database: db.Database, db_url: str
) -> None:
    client = app.test_client()
    seen: set[bool] = set()
    for round_number in range(20):
        key = f"race-{round_number}"
        first = debounce(client, auth, {"v": 1}, key=key, period=0.001)["id"]
        start = threading.Barrier(2)
        answers: list[dict[str, Any]] = []

        def insert(
            start: threading.Barrier = start,
            answers: list[dict[str, Any]] = answers,
            key: str = key,
        ) -> None:
            start.wait()
            answers.append(debounce(app.test_client(), auth, {"v": 2}, key=key, period=0.001))

        racer = threading.Thread(target=insert)
        racer.start()
        start.wait()
        claimed = deliveries.claim_due_jobs(database, "one", 60, 10, ahead=60)
        racer.join(timeout=10)
        (answer,) = answers
        waiting = [r for r in rows(db_url) if r["state"] == "scheduled"]
        if answer["debounced"]:
            # It joined the job before the claim took it: whoever takes the job sends v2.
            assert answer["id"] == first
            taken = claimed or deliveries.claim_due_jobs(database, "one", 60, 10, ahead=60)
            assert [(c.id, c.body) for c in taken] == [(first, '{"v": 2}')]
        else:
            # The claim took the job first, as it was; this insert made a new one.
            assert [(c.id, c.body) for c in claimed] == [(first, '{"v": 1}')]
            assert [(r["id"], r["body"]) for r in waiting] == [(answer["id"], {"v": 2})]
            deliveries.claim_due_jobs(database, "one", 60, 10, ahead=60)
        seen.add(answer["debounced"])
    assert seen <= {True, False}


def test_idempotent_debounced_inserts_answer_their_first_answer(
    client: FlaskClient, auth: dict[str, str], db_url: str
) -> None:
    made = debounce(client, auth, 1, idempotency_key="a")
    joined = debounce(client, auth, 2, idempotency_key="b")
    assert joined == {"id": made["id"], "debounced": True}
    (before,) = rows(db_url)
    # Repeats answer what they first answered, and neither moves nor changes the job.
    assert debounce(client, auth, 1, idempotency_key="a") == made
    assert debounce(client, auth, 2, idempotency_key="b") == joined
    assert rows(db_url) == [before]
    conflict = client.post(
        "/insert",
        json={"body": 3, "debounce": {"key": "digest-42", "period": 300}, "idempotency_key": "b"},
        headers=auth,
    )
    assert conflict.status_code == 409


def test_a_batch_debounces_in_order_and_says_which_jobs_joined(
    client: FlaskClient, auth: dict[str, str], db_url: str
) -> None:
    waiting = debounce(client, auth, 0, key="k2")["id"]
    response = client.post(
        "/jobs/batch",
        json={
            "jobs": [
                {"body": 1, "debounce": {"key": "k1", "period": 60}},
                {"body": 2, "delay": 60},
                {"body": 3, "debounce": {"key": "k1", "period": 60}},
                {"body": 4, "debounce": {"key": "k2", "period": 60}, "flow": {"key": "f"}},
            ]
        },
        headers=auth,
    )
    assert response.status_code == 200, response.get_json()
    answer = response.get_json()
    ids = answer["ids"]
    assert answer["debounced"] == [False, False, True, True]
    assert ids[0] == ids[2] and ids[3] == waiting and len(set(ids)) == 3
    bodies = {r["id"]: (r["body"], r["flow_key"]) for r in rows(db_url)}
    assert bodies == {ids[0]: (3, None), ids[1]: (2, None), waiting: (4, "f")}
    plain = client.post("/jobs/batch", json={"jobs": [{"body": 5, "delay": 1}]}, headers=auth)
    assert set(plain.get_json()) == {"ids"}


@pytest.mark.parametrize(
    ("debounce_field", "extra", "fields"),
    [
        ({"key": "k", "period": 60}, {"timestamp": "2031-01-01T00:00:00Z"}, {"timestamp"}),
        ({"key": "k", "period": 60}, {"delay": 5}, {"delay"}),
        ({"key": "k", "period": 0}, {}, {"debounce": {"period"}}),
        ({"key": "k", "period": "PT0S"}, {}, {"debounce": {"period"}}),
        ({"key": "k", "period": -1}, {}, {"debounce": {"period"}}),
        ({"key": "k", "period": "P1M"}, {}, {"debounce": {"period"}}),
        ({"key": "k", "period": True}, {}, {"debounce": {"period"}}),
        ({"key": "k"}, {}, {"debounce": {"period"}}),
        ({"period": 60}, {}, {"debounce": {"key"}}),
        ({"key": "", "period": 60}, {}, {"debounce": {"key"}}),
        ({"key": "a\nb", "period": 60}, {}, {"debounce": {"key"}}),
        ({"key": "k" * 201, "period": 60}, {}, {"debounce": {"key"}}),
        ({"key": "k", "period": 60, "max_wait": 59}, {}, {"debounce": {"max_wait"}}),
        ({"key": "k", "period": 60, "max_wait": "soon"}, {}, {"debounce": {"max_wait"}}),
        ({"key": "k", "period": 60, "wait": 1}, {}, {"debounce": {"wait"}}),
        ("k", {}, {"debounce": {"_schema"}}),
    ],
)
def test_bad_debounces_are_a_400_naming_the_field_and_write_nothing(
    client: FlaskClient,
    auth: dict[str, str],
    db_url: str,
    debounce_field: Any,
    extra: dict[str, Any],
    fields: Any,
) -> None:
    payload = {"body": 1, "debounce": debounce_field, **extra}
    response = client.post("/insert", json=payload, headers=auth)
    assert response.status_code == 400, response.get_json()
    problems = response.get_json()["error"]["fields"]
    if isinstance(fields, set):
        assert set(problems) == fields
    else:
        ((name, inner),) = fields.items()
        assert set(problems) == {name} and set(problems[name]) == inner
    batch = client.post("/jobs/batch", json={"jobs": [{"delay": 1}, payload]}, headers=auth)
    assert batch.status_code == 400
    assert set(batch.get_json()["error"]["fields"]["jobs"]) == {"1"}
    assert rows(db_url) == []


def test_a_null_debounce_is_no_debounce(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.post("/insert", json={"delay": 60, "debounce": None}, headers=auth)
    assert response.status_code == 200 and set(response.get_json()) == {"id"}
    response = client.post("/insert", json={"debounce": None}, headers=auth)
    assert response.status_code == 400
    assert set(response.get_json()["error"]["fields"]) == {"timestamp", "delay"}


def test_a_debounced_job_due_soon_wakes_the_dispatchers(
    client: FlaskClient, auth: dict[str, str], db_url: str
) -> None:
    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute("LISTEN scheduler")
        debounce(client, auth, 1, period=3600)
        debounce(client, auth, 2, key="soon", period=1)
        payloads = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
    (payload,) = payloads
    kind, due_in = payload.split()
    assert kind == "j" and 0 < float(due_in) <= 1


def test_debounced_inserts_among_grouped_single_inserts(
    app: Flask, auth: dict[str, str], db_url: str
) -> None:
    """Plain single inserts share group commit's transactions; debounced ones arriving with them
    go around it, and neither kind is lost or doubled."""
    start = threading.Barrier(12)
    answers: list[tuple[str, dict[str, Any]]] = []
    lock = threading.Lock()

    def send(n: int) -> None:
        client = app.test_client()
        payload: dict[str, Any] = {"body": n, "delay": 600}
        kind = "plain"
        if n % 2:
            payload = {"body": n, "debounce": {"key": "mixed", "period": 600}}
            kind = "debounced"
        start.wait()
        response = client.post("/insert", json=payload, headers=auth)
        assert response.status_code == 200
        with lock:
            answers.append((kind, response.get_json()))

    workers = [threading.Thread(target=send, args=(n,)) for n in range(12)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    plain = {answer["id"] for kind, answer in answers if kind == "plain"}
    debounced = {answer["id"] for kind, answer in answers if kind == "debounced"}
    assert len(plain) == 6 and len(debounced) == 1
    stored = rows(db_url)
    assert {r["id"] for r in stored} == plain | debounced
    assert [r["debounce_key"] for r in stored if r["id"] in debounced] == ["mixed"]
