"""The `flow` field of jobs and GET /endpoints/<name>/flows, through the app on a real database:
keys made on first use with the limits written last, bad flows refused naming the field with
nothing written, and the idempotency digest covering the flow."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient

from scheduler import config
from scheduler.storage import flows as flow_rows
from scheduler.storage.db import Database
from scheduler.web import app as app_module
from tests import support

BILLING = config.Endpoint("billing", "http://127.0.0.1:9/billing", (support.SECRET,))


@pytest.fixture
def app(settings: config.Settings) -> Iterator[Flask]:
    named = dataclasses.replace(settings, named_endpoints=(BILLING,))
    flask_app = app_module.create_app(named)
    flask_app.extensions["scheduler.database"].pool.wait()
    yield flask_app
    flask_app.extensions["scheduler.database"].pool.close()


def flows(client: FlaskClient, auth: dict[str, str], name: str = "billing") -> list[Any]:
    response = client.get(f"/endpoints/{name}/flows", headers=auth)
    assert response.status_code == 200
    listed: list[Any] = response.get_json()["flows"]
    return listed


def test_keys_are_listed_most_due_first_with_the_limits_written_last(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    batch = [
        {"delay": 0, "endpoint": "billing", "flow": {"key": "small", "max_in_flight": 2}},
        *({"delay": 0, "endpoint": "billing", "flow": {"key": "big", "rate": 1}} for _ in range(3)),
        {"delay": 3600, "endpoint": "billing", "flow": {"key": "later"}},
    ]
    assert client.post("/jobs/batch", json={"jobs": batch}, headers=auth).status_code == 200
    one = {"delay": 0, "endpoint": "billing", "flow": {"key": "big", "rate": 2.5}}
    assert client.post("/insert", json=one, headers=auth).status_code == 200
    db.execute("UPDATE jobs SET state = 'delivering' WHERE flow_key = 'small'")
    listed = flows(client, auth)
    shown = [(f["key"], f["rate"], f["max_in_flight"], f["due"], f["in_flight"]) for f in listed]
    assert shown == [
        ("big", 2.5, None, 4, 0),
        ("later", None, None, 0, 0),
        ("small", None, 2, 0, 1),
    ]
    assert all(f["used_at"].endswith("Z") for f in listed)
    assert flows(client, auth, "default") == []


def test_an_unknown_endpoint_has_no_flows(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.get("/endpoints/nowhere/flows", headers=auth)
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


BAD_FLOWS = [
    ({"rate": 1}, "key"),
    ({"key": ""}, "key"),
    ({"key": "a\nb"}, "key"),
    ({"key": "x" * 201}, "key"),
    ({"key": 5}, "key"),
    ({"key": "k", "rate": "5"}, "rate"),
    ({"key": "k", "rate": 0}, "rate"),
    ({"key": "k", "rate": -1}, "rate"),
    ({"key": "k", "max_in_flight": 0}, "max_in_flight"),
    ({"key": "k", "max_in_flight": 1.5}, "max_in_flight"),
    ({"key": "k", "max_in_flight": "2"}, "max_in_flight"),
    ({"key": "k", "burst": 2}, "burst"),
]


@pytest.mark.parametrize(("flow", "field"), BAD_FLOWS, ids=repr)
def test_a_bad_flow_is_a_400_naming_the_field_and_writes_nothing(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection, flow: Any, field: str
) -> None:
    single = client.post("/insert", json={"delay": 0, "flow": flow}, headers=auth)
    assert single.status_code == 400
    assert field in single.get_json()["error"]["fields"]["flow"]
    items = [{"delay": 0, "flow": {"key": "fine"}}, {"delay": 0, "flow": flow}]
    batch = client.post("/jobs/batch", json={"jobs": items}, headers=auth)
    assert batch.status_code == 400
    assert field in batch.get_json()["error"]["fields"]["jobs"]["1"]["flow"]
    assert db.execute("SELECT count(*) FROM jobs").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM flows").fetchone() == (0,)


def test_a_flow_that_is_not_an_object_is_refused(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.post("/insert", json={"delay": 0, "flow": "k"}, headers=auth)
    assert response.status_code == 400
    assert "flow" in response.get_json()["error"]["fields"]


def test_the_idempotency_digest_covers_the_flow(client: FlaskClient, auth: dict[str, str]) -> None:
    first = {"delay": 60, "idempotency_key": "order-1", "flow": {"key": "a"}}
    assert client.post("/insert", json=first, headers=auth).status_code == 200
    again = client.post("/insert", json=first, headers=auth)
    assert again.status_code == 200
    other = {**first, "flow": {"key": "b"}}
    assert client.post("/insert", json=other, headers=auth).status_code == 409


def test_a_null_flow_is_the_same_request_as_none(client: FlaskClient, auth: dict[str, str]) -> None:
    plain = {"delay": 60, "idempotency_key": "order-2"}
    made = client.post("/insert", json=plain, headers=auth).get_json()["id"]
    nulled = client.post("/insert", json={**plain, "flow": None}, headers=auth)
    assert (nulled.status_code, nulled.get_json()["id"]) == (200, made)


def test_a_cron_s_runs_carry_its_key_which_is_kept_while_the_cron_names_it(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection, database: Database
) -> None:
    flow = {"key": "reports", "rate": 0.5, "max_in_flight": 1}
    put = client.put(
        "/cron/nightly",
        json={"spec": "0 3 * * *", "endpoint": "billing", "flow": flow},
        headers=auth,
    )
    assert put.status_code == 200
    assert put.get_json()["flow"] == flow
    run = client.post("/cron/nightly/run", headers=auth)
    assert run.status_code == 202
    row = db.execute("SELECT flow_key FROM jobs WHERE id = %s", (run.get_json()["id"],)).fetchone()
    assert row == ("reports",)
    (listed,) = flows(client, auth)
    assert (listed["key"], listed["rate"], listed["max_in_flight"]) == ("reports", 0.5, 1)
    db.execute("UPDATE jobs SET state = 'delivered'")
    db.execute("UPDATE flows SET used_at = now() - interval '1 day'")
    assert flow_rows.forget_idle_flows(database, 3600) == 0
    assert [f["key"] for f in flows(client, auth)] == ["reports"]
    # Replaced without a key, the cron lets it go.
    set_all = client.post(
        "/cron", json={"jobs": [{"id": "nightly", "spec": "0 3 * * *"}]}, headers=auth
    )
    assert set_all.status_code == 200
    assert client.get("/cron/nightly", headers=auth).get_json()["flow"] is None
    assert flow_rows.forget_idle_flows(database, 3600) == 1


def test_a_cron_with_a_bad_flow_is_refused_naming_the_field(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    put = client.put("/cron/nightly", json={"spec": "0 3 * * *", "flow": {"key": ""}}, headers=auth)
    assert put.status_code == 400
    assert "key" in put.get_json()["error"]["fields"]["flow"]
    entry = {"id": "nightly", "spec": "0 3 * * *", "flow": {"key": "k", "rate": "1"}}
    post = client.post("/cron", json={"jobs": [entry]}, headers=auth)
    assert post.status_code == 400
    assert "rate" in post.get_json()["error"]["fields"]["jobs"]["0"]["flow"]
    assert db.execute("SELECT count(*) FROM crons").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM flows").fetchone() == (0,)
