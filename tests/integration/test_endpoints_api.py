"""The endpoints API and the `endpoint` field of jobs and crons, through the app on a real
database: limits set at run time, pauses, what each endpoint holds, and unknown names refused."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient

from scheduler import config
from scheduler.web import app as app_module
from tests import support

BILLING = config.Endpoint("billing", "http://127.0.0.1:9/billing", (support.SECRET,))


@pytest.fixture
def app(settings: config.Settings) -> Iterator[Flask]:
    named = dataclasses.replace(settings, named_endpoints=(BILLING,), max_in_flight=4)
    flask_app = app_module.create_app(named)
    flask_app.extensions["scheduler.database"].pool.wait()
    yield flask_app
    flask_app.extensions["scheduler.database"].pool.close()


def endpoints(client: FlaskClient, auth: dict[str, str]) -> dict[str, dict[str, Any]]:
    response = client.get("/endpoints", headers=auth)
    assert response.status_code == 200
    return {item["name"]: item for item in response.get_json()["endpoints"]}


def test_every_configured_endpoint_is_listed_with_what_it_holds(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    jobs = [{"delay": 0, "endpoint": "billing", "body": n} for n in range(3)]
    jobs.append({"delay": 3600, "endpoint": "billing", "body": "later"})
    assert client.post("/jobs/batch", json={"jobs": jobs}, headers=auth).status_code == 200
    db.execute("UPDATE jobs SET state = 'delivering' WHERE body = '0'")
    listed = endpoints(client, auth)
    assert list(listed) == ["default", "billing"]
    assert listed["billing"] == {
        "name": "billing",
        "url": BILLING.url,
        "rate_limit": None,
        "max_in_flight": 4,
        "weight": 1.0,
        "paused": False,
        "in_flight": 1,
        "due": 2,
    }
    assert listed["default"]["due"] == 0


def test_limits_set_at_run_time_win_until_reset(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    patched = client.patch("/endpoints/billing", json={"rate_limit": 2.5}, headers=auth)
    assert patched.status_code == 200
    assert (patched.get_json()["rate_limit"], patched.get_json()["max_in_flight"]) == (2.5, 4)
    unlimited = client.patch("/endpoints/billing", json={"max_in_flight": None}, headers=auth)
    assert (unlimited.get_json()["rate_limit"], unlimited.get_json()["max_in_flight"]) == (
        2.5,
        None,
    )
    assert endpoints(client, auth)["default"]["rate_limit"] is None
    reset = client.post("/endpoints/billing/reset", headers=auth)
    assert (reset.get_json()["rate_limit"], reset.get_json()["max_in_flight"]) == (None, 4)
    stored = db.execute("SELECT rate_limit_set, max_in_flight_set FROM endpoints").fetchall()
    assert stored == [(False, False)]


def test_pause_and_resume(client: FlaskClient, auth: dict[str, str]) -> None:
    assert client.post("/endpoints/billing/pause", headers=auth).get_json()["paused"] is True
    assert endpoints(client, auth)["billing"]["paused"] is True
    assert client.post("/endpoints/billing/resume", headers=auth).get_json()["paused"] is False


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "rate_limit"),
        ({"rate_limit": 0}, "rate_limit"),
        ({"rate_limit": -1}, "rate_limit"),
        ({"rate_limit": "fast"}, "rate_limit"),
        ({"rate_limit": "5"}, "rate_limit"),
        ({"rate_limit": "2.5"}, "rate_limit"),
        ({"rate_limit": True}, "rate_limit"),
        ({"rate_limit": [5]}, "rate_limit"),
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"max_in_flight": 1.5}, "max_in_flight"),
        ({"max_in_flight": "5"}, "max_in_flight"),
        ({"max_in_flight": True}, "max_in_flight"),
        ({"rate_limit": 5, "max_in_flight": "5"}, "max_in_flight"),
        ({"paused": True}, "paused"),
        ({}, "weight"),
        ({"weight": 0}, "weight"),
        ({"weight": -2}, "weight"),
        ({"weight": 1000.5}, "weight"),
        ({"weight": 10**6}, "weight"),
        ({"weight": "5"}, "weight"),
        ({"weight": True}, "weight"),
        ({"weight": [2]}, "weight"),
        ({"weight": {"value": 2}}, "weight"),
        ({"weight": 2, "max_in_flight": "5"}, "max_in_flight"),
        ({"weight": "2", "rate_limit": 5}, "weight"),
    ],
)
def test_bad_limits_are_refused_naming_the_field(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection, payload: Any, field: str
) -> None:
    response = client.patch("/endpoints/billing", json=payload, headers=auth)
    assert response.status_code == 400
    assert field in response.get_json()["error"]["fields"]
    assert db.execute("SELECT count(*) FROM endpoints").fetchone() == (0,)


def test_a_limit_given_as_a_string_is_a_400_naming_the_field_as_everywhere_else(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    response = client.patch("/endpoints/billing", json={"rate_limit": "5"}, headers=auth)
    assert response.status_code == 400
    assert response.get_json()["error"] == {
        "code": "invalid_request",
        "message": "The request has invalid fields.",
        "fields": {"rate_limit": ["Not a valid number."]},
    }
    assert db.execute("SELECT count(*) FROM endpoints").fetchone() == (0,)


def test_limits_are_json_numbers_in_any_of_their_forms(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    raw = '{"rate_limit": 1e1, "max_in_flight": 3}'
    response = client.patch(
        "/endpoints/billing", data=raw, content_type="application/json", headers=auth
    )
    assert response.status_code == 200
    assert (response.get_json()["rate_limit"], response.get_json()["max_in_flight"]) == (10.0, 3)
    integral = client.patch("/endpoints/billing", json={"rate_limit": 5}, headers=auth)
    assert integral.get_json()["rate_limit"] == 5.0


def test_a_weight_is_shown_and_null_returns_it_to_the_default(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    patched = client.patch("/endpoints/billing", json={"weight": 2.5}, headers=auth)
    assert patched.status_code == 200
    assert patched.get_json()["weight"] == 2.5
    assert client.get("/endpoints/billing", headers=auth).get_json()["weight"] == 2.5
    listed = endpoints(client, auth)
    assert (listed["billing"]["weight"], listed["default"]["weight"]) == (2.5, 1.0)
    # A limit changed alone leaves the weight, and a reset returns only the limits.
    limited = client.patch("/endpoints/billing", json={"rate_limit": 3}, headers=auth)
    assert (limited.get_json()["rate_limit"], limited.get_json()["weight"]) == (3.0, 2.5)
    reset = client.post("/endpoints/billing/reset", headers=auth)
    assert (reset.get_json()["rate_limit"], reset.get_json()["weight"]) == (None, 2.5)
    back = client.patch("/endpoints/billing", json={"weight": None}, headers=auth)
    assert back.status_code == 200 and back.get_json()["weight"] == 1.0
    assert db.execute("SELECT weight FROM endpoints").fetchall() == [(None,)]


@pytest.mark.parametrize("weight", [0.001, 1, 1000, 1e3])
def test_a_weight_is_any_json_number_above_0_up_to_1000(
    client: FlaskClient, auth: dict[str, str], weight: float
) -> None:
    response = client.patch("/endpoints/billing", json={"weight": weight}, headers=auth)
    assert response.status_code == 200
    assert response.get_json()["weight"] == weight


def test_a_weight_given_as_a_string_is_a_400_naming_the_field(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    response = client.patch("/endpoints/billing", json={"weight": "5"}, headers=auth)
    assert response.status_code == 400
    assert response.get_json()["error"] == {
        "code": "invalid_request",
        "message": "The request has invalid fields.",
        "fields": {"weight": ["Not a valid number."]},
    }
    too_heavy = client.patch("/endpoints/billing", json={"weight": 1001}, headers=auth)
    assert too_heavy.get_json()["error"]["fields"] == {
        "weight": ["Must be greater than 0 and less than or equal to 1000.0."]
    }
    assert db.execute("SELECT count(*) FROM endpoints").fetchone() == (0,)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/endpoints/nowhere"),
        ("patch", "/endpoints/nowhere"),
        ("post", "/endpoints/nowhere/pause"),
        ("post", "/endpoints/nowhere/reset"),
    ],
)
def test_an_unknown_endpoint_is_a_json_404(
    client: FlaskClient, auth: dict[str, str], method: str, path: str
) -> None:
    response = getattr(client, method)(path, json={"rate_limit": 1}, headers=auth)
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


def test_endpoints_need_the_secret(client: FlaskClient) -> None:
    assert client.get("/endpoints").status_code == 401


@pytest.mark.parametrize(
    ("path", "payload", "fields"),
    [
        ("/insert", {"delay": 1, "endpoint": "nowhere"}, {"endpoint"}),
        (
            "/jobs/batch",
            {"jobs": [{"delay": 1}, {"delay": 1, "endpoint": "nowhere"}]},
            {"jobs": {"1": {"endpoint"}}},
        ),
        ("/insert", {"delay": 1, "endpoint": "no/slash"}, {"endpoint"}),
        ("/cron", {"jobs": [{"id": "a", "spec": "@hourly", "endpoint": "nowhere"}]}, None),
    ],
)
def test_an_unknown_endpoint_name_is_a_400_and_nothing_is_written(
    client: FlaskClient,
    auth: dict[str, str],
    db: psycopg.Connection,
    path: str,
    payload: Any,
    fields: Any,
) -> None:
    response = client.post(path, json=payload, headers=auth)
    assert response.status_code == 400
    problems = response.get_json()["error"]["fields"]
    if path == "/jobs/batch":
        assert "endpoint" in problems["jobs"]["1"]
        assert "billing" in problems["jobs"]["1"]["endpoint"][0]
    elif path == "/cron":
        assert "endpoint" in problems["jobs"]["0"]
    else:
        assert "endpoint" in problems
    assert db.execute("SELECT count(*) FROM jobs").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM crons").fetchone() == (0,)


def test_jobs_and_crons_carry_their_endpoint(client: FlaskClient, auth: dict[str, str]) -> None:
    billed = client.post("/insert", json={"delay": 60, "endpoint": "billing"}, headers=auth)
    plain = client.post("/insert", json={"delay": 60}, headers=auth)
    assert billed.status_code == plain.status_code == 200
    listed = client.get("/jobs?endpoint=billing", headers=auth).get_json()["jobs"]
    assert [job["id"] for job in listed] == [billed.get_json()["id"]]
    one = client.get(f"/jobs/{plain.get_json()['id']}", headers=auth).get_json()
    assert one["endpoint"] == "default"

    crons = {"jobs": [{"id": "a", "spec": "@hourly", "endpoint": "billing"}]}
    assert client.post("/cron", json=crons, headers=auth).status_code == 200
    assert client.get("/cron/a", headers=auth).get_json()["endpoint"] == "billing"
    # The seed's replace-all: a field an entry leaves out takes its default.
    crons = {"jobs": [{"id": "a", "spec": "@hourly"}]}
    assert client.post("/cron", json=crons, headers=auth).status_code == 200
    assert client.get("/cron/a", headers=auth).get_json()["endpoint"] == "default"
    put = client.put("/cron/b", json={"spec": "@daily", "endpoint": "nowhere"}, headers=auth)
    assert put.status_code == 400
    assert "endpoint" in put.get_json()["error"]["fields"]
