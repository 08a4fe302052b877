"""Inputs that must not hurt: oversized, deeply nested, unstorable or injected values."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator

import psycopg
import pytest
from flask.testing import FlaskClient

from scheduler import config, jobs
from scheduler.web import app as app_module
from scheduler.worker import attempt

ONE_MIB = 1024 * 1024


def nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.fixture(params=["werkzeug", "gunicorn"])
def body_client(request: pytest.FixtureRequest, client: FlaskClient) -> FlaskClient:
    """The test client, and the test client with an input stream that ends at the body's end,
    as gunicorn's does (wsgi.input_terminated), which the web reads in one call."""
    if request.param == "gunicorn":
        client.environ_base["wsgi.input_terminated"] = True
    return client


def test_oversized_body_is_413_before_parsing(
    body_client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    client = body_client
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
    body_client: FlaskClient,
    auth: dict[str, str],
    db: psycopg.Connection,
    raw: str,
    problem: str | None,
) -> None:
    response = body_client.post("/insert", data=raw.encode(), headers=auth)
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


SMALL_LIMIT = 2048


@pytest.fixture
def small_client(settings: config.Settings) -> Iterator[FlaskClient]:
    """The app with SCHEDULER_MAX_BODY_BYTES at 2 KiB."""
    small = app_module.create_app(dataclasses.replace(settings, max_body_bytes=SMALL_LIMIT))
    yield small.test_client()
    small.extensions["scheduler.database"].pool.close()


def job_with(body: str) -> str:
    return '{"delay": 60, "body": ' + body + "}"


def batch_of(*bodies: str) -> str:
    return '{"jobs": [' + ", ".join(job_with(body) for body in bodies) + "]}"


def delivered(db: psycopg.Connection, job_id: str) -> bytes:
    """The message a delivery of the job sends, built by the dispatcher's code from the row."""
    row = db.execute(
        "SELECT id, cron_id, body::text, run_at, 1, max_attempts, 0 FROM jobs WHERE id = %s",
        (job_id,),
    ).fetchone()
    assert row is not None
    return attempt.build_payload(jobs.Delivery(*row))


def numbers_and_padding(stored: int, count: int = 5) -> str:
    """A body stored as exactly `stored` bytes: `count` times 1e300 (301 digits each), and a
    string."""
    numbers = ", ".join(["1e300"] * count)
    padding = stored - len("[" + ", ".join(["1" + "0" * 300] * count) + ', ""]')
    assert padding >= 0
    return "[" + numbers + ', "' + "x" * padding + '"]'


def test_an_accepted_body_is_delivered_within_the_limit_counted_as_stored(
    small_client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    budget = SMALL_LIMIT - jobs.ENVELOPE_BYTES
    fits = small_client.post("/insert", data=job_with(numbers_and_padding(budget)), headers=auth)
    assert fits.status_code == 200, fits.data
    job_id = fits.get_json()["id"]
    assert db.execute(
        "SELECT octet_length(body::text) FROM jobs WHERE id = %s", (job_id,)
    ).fetchone() == (budget,)
    assert len(delivered(db, job_id)) == SMALL_LIMIT

    too_large = small_client.post(
        "/insert", data=job_with(numbers_and_padding(budget + 1)), headers=auth
    )
    assert too_large.status_code == 413
    assert "body" in too_large.get_json()["error"]["fields"]
    assert db.execute("SELECT count(*) FROM jobs").fetchone() == (1,)


def test_the_bodies_of_a_batch_share_the_limit(
    small_client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    budget = SMALL_LIMIT - jobs.ENVELOPE_BYTES
    half = numbers_and_padding(budget // 2, count=2)
    rest = '"' + "y" * (budget - budget // 2 - 2) + '"'
    fits = small_client.post("/jobs/batch", data=batch_of(half, rest), headers=auth)
    assert fits.status_code == 200, fits.data
    over = batch_of(half, rest[:-1] + 'y"')
    response = small_client.post("/jobs/batch", data=over, headers=auth)
    assert response.status_code == 413
    assert list(response.get_json()["error"]["fields"]["jobs"]) == ["1"]
    stored = db.execute("SELECT sum(octet_length(body::text)) FROM jobs").fetchone()
    assert stored == (budget,)


def test_separators_count_as_stored_too(
    small_client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    # Sent without spaces the request fits; jsonb writes ", " between items, and that is what
    # a delivery carries.
    compact = "[" + ",".join(["0"] * 700) + "]"
    assert len(job_with(compact)) < SMALL_LIMIT
    response = small_client.post("/insert", data=job_with(compact), headers=auth)
    assert response.status_code == 413
    assert db.execute("SELECT count(*) FROM jobs").fetchone() == (0,)


@pytest.mark.parametrize(
    ("method", "path"), [("PUT", "/cron//x"), ("GET", "/jobs//x"), ("DELETE", "/jobs//x")]
)
def test_a_doubled_slash_is_a_json_404_not_an_html_redirect(
    client: FlaskClient, auth: dict[str, str], method: str, path: str
) -> None:
    response = client.open(path, method=method, json={"spec": "@daily"}, headers=auth)
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"
