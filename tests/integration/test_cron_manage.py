"""Managing single crons over the API: put, get, delete, pause, resume, run, runs."""

from __future__ import annotations

import logging

import psycopg
import pytest
from flask.testing import FlaskClient

from scheduler import cron


def put(client: FlaskClient, auth: dict[str, str], cron_id: str, **body: str) -> dict:
    response = client.put(f"/cron/{cron_id}", json=body, headers=auth)
    assert response.status_code == 200, response.get_json()
    result: dict = response.get_json()
    return result


def test_put_creates_and_replaces_one_cron(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    client.post("/cron", json={"jobs": [{"id": "other", "spec": "@hourly"}]}, headers=auth)
    created = put(client, auth, "report", spec="0 30 9 * * mon-fri", timezone="Europe/Paris")
    assert created["spec"] == "CRON_TZ=Europe/Paris 0 30 9 * * mon-fri"
    assert created["timezone"] == "Europe/Paris"
    assert created["paused"] is False and created["next_fire_at"].endswith("+01:00")
    replaced = put(client, auth, "report", spec="@daily")
    assert (replaced["spec"], replaced["timezone"]) == ("@daily", "UTC")
    assert db.execute("SELECT id FROM crons ORDER BY id").fetchall() == [("other",), ("report",)]


def test_put_rejects_bad_input(client: FlaskClient, auth: dict[str, str]) -> None:
    cases = [
        ({"spec": "61 * * * * *"}, "spec"),
        ({}, "spec"),
        ({"spec": "@daily", "timezone": "Mars/Base"}, "spec"),
        ({"spec": "CRON_TZ=UTC @daily", "timezone": "UTC"}, "timezone"),
        ({"spec": "@daily", "extra": 1}, "extra"),
    ]
    for body, field in cases:
        response = client.put("/cron/report", json=body, headers=auth)
        assert response.status_code == 400, body
        assert field in response.get_json()["error"]["fields"], body
    bad_id = client.put("/cron/bad%20id", json={"spec": "@daily"}, headers=auth)
    assert bad_id.status_code == 400
    assert client.get("/cron", headers=auth).get_json()["jobs"] == []


def test_get_and_delete(client: FlaskClient, auth: dict[str, str]) -> None:
    put(client, auth, "nightly", spec="0 0 3 * * *")
    assert client.get("/cron/nightly", headers=auth).get_json()["id"] == "nightly"
    assert client.delete("/cron/nightly", headers=auth).status_code == 204
    assert client.get("/cron/nightly", headers=auth).status_code == 404
    assert client.delete("/cron/nightly", headers=auth).status_code == 204


def test_pause_and_resume(client: FlaskClient, auth: dict[str, str]) -> None:
    put(client, auth, "tick", spec="* * * * * *")
    paused = client.post("/cron/tick/pause", headers=auth).get_json()
    assert paused["paused"] is True and paused["next_fire_at"] is None
    resumed = client.post("/cron/tick/resume", headers=auth).get_json()
    assert resumed["paused"] is False and resumed["next_fire_at"] is not None
    assert client.post("/cron/nope/pause", headers=auth).status_code == 404
    assert client.post("/cron/nope/resume", headers=auth).status_code == 404


def test_run_now_and_runs_history(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    put(client, auth, "sync", spec="@yearly")
    first = client.post("/cron/sync/run", headers=auth)
    second = client.post("/cron/sync/run", headers=auth)
    assert (first.status_code, second.status_code) == (202, 202)
    runs = client.get("/cron/sync/runs", headers=auth).get_json()
    assert [job["id"] for job in runs["jobs"]] == [second.get_json()["id"], first.get_json()["id"]]
    assert all(job["cron_id"] == "sync" and job["body"] is None for job in runs["jobs"])
    db.execute("UPDATE jobs SET state = 'delivered', last_status = 204")
    listed = client.get("/cron", headers=auth).get_json()["jobs"]
    assert (listed[0]["last_state"], listed[0]["last_status"]) == ("delivered", 204)
    assert client.post("/cron/nope/run", headers=auth).status_code == 404
    assert client.get("/cron/nope/runs", headers=auth).status_code == 404
    paged = client.get("/cron/sync/runs?limit=1", headers=auth).get_json()
    assert len(paged["jobs"]) == 1 and paged["next_cursor"] == second.get_json()["id"]


def test_a_spec_that_never_fires_is_kept_with_a_warning(
    client: FlaskClient,
    auth: dict[str, str],
    db: psycopg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="scheduler")
    never = put(client, auth, "feb30", spec="0 0 30 2 *")
    assert never["warning"] == cron.NEVER_FIRES
    assert never["next_fire_at"] is None
    response = client.post(
        "/cron",
        json={
            "jobs": [
                {"id": "feb30", "spec": "0 0 30 2 *"},
                {"id": "apr31", "spec": "CRON_TZ=Europe/Paris 0 0 12 31 4 ?"},
                {"id": "daily", "spec": "@daily"},
            ]
        },
        headers=auth,
    )
    assert response.status_code == 200
    assert db.execute("SELECT count(*) FROM crons").fetchone() == (3,)

    listed = {c["id"]: c["warning"] for c in client.get("/cron", headers=auth).get_json()["jobs"]}
    assert listed == {"apr31": cron.NEVER_FIRES, "daily": None, "feb30": cron.NEVER_FIRES}
    assert client.get("/cron/apr31", headers=auth).get_json()["warning"] == cron.NEVER_FIRES
    assert client.get("/cron/daily", headers=auth).get_json()["warning"] is None
    # Paused or not, it never fires.
    paused = client.post("/cron/feb30/pause", headers=auth).get_json()
    assert paused["warning"] == cron.NEVER_FIRES

    warned = [r for r in caplog.records if getattr(r, "action", None) == "cron_never_fires"]
    assert [(r.levelname, r.cron_id) for r in warned] == [
        ("WARNING", "feb30"),
        ("WARNING", "feb30"),
        ("WARNING", "apr31"),
    ]
