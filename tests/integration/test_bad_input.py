"""Every endpoint answers bad input with a 400 JSON body naming the field, and stores nothing."""

from __future__ import annotations

import psycopg
import pytest
from flask.testing import FlaskClient

RAW_BODIES = [
    (b"", "invalid_json"),
    (b"{", "invalid_json"),
    (b"not json", "invalid_json"),
    (b'{"timestamp": NaN}', "invalid_json"),
    (b'{"timestamp": Infinity}', "invalid_json"),
    (b"[1, 2]", "invalid_request"),
    (b'"a string"', "invalid_request"),
    (b"null", "invalid_request"),
    (b"\xff\xfe", "invalid_json"),
]


@pytest.mark.parametrize("path", ["/insert", "/delete", "/cron"])
@pytest.mark.parametrize(("raw", "code"), RAW_BODIES)
def test_malformed_bodies(
    client: FlaskClient,
    auth: dict[str, str],
    db: psycopg.Connection,
    path: str,
    raw: bytes,
    code: str,
) -> None:
    response = client.post(path, data=raw, headers=auth, content_type="application/json")
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == code
    assert db.execute(
        "SELECT (SELECT count(*) FROM jobs) + (SELECT count(*) FROM crons)"
    ).fetchone() == (0,)


INSERTS = [
    ({}, "timestamp", "exactly one of timestamp and delay"),
    ({"body": {}}, "delay", "exactly one of timestamp and delay"),
    ({"timestamp": None, "body": {}}, "timestamp", "exactly one of timestamp and delay"),
    ({"timestamp": "2030-01-01T00:00:00Z", "delay": 3}, "delay", "exactly one"),
    ({"delay": "soon"}, "delay", "ISO 8601"),
    ({"delay": -5}, "delay", "between 0 and"),
    ({"delay": 10**12}, "delay", "between 0 and"),
    ({"delay": 5, "idempotency_key": ""}, "idempotency_key", "Length must be between"),
    ({"timestamp": 1618521420, "body": {}}, "timestamp", "Not a string"),
    ({"timestamp": "2021-04-15T14:17:00", "body": {}}, "timestamp", "offset"),
    ({"timestamp": "2021-04-15 14:17", "body": {}}, "timestamp", "offset"),
    ({"timestamp": "tomorrow", "body": {}}, "timestamp", "RFC 3339"),
    ({"timestamp": "2021-02-30T00:00:00Z", "body": {}}, "timestamp", "Not a valid date"),
    ({"timestamp": "2021-04-15T25:00:00Z", "body": {}}, "timestamp", "Not a valid date"),
    ({"timestamp": "2021-04-15T14:17:00+25:00", "body": {}}, "timestamp", "Not a valid"),
    ({"timestamp": "1969-12-31T23:59:59Z", "body": {}}, "timestamp", "1970"),
    ({"timestamp": "9999-12-31T23:59:59-01:00", "body": {}}, "timestamp", "9999"),
    (
        {"timestamp": "2030-01-01T00:00:00Z", "max_attempts": 0},
        "max_attempts",
        "greater than or equal to 1",
    ),
    ({"timestamp": "2030-01-01T00:00:00Z", "max_attempts": "3"}, "max_attempts", "integer"),
    ({"timestamp": "2030-01-01T00:00:00Z", "max_attempts": 1.5}, "max_attempts", "integer"),
    ({"timestamp": "2030-01-01T00:00:00Z", "bodyy": {}}, "bodyy", "Unknown field"),
]


@pytest.mark.parametrize(("payload", "field", "problem"), INSERTS)
def test_insert_field_errors(
    client: FlaskClient,
    auth: dict[str, str],
    db: psycopg.Connection,
    payload: dict[str, object],
    field: str,
    problem: str,
) -> None:
    response = client.post("/insert", json=payload, headers=auth)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "invalid_request"
    assert problem in " ".join(error["fields"][field])
    assert db.execute("SELECT count(*) FROM jobs").fetchone() == (0,)


DELETES = [
    ({}, "id", "Missing data"),
    ({"id": None}, "id", "null"),
    ({"id": 12}, "id", "Not a valid string"),
    ({"id": ""}, "id", "1 to 128"),
    ({"id": "x" * 129}, "id", "1 to 128"),
    ({"id": "a b"}, "id", "1 to 128"),
    ({"id": "'; DROP TABLE jobs; --"}, "id", "1 to 128"),
]


@pytest.mark.parametrize(("payload", "field", "problem"), DELETES)
def test_delete_field_errors(
    client: FlaskClient, auth: dict[str, str], payload: dict[str, object], field: str, problem: str
) -> None:
    response = client.post("/delete", json=payload, headers=auth)
    assert response.status_code == 400
    assert problem in " ".join(response.get_json()["error"]["fields"][field])


CRONS = [
    ({}, ["jobs"], "Missing data"),
    ({"jobs": None}, ["jobs"], "null"),
    ({"jobs": {"id": "a"}}, ["jobs"], "Not a valid list"),
    ({"jobs": [{"id": "a"}]}, ["jobs", "0", "spec"], "Missing data"),
    ({"jobs": [{"spec": "* * * * *"}]}, ["jobs", "0", "id"], "Missing data"),
    ({"jobs": [{"id": "a", "spec": 5}]}, ["jobs", "0", "spec"], "Not a valid string"),
    ({"jobs": [{"id": "a b", "spec": "* * * * *"}]}, ["jobs", "0", "id"], "1 to 128"),
    ({"jobs": [{"id": "a", "spec": "* * * *"}]}, ["jobs", "0", "spec"], "'* * * *'"),
    ({"jobs": [{"id": "a", "spec": "*/0 * * * * *"}]}, ["jobs", "0", "spec"], "*/0"),
    ({"jobs": [{"id": "a", "spec": "0 0 0 * Foo *"}]}, ["jobs", "0", "spec"], "Foo"),
    ({"jobs": [{"id": "a", "spec": "0 0 25 * * *"}]}, ["jobs", "0", "spec"], "25"),
    ({"jobs": [{"id": "a", "spec": "CRON_TZ=Mars/Base 0 * * * *"}]}, ["jobs", "0", "spec"], "Mars"),
    (
        {"jobs": [{"id": "a", "spec": "* * * * *"}, {"id": "a", "spec": "0 * * * *"}]},
        ["jobs", "1", "id"],
        "Duplicate",
    ),
]


@pytest.mark.parametrize(("payload", "path", "problem"), CRONS)
def test_cron_field_errors(
    client: FlaskClient,
    auth: dict[str, str],
    db: psycopg.Connection,
    payload: dict[str, object],
    path: list[str],
    problem: str,
) -> None:
    response = client.post("/cron", json=payload, headers=auth)
    assert response.status_code == 400
    node = response.get_json()["error"]["fields"]
    for key in path:
        node = node[key]
    assert problem in " ".join(node)
    assert db.execute("SELECT count(*) FROM crons").fetchone() == (0,)


PREVIEWS = [
    ("", "spec", "Missing data"),
    ("spec=61+*+*+*+*+*", "spec", "61"),
    ("spec=*+*+*+*+*&count=0", "count", "greater than or equal to 1"),
    ("spec=*+*+*+*+*&count=101", "count", "less than or equal to 100"),
    ("spec=*+*+*+*+*&count=x", "count", "integer"),
    ("spec=*+*+*+*+*&after=yesterday", "after", "RFC 3339"),
]


@pytest.mark.parametrize(("query", "field", "problem"), PREVIEWS)
def test_cron_preview_errors(
    client: FlaskClient, auth: dict[str, str], query: str, field: str, problem: str
) -> None:
    response = client.get("/cron/next?" + query, headers=auth)
    assert response.status_code == 400
    assert problem in " ".join(response.get_json()["error"]["fields"][field])
