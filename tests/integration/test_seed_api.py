"""The seed README's examples, against the real app and database."""

from __future__ import annotations

import datetime as dt
import json
import os
import pathlib
import subprocess
import sys

import psycopg
import pytest
from flask.testing import FlaskClient

from scheduler import app as stable_app_module
from scheduler import config
from tests import support


def test_banner_needs_no_secret(client: FlaskClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.get_data(as_text=True).startswith("scheduler")


def test_insert_stores_the_job(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    response = client.post(
        "/insert",
        json={"timestamp": "2031-04-15T14:17:00-07:00", "body": {"foo": "bar"}},
        headers=auth,
    )
    assert response.status_code == 200
    job_id = response.get_json()["id"]
    row = db.execute(
        "SELECT state, body, run_at, cron_id FROM jobs WHERE id = %s", (job_id,)
    ).fetchone()
    assert row == (
        "scheduled",
        {"foo": "bar"},
        dt.datetime(2031, 4, 15, 21, 17, tzinfo=dt.UTC),
        None,
    )


def test_insert_announces_only_jobs_due_before_the_dispatchers_next_look(
    client: FlaskClient, auth: dict[str, str], db_url: str
) -> None:
    within = client.application.config["SETTINGS"].announce_within

    def insert(seconds_ahead: float) -> str:
        due = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds_ahead)
        response = client.post(
            "/insert", json={"timestamp": due.isoformat(), "body": {}}, headers=auth
        )
        assert response.status_code == 200
        job_id: str = response.get_json()["id"]
        return job_id

    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute("LISTEN scheduler")
        insert(within + 2)
        insert(3600)
        insert(within - 2)
        insert(-60)
        notices = [n.payload for n in listener.notifies(timeout=2, stop_after=2)]
    # Notifications arrive in commit order: had a later job been announced, it would come first.
    # Each says in how many seconds its job is due, by the database's clock.
    assert all(len(notice.split()) == 2 and notice.startswith("j ") for notice in notices)
    due_in = [float(notice.split()[1]) for notice in notices]
    assert due_in == pytest.approx([within - 2, -60], abs=1.0)


def test_insert_ids_are_unique_and_sortable(client: FlaskClient, auth: dict[str, str]) -> None:
    ids = [
        client.post(
            "/insert", json={"timestamp": "2030-01-01T00:00:00Z", "body": i}, headers=auth
        ).get_json()["id"]
        for i in range(20)
    ]
    assert len(set(ids)) == 20
    assert all(len(i) == 26 and i.isalnum() for i in ids)


@pytest.mark.parametrize(
    "body", [None, 1, "text", [1, 2], {"nested": {"deep": [True, None, 1.5]}}, {"é": "ü ☃"}]
)
def test_insert_accepts_any_json_body(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection, body: object
) -> None:
    response = client.post(
        "/insert", json={"timestamp": "2030-01-01T00:00:00Z", "body": body}, headers=auth
    )
    assert response.status_code == 200
    stored = db.execute("SELECT body FROM jobs WHERE id = %s", (response.get_json()["id"],))
    assert stored.fetchone() == (body,)


def test_delete_cancels_and_unknown_id_is_not_an_error(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    job_id = client.post(
        "/insert", json={"timestamp": "2030-01-01T00:00:00Z", "body": {}}, headers=auth
    ).get_json()["id"]
    response = client.post("/delete", json={"id": job_id}, headers=auth)
    assert response.status_code == 200
    assert response.get_data() == b""
    assert db.execute("SELECT state FROM jobs WHERE id = %s", (job_id,)).fetchone() == (
        "cancelled",
    )
    unknown = client.post("/delete", json={"id": "cknjdu2k300153zugmucamxxo"}, headers=auth)
    assert (unknown.status_code, unknown.get_data()) == (200, b"")


def test_cron_replaces_the_whole_set(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    first = {
        "jobs": [
            {"id": "hello_world", "spec": "30 * * * * *"},
            {"id": "hello_world_2", "spec": "0 * * * * *"},
        ]
    }
    response = client.post("/cron", json=first, headers=auth)
    assert (response.status_code, response.get_data()) == (200, b"")
    revision = db.execute("SELECT revision FROM crons WHERE id = 'hello_world'").fetchone()

    second = {
        "jobs": [
            {"id": "hello_world", "spec": "30 * * * * *"},
            {"id": "nightly", "spec": "CRON_TZ=Europe/Paris 0 0 3 * * *"},
        ]
    }
    assert client.post("/cron", json=second, headers=auth).status_code == 200
    rows = db.execute("SELECT id, spec, timezone FROM crons ORDER BY id").fetchall()
    assert rows == [
        ("hello_world", "30 * * * * *", "UTC"),
        ("nightly", "CRON_TZ=Europe/Paris 0 0 3 * * *", "Europe/Paris"),
    ]
    # An unchanged cron keeps its revision, so its timer is not reset by a redeploy.
    assert db.execute("SELECT revision FROM crons WHERE id = 'hello_world'").fetchone() == revision

    assert client.post("/cron", json={"jobs": []}, headers=auth).status_code == 200
    assert db.execute("SELECT count(*) FROM crons").fetchone() == (0,)


def test_invalid_cron_spec_keeps_the_previous_set(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    client.post("/cron", json={"jobs": [{"id": "keep", "spec": "0 * * * * *"}]}, headers=auth)
    response = client.post(
        "/cron",
        json={"jobs": [{"id": "ok", "spec": "* * * * * *"}, {"id": "bad", "spec": "61 * * * * *"}]},
        headers=auth,
    )
    assert response.status_code == 400
    message = json.dumps(response.get_json())
    assert "bad" in message and "61 * * * * *" in message
    assert response.get_json()["error"]["fields"]["jobs"]["1"]["spec"]
    assert db.execute("SELECT id FROM crons").fetchall() == [("keep",)]


@pytest.mark.parametrize(
    ("method", "path", "payload"),
    [
        ("post", "/insert", {"timestamp": "2030-01-01T00:00:00Z", "body": {}}),
        ("post", "/delete", {"id": "x"}),
        ("post", "/cron", {"jobs": []}),
        ("get", "/cron", None),
        ("get", "/cron/next?spec=*+*+*+*+*", None),
    ],
)
@pytest.mark.parametrize("secret", [None, "", "wrong", support.SECRET + "x", support.SECRET[:-1]])
def test_secret_is_required(
    client: FlaskClient,
    db: psycopg.Connection,
    method: str,
    path: str,
    payload: object,
    secret: str | None,
) -> None:
    headers = {} if secret is None else {"Scheduler-Secret": secret}
    response = getattr(client, method)(path, json=payload, headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"
    assert db.execute("SELECT count(*) FROM jobs").fetchone() == (0,)


def test_unknown_route_and_method_answer_json(client: FlaskClient, auth: dict[str, str]) -> None:
    missing = client.get("/nope", headers=auth)
    assert missing.status_code == 404
    assert missing.get_json()["error"]["code"] == "not_found"
    wrong = client.get("/insert", headers=auth)
    assert wrong.status_code == 405
    assert "POST" in wrong.headers["Allow"]
    assert wrong.get_json()["error"]["code"] == "method_not_allowed"


def test_the_paths_older_procfiles_name_still_serve(
    settings: config.Settings, db_url: str, tmp_path: pathlib.Path
) -> None:
    """`scheduler.app:create_app()` and `python:scheduler.gunicorn_conf` from before scheduler.web."""
    flask_app = stable_app_module.create_app(settings)
    try:
        assert flask_app.test_client().get("/healthz").status_code == 200
    finally:
        flask_app.extensions["scheduler.database"].pool.close()
    # In a child: importing the gunicorn settings sets up prometheus_client's multiprocess mode.
    compare = (
        "import gunicorn.config, scheduler.gunicorn_conf as old, scheduler.web.gunicorn_conf as new;"
        "known = {s.name for s in gunicorn.config.KNOWN_SETTINGS};"
        "names = [n for n in vars(new) if n in known];"
        "assert 'bind' in names and 'logconfig_dict' in names, names;"
        "assert all(getattr(old, n) is getattr(new, n) for n in names), names"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDULER_")}
    env.update(DATABASE_URL=db_url, SECRET=support.SECRET, ENDPOINT="http://127.0.0.1:9/hook")
    env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", compare],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
