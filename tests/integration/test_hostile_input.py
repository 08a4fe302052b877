"""Inputs that must not hurt: oversized, deeply nested, unstorable or injected values."""

from __future__ import annotations

import json

import psycopg
import pytest
from flask.testing import FlaskClient

ONE_MIB = 1024 * 1024


def nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth - 1):
        value = [value]
    return value


def test_oversized_body_is_413_before_parsing(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    big = json.dumps({"delay": 1, "body": "x" * ONE_MIB}).encode()
    response = client.post("/insert", data=big, headers=auth, content_type="application/json")
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "request_entity_too_large"
    fits = json.dumps({"delay": 1, "body": "x" * (ONE_MIB - 100)}).encode()
    assert client.post("/insert", data=fits, headers=auth).status_code == 200
    assert db.execute("SELECT count(*) FROM jobs").fetchone() == (1,)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        # The request object itself is the first level.
        (json.dumps({"delay": 1, "body": nested(63)}), None),
        (json.dumps({"delay": 1, "body": nested(64)}), "nesting deeper than 64"),
        ('{"delay": 1, "body": ' + "[" * 100_000 + "]" * 100_000 + "}", "not valid JSON"),
        ('{"delay": 1, "body": "nul\\u0000byte"}', "\\u0000"),
        ('{"delay": 1, "body": {"k\\u0000": 1}}', "\\u0000"),
        ('{"delay": 1, "body": "\\ud800"}', "surrogate"),
        ('{"delay": 1, "body": {"\\udfff": 1}}', "surrogate"),
        ('{"delay": 1, "body": "\\ud83d\\ude00 is fine"}', None),
    ],
)
def test_unstorable_json_is_a_clear_400(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection, raw: str, problem: str | None
) -> None:
    response = client.post("/insert", data=raw.encode(), headers=auth)
    if problem is None:
        assert response.status_code == 200
        assert db.execute("SELECT count(*) FROM jobs").fetchone() == (1,)
    else:
        assert response.status_code == 400
        assert problem in response.get_json()["error"]["message"]
        assert db.execute("SELECT count(*) FROM jobs").fetchone() == (0,)


def test_invalid_utf8_is_a_400(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.post("/insert", data=b'{"delay": 1, "body": "\xc3\x28"}', headers=auth)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_json"


HOSTILE = [
    "'; DROP TABLE jobs; --",
    '" OR 1=1 --',
    "%(id)s %s %% {0} {body!r}",
    "../../etc/passwd",
    "$$; SELECT pg_sleep(5); $$",
    "\\x00",
    "NULL",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_strings_are_data_or_rejected(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection, text: str
) -> None:
    job = client.post("/insert", json={"delay": 60, "body": {text: text}}, headers=auth)
    assert job.status_code == 200
    job_id = job.get_json()["id"]
    assert client.get(f"/jobs/{job_id}", headers=auth).get_json()["body"] == {text: text}
    key = client.post(
        "/insert", json={"delay": 60, "body": 1}, headers={**auth, "Idempotency-Key": text}
    )
    assert key.status_code == 200
    for path in (f"/jobs/{text}", f"/cron/{text}"):
        assert client.get(path, headers=auth).status_code in (400, 404)
    assert client.post("/delete", json={"id": text}, headers=auth).status_code in (200, 400)
    crons = client.post("/cron", json={"jobs": [{"id": "c", "spec": text}]}, headers=auth)
    assert crons.status_code == 400
    listing = client.get("/jobs", query_string={"state": text, "cursor": text}, headers=auth)
    assert listing.status_code == 400
    preview = client.get("/cron/next", query_string={"spec": text}, headers=auth)
    assert preview.status_code == 400
    tables = db.execute(
        "SELECT count(*) FROM pg_tables WHERE tablename IN ('jobs', 'crons', 'delivery_attempts')"
    ).fetchone()
    assert tables == (3,)
    assert db.execute("SELECT count(*) FROM jobs").fetchone() == (2,)
