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


def job(body: str = "null") -> str:
    """One job, due in 2030, with `body` as its raw JSON."""
    return '{"timestamp": "2030-01-01T00:00:00Z", "body": ' + body + "}"


def batch(*bodies: str) -> str:
    return '{"jobs": [' + ", ".join(job(body) for body in bodies) + "]}"


def method_of(path: str) -> str:
    return "PUT" if path.startswith("/cron/") else "POST"


def named(fields: dict[str, object], where: str) -> str:
    """The messages `fields` has at `where` (dotted: "jobs.0.body")."""
    node: object = fields
    for key in where.split("."):
        assert isinstance(node, dict), (fields, where)
        node = node[key]
    assert isinstance(node, list), (fields, where)
    return " ".join(node)


def count_rows(db: psycopg.Connection) -> object:
    return db.execute(
        "SELECT (SELECT count(*) FROM jobs) + (SELECT count(*) FROM crons)"
    ).fetchone()


# Values PostgreSQL cannot store, or that overflow a float, anywhere in a request: (path, raw
# body, the field that `fields` names, words of its message).
UNSTORABLE = [
    ("/insert", job('{"a": 1e400}'), "body", "At /a: the number 1e400 is beyond a 64-bit float"),
    ("/insert", job("-1e400"), "body", "The number -1e400 is beyond a 64-bit float"),
    ("/jobs/batch", batch("1e999"), "jobs.0.body", "The number 1e999 is beyond"),
    (
        "/jobs/batch",
        batch("1", '[1, {"x": -2E+309}]'),
        "jobs.1.body",
        "At /1/x: the number -2E+309",
    ),
    ("/insert", job("1" * 400), "body", "is beyond a 64-bit float"),
    ("/insert", job("9" * 5000), "body", "(5000 characters) is beyond"),
    ("/insert", job("1e-16384"), "body", "1e-16384 has 16384 digits after the decimal point"),
    ("/insert", job("[0." + "0" * 16383 + "1]"), "body", "At /0: the number 0.00"),
    ("/insert", job('{"z": 0e1073741823}'), "body", "At /z: the exponent of 0e1073741823"),
    ("/insert", job("1e99999999999999999999"), "body", "is beyond a 64-bit float"),
    ("/insert", job("-1e-99999999999999999999"), "body", "The exponent of -1e-9999"),
    ("/insert", '{"delay": 1e400}', "delay", "1e400 is beyond"),
    ("/insert", '{"delay": 1, "max_attempts": 1e999}', "max_attempts", "1e999 is beyond"),
    ("/insert", '{"delay": 1, "bodyy": [1e400]}', "bodyy.0", "1e400 is beyond"),
    ("/cron/c1", '{"spec": "* * * * *", "timezone": 1e400}', "timezone", "1e400 is beyond"),
    ("/cron", '{"jobs": [{"id": "c1", "spec": "\\u0000"}]}', "jobs.0.spec", "\\u0000"),
    ("/delete", '{"id": "\\udc00"}', "id", "lone UTF-16 surrogate"),
]


@pytest.mark.parametrize(("path", "raw", "where", "problem"), UNSTORABLE)
def test_unstorable_values_are_a_400_naming_the_field(
    client: FlaskClient,
    auth: dict[str, str],
    db: psycopg.Connection,
    path: str,
    raw: str,
    where: str,
    problem: str,
) -> None:
    response = client.open(path, method=method_of(path), data=raw.encode(), headers=auth)
    assert response.status_code == 400, response.data[:500]
    error = response.get_json()["error"]
    assert error["code"] == "invalid_json"
    assert "cannot be stored" in error["message"]
    assert problem in named(error["fields"], where)
    assert count_rows(db) == (0,)


# Within the request limit, but 1e300 is stored and delivered as its 301 digits: (path, raw
# body, the field that `fields` names).
TOO_LARGE_AS_STORED = [
    ("/insert", job("[" + ", ".join(["1e300"] * 4000) + "]"), "body"),
    ("/jobs/batch", batch(*["[" + ",".join(["1e300"] * 500) + "]"] * 8), "jobs.6.body"),
]


@pytest.mark.parametrize(("path", "raw", "where"), TOO_LARGE_AS_STORED)
def test_bodies_too_large_as_stored_are_a_413(
    client: FlaskClient,
    auth: dict[str, str],
    db: psycopg.Connection,
    path: str,
    raw: str,
    where: str,
) -> None:
    assert len(raw) < 1024 * 1024 // 10
    response = client.post(path, data=raw.encode(), headers=auth)
    assert response.status_code == 413
    error = response.get_json()["error"]
    assert error["code"] == "request_entity_too_large"
    assert "may take 1048515 bytes together" in named(error["fields"], where)
    assert "1e300 as 301 digits" in named(error["fields"], where)
    assert count_rows(db) == (0,)


def test_an_idempotency_key_header_that_cannot_be_stored_is_a_400(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    for key in ("key\x00", "key\ud800"):
        response = client.post(
            "/insert", data=job().encode(), headers={**auth, "Idempotency-Key": key}
        )
        assert response.status_code == 400
        error = response.get_json()["error"]
        assert error["code"] == "invalid_request"
        assert "Idempotency-Key header cannot be stored" in error["message"]
    assert count_rows(db) == (0,)


# Bodies are never decoded: an encoded one is refused rather than read as JSON.
ENCODED = [
    ("/insert", job(), "gzip"),
    ("/jobs/batch", batch("1"), "br"),
    ("/cron/c1", '{"spec": "* * * * *"}', "deflate, identity"),
    ("/cron", '{"jobs": []}', "x-custom"),
    ("/delete", '{"id": "x"}', "compress"),
]


@pytest.mark.parametrize(("path", "raw", "coding"), ENCODED)
def test_an_encoded_body_is_a_415(
    client: FlaskClient,
    auth: dict[str, str],
    db: psycopg.Connection,
    path: str,
    raw: str,
    coding: str,
) -> None:
    response = client.open(
        path,
        method=method_of(path),
        data=raw.encode(),
        headers={**auth, "Content-Encoding": coding},
    )
    assert response.status_code == 415
    assert response.get_json()["error"]["code"] == "unsupported_media_type"
    assert response.headers["Accept-Encoding"] == "identity"
    assert count_rows(db) == (0,)


def test_identity_is_the_one_content_encoding_accepted(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    response = client.post(
        "/insert", json={"delay": 60}, headers={**auth, "Content-Encoding": " Identity "}
    )
    assert response.status_code == 200
