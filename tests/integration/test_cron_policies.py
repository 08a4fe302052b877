"""Cron policies over the API: jitter and overlap on crons, skipped runs, and backfill."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from flask.testing import FlaskClient

from scheduler.web import schemas

WINDOW = {"from": "2030-01-01T00:00:00Z", "to": "2030-01-01T00:01:00Z"}


def put(client: FlaskClient, auth: dict[str, str], cron_id: str, **body: Any) -> dict[str, Any]:
    response = client.put(f"/cron/{cron_id}", json=body, headers=auth)
    assert response.status_code == 200, response.get_json()
    result: dict[str, Any] = response.get_json()
    return result


def backfill(
    client: FlaskClient, auth: dict[str, str], cron_id: str, window: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    response = client.post(f"/cron/{cron_id}/backfill", json=window, headers=auth)
    return response.status_code, response.get_json()


def policies(client: FlaskClient, auth: dict[str, str]) -> dict[str, tuple[float, str]]:
    listed = client.get("/cron", headers=auth).get_json()["jobs"]
    return {c["id"]: (c["jitter"], c["overlap"]) for c in listed}


def test_post_cron_sets_exactly_the_policies_sent(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    entries = [
        {"id": "spread", "spec": "@hourly", "jitter": 30, "overlap": "skip"},
        {"id": "plain", "spec": "@hourly"},
        {"id": "iso", "spec": "@daily", "jitter": "PT1M30S"},
    ]
    assert client.post("/cron", json={"jobs": entries}, headers=auth).status_code == 200
    assert policies(client, auth) == {
        "iso": (90.0, "allow"),
        "plain": (0.0, "allow"),
        "spread": (30.0, "skip"),
    }
    revisions = dict(db.execute("SELECT id, revision FROM crons").fetchall())

    # Replace-all: a policy an entry leaves out takes its default again.
    again = [{"id": "spread", "spec": "@hourly"}, {"id": "plain", "spec": "@hourly"}]
    assert client.post("/cron", json={"jobs": again}, headers=auth).status_code == 200
    assert policies(client, auth) == {"plain": (0.0, "allow"), "spread": (0.0, "allow")}
    assert client.get("/cron/spread", headers=auth).get_json()["overlap"] == "allow"
    kept = dict(db.execute("SELECT id, revision FROM crons").fetchall())
    assert kept == {k: v for k, v in revisions.items() if k != "iso"}, "same specs, same timers"


def test_a_policy_change_is_stored_without_restarting_the_schedule(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    first = put(client, auth, "report", spec="*/5 * * * * *")
    assert (first["jitter"], first["overlap"]) == (0.0, "allow")
    before = db.execute("SELECT revision, updated_at FROM crons").fetchone()
    db.execute("UPDATE crons SET last_fire_at = now()")

    changed = put(client, auth, "report", spec="*/5 * * * * *", jitter=2.5, overlap="skip")
    assert (changed["jitter"], changed["overlap"]) == (2.5, "skip")
    after = db.execute("SELECT revision, updated_at, last_fire_at FROM crons").fetchone()
    assert after is not None and after[:2] == before and after[2] is not None

    # Left out, a policy takes its default: PUT replaces the cron.
    reset = put(client, auth, "report", spec="*/5 * * * * *")
    assert (reset["jitter"], reset["overlap"]) == (0.0, "allow")
    respecified = put(client, auth, "report", spec="*/7 * * * * *", overlap="skip")
    row = db.execute("SELECT revision, overlap FROM crons").fetchone()
    assert row is not None and row[0] != before[0] and row[1] == "skip"
    assert respecified["overlap"] == "skip"


@pytest.mark.parametrize(
    ("policy", "value"),
    [
        ("jitter", -1),
        ("jitter", schemas.MAX_JITTER_SECONDS + 1),
        ("jitter", "soon"),
        ("jitter", True),
        ("jitter", None),
        ("overlap", "sometimes"),
        ("overlap", None),
        ("overlap", 1),
        ("catchup_window", -5),
        ("catchup_window", "never"),
        ("start_at", "tomorrow"),
        ("start_at", "2030-01-01T00:00:00"),  # no offset
        ("end_at", 5),
        ("max_runs", 0),
        ("max_runs", 1.5),
        ("max_runs", "3"),
        ("max_runs", 2**31),
        ("delete_after_end", "yes please"),
    ],
)
def test_a_bad_policy_is_a_400_naming_the_field(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection, policy: str, value: Any
) -> None:
    one = client.put("/cron/report", json={"spec": "@daily", policy: value}, headers=auth)
    assert one.status_code == 400
    assert policy in one.get_json()["error"]["fields"]
    entries = [{"id": "ok", "spec": "@daily"}, {"id": "bad", "spec": "@daily", policy: value}]
    whole = client.post("/cron", json={"jobs": entries}, headers=auth)
    assert whole.status_code == 400
    assert policy in whole.get_json()["error"]["fields"]["jobs"]["1"]
    assert db.execute("SELECT count(*) FROM crons").fetchone() == (0,)


def test_backfill_records_each_tick_of_the_window_once(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    put(client, auth, "ten", spec="*/10 * * * * *")
    assert backfill(client, auth, "ten", WINDOW) == (200, {"recorded": 6, "ticks": 6})
    assert backfill(client, auth, "ten", WINDOW) == (200, {"recorded": 0, "ticks": 6})
    overlapping = {"from": "2030-01-01T00:00:30+00:00", "to": "2030-01-01T00:01:30Z"}
    assert backfill(client, auth, "ten", overlapping) == (200, {"recorded": 3, "ticks": 6})
    seconds = db.execute(
        "SELECT extract(epoch FROM run_at - '2030-01-01T00:00:00Z')::int FROM jobs"
        " WHERE cron_id = 'ten' AND state = 'scheduled' ORDER BY run_at"
    ).fetchall()
    assert [s for (s,) in seconds] == list(range(0, 90, 10))
    # Backfilled ticks are not the timer's: they leave the catch-up mark alone.
    assert db.execute("SELECT last_fire_at FROM crons").fetchone() == (None,)
    runs = client.get("/cron/ten/runs", headers=auth).get_json()["jobs"]
    assert len(runs) == 9


def test_backfill_refuses_a_window_of_more_than_the_limit(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    put(client, auth, "every", spec="* * * * * *")
    limit = schemas.MAX_BACKFILL_TICKS
    too_wide = {
        "from": "2030-01-01T00:00:00Z",
        "to": f"2030-01-01T00:{(limit + 1) // 60:02d}:{(limit + 1) % 60:02d}Z",
    }
    status, body = backfill(client, auth, "every", too_wide)
    assert status == 400 and "to" in body["error"]["fields"]
    assert db.execute("SELECT count(*) FROM jobs").fetchone() == (0,)
    widest = {
        "from": "2030-01-01T00:00:00Z",
        "to": f"2030-01-01T00:{limit // 60:02d}:{limit % 60:02d}Z",
    }
    assert backfill(client, auth, "every", widest) == (200, {"recorded": limit, "ticks": limit})


@pytest.mark.parametrize(
    ("window", "field"),
    [
        ({"from": "2030-01-01T00:01:00Z", "to": "2030-01-01T00:00:00Z"}, "to"),
        ({"from": "2030-01-01T00:00:00Z", "to": "2030-01-01T00:00:00Z"}, "to"),
        ({"to": "2030-01-01T00:00:00Z"}, "from"),
        ({"from": "2030-01-01T00:00:00", "to": "2030-01-01T00:01:00Z"}, "from"),
        ({**WINDOW, "overlap": "allow"}, "overlap"),
    ],
)
def test_backfill_rejects_a_bad_window_naming_the_field(
    client: FlaskClient, auth: dict[str, str], window: dict[str, Any], field: str
) -> None:
    put(client, auth, "ten", spec="*/10 * * * * *")
    status, body = backfill(client, auth, "ten", window)
    assert status == 400 and field in body["error"]["fields"], body


def test_backfill_of_an_unknown_cron_is_a_404(client: FlaskClient, auth: dict[str, str]) -> None:
    assert backfill(client, auth, "nope", WINDOW)[0] == 404
    assert backfill(client, auth, "bad id", WINDOW)[0] == 404


def test_backfill_ignores_overlap_applies_jitter_and_sends_skipped_ticks(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    put(client, auth, "ten", spec="*/10 * * * * *", jitter=5, overlap="skip")
    # A run still waiting, and a tick that overlap skipped.
    db.execute(
        "INSERT INTO jobs (id, cron_id, run_at, next_attempt_at, max_attempts, state, finished_at)"
        " VALUES ('waiting', 'ten', '2029-01-01Z', '2029-01-01Z', 3, 'scheduled', NULL),"
        " ('skipped', 'ten', '2030-01-01T00:00:20Z', '2030-01-01T00:00:20Z', 3, 'skipped', now())"
    )
    assert backfill(client, auth, "ten", WINDOW) == (200, {"recorded": 6, "ticks": 6})
    rows = db.execute(
        "SELECT id, state, extract(epoch FROM next_attempt_at - run_at), finished_at FROM jobs"
        " WHERE run_at >= '2030-01-01Z'"
    ).fetchall()
    assert {state for _, state, _, _ in rows} == {"scheduled"}
    assert all(0 <= delay <= 5 for _, _, delay, _ in rows)
    assert [finished for job_id, _, _, finished in rows if job_id == "skipped"] == [None]
    assert backfill(client, auth, "ten", WINDOW) == (200, {"recorded": 0, "ticks": 6})


def test_skipped_runs_are_listed(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    put(client, auth, "ten", spec="*/10 * * * * *", overlap="skip")
    db.execute(
        "INSERT INTO jobs (id, cron_id, run_at, next_attempt_at, max_attempts, state, finished_at)"
        " VALUES ('01skipped', 'ten', now(), now(), 3, 'skipped', now())"
    )
    by_state = client.get("/jobs?state=skipped", headers=auth).get_json()["jobs"]
    assert [(j["id"], j["state"]) for j in by_state] == [("01skipped", "skipped")]
    runs = client.get("/cron/ten/runs", headers=auth).get_json()["jobs"]
    assert [(j["id"], j["state"]) for j in runs] == [("01skipped", "skipped")]
    assert client.get("/cron/ten", headers=auth).get_json()["last_state"] == "skipped"
    assert client.post("/jobs/01skipped/run", headers=auth).status_code == 409


def test_an_end_before_the_start_is_a_400_naming_end_at(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    bounds = {"start_at": "2030-01-02T00:00:00Z", "end_at": "2030-01-01T00:00:00Z"}
    answer = client.put("/cron/report", json={"spec": "@daily", **bounds}, headers=auth)
    assert answer.status_code == 400
    assert "end_at" in answer.get_json()["error"]["fields"]
    assert db.execute("SELECT count(*) FROM crons").fetchone() == (0,)


def test_a_cron_shows_its_bounds_and_fires_within_them(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    bounds = {"start_at": "2030-01-01T00:00:00Z", "end_at": "2030-01-03T00:00:00Z"}
    shown = put(client, auth, "daily", spec="0 0 12 * * *", max_runs=2, **bounds)
    assert shown["state"] == "active"
    assert (shown["start_at"], shown["end_at"]) == ("2030-01-01T00:00:00Z", "2030-01-03T00:00:00Z")
    assert (shown["max_runs"], shown["runs"], shown["runs_left"]) == (2, 0, 2)
    assert shown["delete_after_end"] is False and shown["ended_at"] is None
    assert shown["next_fire_at"] == "2030-01-01T12:00:00Z", "not before its start"
    preview = client.get(
        "/cron/next?spec=0%200%2012%20*%20*%20*&count=5&max_runs=2"
        "&start_at=2030-01-01T00:00:00Z&end_at=2030-01-03T00:00:00Z",
        headers=auth,
    ).get_json()
    assert preview["next"] == ["2030-01-01T12:00:00Z", "2030-01-02T12:00:00Z"]
    ended = put(client, auth, "gone", spec="0 0 12 * * *", end_at="2020-01-01T00:00:00Z")
    assert ended["next_fire_at"] is None, "past its end"
