"""Per-job HTTP options and callbacks through the API, on a real database: each option stored and
shown (secret header values redacted) on inserts, batches, edits and crons; every bad input a 400
that names its field and writes nothing; idempotent repeats; and a property test that throws
hostile paths and header names at /insert."""

from __future__ import annotations

import dataclasses
import logging
import posixpath
import urllib.parse
from collections.abc import Iterator
from typing import Any

import hypothesis
import psycopg
import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, example, given
from hypothesis import strategies as st
from psycopg import sql

from scheduler import config, http_options
from scheduler.web import app as app_module
from tests import support

FUTURE = "2031-01-01T00:00:00Z"
# An endpoint whose URL has userinfo, a port, a base path and a query: what a job's path must
# never change.
DEEP_URL = "https://user:pw@api.example.com:8443/base/v1?src=sched"
DEEP = config.Endpoint("deep", DEEP_URL, (support.SECRET,))
HOOKS = config.Endpoint("hooks", "http://127.0.0.1:9/callbacks", (support.SECRET,))
REDACTED = http_options.REDACTED
# The `auth` fixture's header, for the property tests (hypothesis gives them no fixtures).
AUTH = {"Scheduler-Secret": support.SECRET}

# Every option set, and how GET /jobs/<id> shows it.
ALL_OPTIONS: dict[str, Any] = {
    "path": "orders/42?expand=items",
    "method": "put",
    "headers": {"X-Tenant": "acme", "Authorization": "Bearer s3cr3t-token-value"},
    "timeout": "PT4.5S",
    "retry": {"base": 2, "cap": "PT1M"},
    "callback": "hooks",
}
ALL_SHOWN: dict[str, Any] = {
    "path": "orders/42?expand=items",
    "method": "PUT",
    "headers": {"X-Tenant": "acme", "Authorization": REDACTED},
    "timeout": 4.5,
    "retry": {"base": 2.0, "cap": 60.0},
    "callback": "hooks",
}
DEFAULTS_SHOWN: dict[str, Any] = {
    "path": None,
    "method": "POST",
    "headers": {},
    "timeout": None,
    "retry": None,
    "callback": None,
}


@pytest.fixture
def settings(settings: config.Settings) -> config.Settings:
    return dataclasses.replace(settings, named_endpoints=(DEEP, HOOKS))


@pytest.fixture
def app(app: Flask) -> Flask:
    # The test client writes `json=` with the app's JSON provider, which sorts keys; a job's
    # headers keep the order they are given in. (The app writes its own JSON with jsonb.)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    return app


def insert(client: FlaskClient, auth: dict[str, str], **payload: Any) -> str:
    payload.setdefault("timestamp", FUTURE)
    response = client.post("/insert", json=payload, headers=auth)
    assert response.status_code == 200, response.get_json()
    job_id: str = response.get_json()["id"]
    return job_id


def options_of(shown: dict[str, Any]) -> dict[str, Any]:
    return {name: shown[name] for name in DEFAULTS_SHOWN}


def get_job(client: FlaskClient, auth: dict[str, str], job_id: str) -> dict[str, Any]:
    response = client.get(f"/jobs/{job_id}", headers=auth)
    assert response.status_code == 200
    shown: dict[str, Any] = response.get_json()
    return shown


def stored_options(db: psycopg.Connection[Any], job_id: str) -> tuple[Any, Any]:
    row = db.execute("SELECT http_options, callback FROM jobs WHERE id = %s", (job_id,)).fetchone()
    assert row is not None
    return row[0], row[1]


def count(db: psycopg.Connection[Any], table: str) -> int:
    row = db.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
    assert row is not None
    return int(row[0])


# --- accepted and shown -----------------------------------------------------------------------


def test_each_option_is_stored_and_shown_by_get_and_the_list(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    job_id = insert(client, auth, body={"n": 1}, **ALL_OPTIONS)
    assert options_of(get_job(client, auth, job_id)) == ALL_SHOWN
    (listed,) = client.get("/jobs", headers=auth).get_json()["jobs"]
    assert options_of(listed) == ALL_SHOWN
    # Stored as sent, for the dispatcher: nothing redacted, the method in upper case.
    assert stored_options(db, job_id) == (
        {
            "path": "orders/42?expand=items",
            "method": "PUT",
            "headers": [["X-Tenant", "acme"], ["Authorization", "Bearer s3cr3t-token-value"]],
            "timeout": 4.5,
            "retry": {"base": 2, "cap": 60},
        },
        "hooks",
    )


def test_a_job_without_options_shows_the_defaults_and_stores_none(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    plain = insert(client, auth)
    nulls = insert(client, auth, **dict.fromkeys(ALL_OPTIONS))
    for job_id in (plain, nulls):
        assert options_of(get_job(client, auth, job_id)) == DEFAULTS_SHOWN
        assert stored_options(db, job_id) == (None, None)


def test_secret_header_values_are_redacted_wherever_a_job_is_shown(
    client: FlaskClient,
    auth: dict[str, str],
    db: psycopg.Connection[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = {
        "Authorization": "Bearer value-1",
        "proxy-authorization": "Basic value-2",
        "COOKIE": "session=value-3",
        "X-Api-Key": "value-4",
        "x-auth-token": "value-5",
        "Client-SECRET": "value-6",
        "X-KEYRING": "value-7",
        "Tokens-Left": "value-8",
        "X-My-Secretary": "value-9",
    }
    shown = {"X-Tenant": "acme", "Accept": "text/plain", "User-Agent": "mine/1.0", "X-Empty": ""}
    caplog.set_level(logging.DEBUG)
    job_id = insert(client, auth, headers={**secret, **shown})
    expected = {**dict.fromkeys(secret, REDACTED), **shown}
    assert get_job(client, auth, job_id)["headers"] == expected
    assert client.get("/jobs", headers=auth).get_json()["jobs"][0]["headers"] == expected
    edited = client.patch(f"/jobs/{job_id}", json={"body": 2}, headers=auth).get_json()
    assert edited["headers"] == expected
    put = client.put("/cron/c", json={"spec": "@hourly", "headers": secret}, headers=auth)
    assert put.get_json()["headers"] == dict.fromkeys(secret, REDACTED)
    assert client.get("/cron", headers=auth).get_json()["jobs"][0]["headers"] == dict.fromkeys(
        secret, REDACTED
    )
    # The dispatcher needs the values: they are stored as they were given.
    assert dict(stored_options(db, job_id)[0]["headers"]) == {**secret, **shown}
    for value in secret.values():
        assert value not in caplog.text


def test_each_item_of_a_batch_keeps_its_own_options(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    items = [
        {"timestamp": FUTURE, **ALL_OPTIONS},
        {"timestamp": FUTURE},
        {"delay": 60, "path": "/b", "method": "DELETE", "endpoint": "deep", "callback": "default"},
    ]
    response = client.post("/jobs/batch", json={"jobs": items}, headers=auth)
    assert response.status_code == 200, response.get_json()
    first, second, third = (get_job(client, auth, i) for i in response.get_json()["ids"])
    assert options_of(first) == ALL_SHOWN
    assert options_of(second) == DEFAULTS_SHOWN
    assert options_of(third) == {
        **DEFAULTS_SHOWN,
        "path": "/b",
        "method": "DELETE",
        "callback": "default",
    }
    assert third["endpoint"] == "deep"


def test_each_limit_is_inclusive(client: FlaskClient, auth: dict[str, str]) -> None:
    longest = {
        "path": "p" * http_options.MAX_PATH_LENGTH,
        "headers": {
            **{f"X-{n}": "v" for n in range(http_options.MAX_HEADERS - 2)},
            "N" * http_options.MAX_HEADER_NAME_LENGTH: "v",
            "X-Long": "v" * http_options.MAX_HEADER_VALUE_LENGTH,
        },
        "timeout": 300,
        "retry": {"base": "P7D", "cap": "P7D"},
    }
    shown = get_job(client, auth, insert(client, auth, **longest))
    assert options_of(shown) == {
        **DEFAULTS_SHOWN,
        **longest,
        "timeout": 300.0,
        "retry": {"base": 604800.0, "cap": 604800.0},
    }


def test_a_debounced_insert_takes_the_latest_options(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    debounce = {"key": "k", "period": 3600}
    first = insert(client, auth, timestamp=None, debounce=debounce, **ALL_OPTIONS)
    again = client.post(
        "/insert",
        json={"debounce": debounce, "path": "other", "headers": {"X-B": "2"}},
        headers=auth,
    )
    assert again.get_json() == {"id": first, "debounced": True}
    assert options_of(get_job(client, auth, first)) == {
        **DEFAULTS_SHOWN,
        "path": "other",
        "headers": {"X-B": "2"},
    }


def test_an_edit_sets_resets_and_keeps_each_option(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    job_id = insert(client, auth, body=1)

    def edit(payload: dict[str, Any]) -> dict[str, Any]:
        response = client.patch(f"/jobs/{job_id}", json=payload, headers=auth)
        assert response.status_code == 200, response.get_json()
        edited: dict[str, Any] = response.get_json()
        assert edited == get_job(client, auth, job_id)
        return options_of(edited)

    assert edit(ALL_OPTIONS) == ALL_SHOWN
    # Left out: stays.
    assert edit({"body": 2}) == ALL_SHOWN
    assert edit({"path": "v2/orders"}) == {**ALL_SHOWN, "path": "v2/orders"}
    # Headers are replaced as a whole, not merged.
    assert edit({"headers": {"X-Other": "1"}})["headers"] == {"X-Other": "1"}
    # Null: back to the default, one option at a time.
    assert edit({"method": None, "timeout": None}) == {
        **ALL_SHOWN,
        "path": "v2/orders",
        "headers": {"X-Other": "1"},
        "method": "POST",
        "timeout": None,
    }
    assert edit({"retry": {"base": 0.5, "cap": 0.5}, "callback": None})["retry"] == {
        "base": 0.5,
        "cap": 0.5,
    }
    assert edit({"headers": {}})["headers"] == {}
    assert edit({"path": None, "retry": None}) == DEFAULTS_SHOWN
    # Nothing left set: stored as NULL, as a job that never had options.
    assert stored_options(db, job_id) == (None, None)
    assert get_job(client, auth, job_id)["body"] == 2


def test_crons_take_options_from_post_and_put_and_their_runs_carry_them(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    entries = [
        {"id": "a", "spec": "@hourly", **ALL_OPTIONS},
        {"id": "b", "spec": "@daily", "method": "PATCH", "endpoint": "deep"},
    ]
    assert client.post("/cron", json={"jobs": entries}, headers=auth).status_code == 200
    first, second = client.get("/cron", headers=auth).get_json()["jobs"]
    assert options_of(first) == ALL_SHOWN
    assert options_of(second) == {**DEFAULTS_SHOWN, "method": "PATCH"}
    # PUT: a cron is exactly what was sent, so options left out are reset.
    put = client.put("/cron/a", json={"spec": "@hourly", "timeout": 9}, headers=auth)
    assert put.status_code == 200, put.get_json()
    assert options_of(put.get_json()) == {**DEFAULTS_SHOWN, "timeout": 9.0}
    put = client.put("/cron/a", json={"spec": "@hourly", **ALL_OPTIONS}, headers=auth)
    assert options_of(client.get("/cron/a", headers=auth).get_json()) == ALL_SHOWN
    # Each run is a job with the cron's options and callback: one run now, one backfilled.
    run = client.post("/cron/a/run", headers=auth)
    assert run.status_code == 202
    assert options_of(get_job(client, auth, run.get_json()["id"])) == ALL_SHOWN
    window = {"from": "2030-01-01T00:00:00Z", "to": "2030-01-01T01:00:00Z"}
    backfill = client.post("/cron/a/backfill", json=window, headers=auth)
    assert backfill.get_json() == {"recorded": 1, "ticks": 1}
    runs = client.get("/cron/a/runs", headers=auth).get_json()["jobs"]
    assert len(runs) == 2
    assert all(options_of(run) == ALL_SHOWN for run in runs)


def test_a_timeout_is_allowed_up_to_scheduler_max_timeout(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    assert get_job(client, auth, insert(client, auth, timeout=300))["timeout"] == 300.0
    refused = client.post("/insert", json={"delay": 1, "timeout": 300.5}, headers=auth)
    assert refused.status_code == 400
    assert list(refused.get_json()["error"]["fields"]) == ["timeout"]
    assert count(db, "jobs") == 1


@pytest.fixture
def low_max_client(settings: config.Settings) -> Iterator[FlaskClient]:
    """The app with SCHEDULER_MAX_TIMEOUT at 10 seconds."""
    low = app_module.create_app(dataclasses.replace(settings, max_timeout=10.0))
    low.extensions["scheduler.database"].pool.wait()
    yield low.test_client()
    low.extensions["scheduler.database"].pool.close()


def test_a_lower_scheduler_max_timeout_bounds_every_route(
    low_max_client: FlaskClient, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    client = low_max_client
    job_id = insert(client, auth, timeout=10)
    assert get_job(client, auth, job_id)["timeout"] == 10.0
    too_long = {"timeout": "PT10.5S"}
    for route in ROUTES.values():
        fields = route(client, auth, job_id, too_long)
        assert fields == {"timeout": ["Must be at most 10 seconds (SCHEDULER_MAX_TIMEOUT)."]}
    assert count(db, "jobs") == 1 and count(db, "crons") == 0
    assert get_job(client, auth, job_id)["timeout"] == 10.0


# --- refused ----------------------------------------------------------------------------------

# (field, value, the keys under error.fields that must name it). A header's refusal names the
# header; the headers as a whole (too many, not an object) name only `headers`.
BAD_INPUTS: list[tuple[str, Any, tuple[str, ...]]] = [
    *(
        ("path", path, ("path",))
        for path in (
            "..",
            "../admin",
            "a/../../admin",
            "a/..",
            ".",
            "a/./b",
            "a..b",
            "//evil.example/x",
            "a//b",
            "/",
            "",
            "?q=1",
            "a?",
            "@evil.example",
            "user:pw@evil.example/x",
            "a\\b",
            "\\\\evil.example\\x",
            "%2e%2e/admin",
            "%2E./admin",
            "a/%2e",
            "a%2fb",
            "a%2F..%2Fadmin",
            "a%5cb",
            "%252e%252e",
            "a%3fb",
            "a%23b",
            "a%40b",
            "a%00b",
            "a%0d%0aHost:%20evil",
            "a%7f",
            "%c0%ae%c0%ae/admin",
            "%ff",
            "%ef%bc%8f",
            "%ef%bc%8e%ef%bc%8e",
            "a%zz",
            "a%2",
            "a\x00b",
            "a\r\nHost: evil",
            "a b",
            "a\tb",
            "a#fragment",
            "caf\u00e9",
            "http://evil.example/",
            "a/b?c=d#e",
            "a?next=%0a",
            "x" * (http_options.MAX_PATH_LENGTH + 1),
            12,
            ["a"],
        )
    ),
    *(
        ("method", method, ("method",))
        for method in ("GET", "HEAD", "OPTIONS", "CONNECT", "TRACE", "POST ", "", "po\u017ft", 1)
    ),
    *(
        ("headers", {name: value}, ("headers", name))
        for name, value in (
            ("Connection", "close"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("Transfer-Encoding", "chunked"),
            ("TE", "trailers"),
            ("Trailer", "Expires"),
            ("Upgrade", "h2c"),
            ("Proxy-Authenticate", "Basic"),
            ("Host", "evil.example"),
            ("host", "evil.example"),
            ("Content-Length", "5"),
            ("content-type", "text/plain"),
            ("Accept-Encoding", "gzip"),
            ("Expect", "100-continue"),
            ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            ("TraceState", "a=b"),
            ("Scheduler-Secret", "x"),
            ("scheduler-signature", "t=1,v1=00"),
            ("SCHEDULER-ANYTHING", "x"),
            ("Bad Name", "x"),
            ("bad:name", "x"),
            ("", "x"),
            ("\u00dcnicode", "x"),
            ("a\r\nInjected", "x"),
            ("x" * (http_options.MAX_HEADER_NAME_LENGTH + 1), "x"),
            ("X-A", "a\r\nInjected: 1"),
            ("X-A", "nul\x00"),
            ("X-A", " leading"),
            ("X-A", "trailing\t"),
            ("X-A", "caf\u00e9"),
            ("X-A", "x" * (http_options.MAX_HEADER_VALUE_LENGTH + 1)),
            ("X-A", 1),
            ("X-A", None),
            ("X-A", ["a"]),
        )
    ),
    ("headers", {"X-Dup": "1", "x-dup": "2"}, ("headers", "x-dup")),
    ("headers", {f"X-{n}": "v" for n in range(http_options.MAX_HEADERS + 1)}, ("headers",)),
    ("headers", ["X-A: 1"], ("headers",)),
    ("headers", "X-A: 1", ("headers",)),
    *(
        ("timeout", timeout, ("timeout",))
        for timeout in (0, -1, "PT0S", 300.001, "PT5M1S", 10**400, "soon", True)
    ),
    ("retry", {"base": 1}, ("retry", "cap")),
    ("retry", {"cap": 1}, ("retry", "base")),
    ("retry", {"base": 5, "cap": 2}, ("retry", "cap")),
    ("retry", {"base": 0, "cap": 1}, ("retry", "base")),
    ("retry", {"base": -1, "cap": 1}, ("retry", "base")),
    ("retry", {"base": 1, "cap": 2, "jitter": 1}, ("retry", "jitter")),
    ("retry", 5, ("retry", "_schema")),
    *(("callback", name, ("callback",)) for name in ("nowhere", "", 5, "hooks/x")),
]


def refused_insert(
    client: FlaskClient, auth: dict[str, str], job_id: str, bad: dict[str, Any]
) -> Any:
    return refusal(client.post("/insert", json={"delay": 60, **bad}, headers=auth))


def refused_batch(
    client: FlaskClient, auth: dict[str, str], job_id: str, bad: dict[str, Any]
) -> Any:
    batch = {"jobs": [{"delay": 60}, {"delay": 60, **bad}]}
    fields = refusal(client.post("/jobs/batch", json=batch, headers=auth))
    assert list(fields) == ["jobs"] and list(fields["jobs"]) == ["1"], fields
    return fields["jobs"]["1"]


def refused_edit(
    client: FlaskClient, auth: dict[str, str], job_id: str, bad: dict[str, Any]
) -> Any:
    return refusal(client.patch(f"/jobs/{job_id}", json={"body": "edited", **bad}, headers=auth))


def refused_put_cron(
    client: FlaskClient, auth: dict[str, str], job_id: str, bad: dict[str, Any]
) -> Any:
    return refusal(client.put("/cron/new", json={"spec": "@hourly", **bad}, headers=auth))


def refused_post_cron(
    client: FlaskClient, auth: dict[str, str], job_id: str, bad: dict[str, Any]
) -> Any:
    entries = [{"id": "fine", "spec": "@hourly"}, {"id": "bad", "spec": "@hourly", **bad}]
    fields = refusal(client.post("/cron", json={"jobs": entries}, headers=auth))
    assert list(fields) == ["jobs"] and list(fields["jobs"]) == ["1"], fields
    return fields["jobs"]["1"]


def refusal(response: Any) -> Any:
    assert response.status_code == 400, response.get_json()
    error = response.get_json()["error"]
    # A value PostgreSQL cannot store (NUL) is refused before validation, as `invalid_json`.
    assert error["code"] in ("invalid_request", "invalid_json"), error
    return error["fields"]


ROUTES = {
    "insert": refused_insert,
    "batch": refused_batch,
    "edit": refused_edit,
    "put_cron": refused_put_cron,
    "post_cron": refused_post_cron,
}


@pytest.mark.parametrize("route", list(ROUTES))
def test_every_bad_option_is_a_400_naming_it_that_writes_nothing(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection[Any], route: str
) -> None:
    job_id = insert(client, auth, body="kept", **ALL_OPTIONS)
    put = client.put("/cron/kept", json={"spec": "@daily", **ALL_OPTIONS}, headers=auth)
    assert put.status_code == 200
    jobs_before = db.execute("SELECT * FROM jobs ORDER BY id").fetchall()
    crons_before = db.execute("SELECT * FROM crons ORDER BY id").fetchall()
    for field, value, names in BAD_INPUTS:
        fields = ROUTES[route](client, auth, job_id, {field: value})
        # Only the field is named (and within it the header, or the retry's part).
        assert list(fields) == [field], (field, value, fields)
        inner = fields[field]
        if len(names) > 1:
            assert isinstance(inner, dict) and names[1] in inner, (value, fields)
        else:
            assert isinstance(inner, list) and inner, (value, fields)
            assert all(isinstance(message, str) for message in inner), (value, fields)
    assert db.execute("SELECT * FROM jobs ORDER BY id").fetchall() == jobs_before
    assert db.execute("SELECT * FROM crons ORDER BY id").fetchall() == crons_before


# --- idempotency ------------------------------------------------------------------------------


def test_a_repeat_with_the_same_options_answers_as_the_first_and_others_conflict(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    request = {"timestamp": FUTURE, "idempotency_key": "order-42", **ALL_OPTIONS}
    job_id = insert(client, auth, **request)
    # The same options, however they are written.
    same = [
        request,
        {**request, "method": "PUT"},
        {**request, "timeout": 4.5},
        {**request, "retry": {"cap": 60, "base": "PT2S"}},
        {**request, "headers": dict(reversed(list(ALL_OPTIONS["headers"].items())))},
    ]
    for repeat in same:
        response = client.post("/insert", json=repeat, headers=auth)
        assert response.status_code == 200, (repeat, response.get_json())
        assert response.get_json()["id"] == job_id
    different = [
        {**request, "path": "orders/43"},
        {**request, "method": "PATCH"},
        {**request, "headers": {"X-Tenant": "acme"}},
        {**request, "headers": {**ALL_OPTIONS["headers"], "X-Tenant": "other"}},
        {**request, "timeout": 5},
        {**request, "retry": {"base": 2, "cap": 61}},
        {**request, "callback": "default"},
        {**request, "callback": None},
        {key: value for key, value in request.items() if key != "path"},
    ]
    for repeat in different:
        response = client.post("/insert", json=repeat, headers=auth)
        assert response.status_code == 409, (repeat, response.get_json())
        assert response.get_json()["error"]["code"] == "conflict"
    assert count(db, "jobs") == 1
    assert options_of(get_job(client, auth, job_id)) == ALL_SHOWN


def test_a_repeated_batch_with_the_same_options_answers_as_the_first(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    headers = {**auth, "Idempotency-Key": "batch-7"}
    batch = {"jobs": [{"delay": 60, **ALL_OPTIONS}, {"delay": 60}]}
    first = client.post("/jobs/batch", json=batch, headers=headers)
    assert first.status_code == 200
    again = client.post("/jobs/batch", json=batch, headers=headers)
    assert again.get_json() == first.get_json()
    batch["jobs"][1]["method"] = "DELETE"
    assert client.post("/jobs/batch", json=batch, headers=headers).status_code == 409
    assert count(db, "jobs") == 2


# --- hostile paths and header names -----------------------------------------------------------

# Pieces that make paths leave their endpoint's, or look as if they could: separators, dot
# segments, encodings of both (plain, double, overlong, fullwidth), userinfo, authorities,
# control characters and a few ordinary ones between them.
PATH_PIECES = [
    "a",
    "b1",
    "/",
    "//",
    ".",
    "..",
    "%",
    "%2",
    "%2e",
    "%2E",
    "%2f",
    "%2F",
    "%5c",
    "%25",
    "%3f",
    "%40",
    "%00",
    "%0a",
    "%20",
    "%7f",
    "%c0%ae",
    "%c0%af",
    "%e2%80%a8",
    "%ef%bc%8f",
    "%ef%bc%8e",
    "%e2%80%a5",
    "%c3%a9",
    "@",
    "\\",
    ":",
    "?",
    "#",
    "&",
    "=",
    ";",
    "~",
    " ",
    "\t",
    "\x00",
    "\r\n",
    "\uff0e",
    "\u00e9",
    "http:",
    "evil.example",
    "127.0.0.1:80",
]
HOSTILE_PATHS = st.one_of(
    st.lists(st.sampled_from(PATH_PIECES), max_size=8).map("".join),
    st.text(max_size=12),
)
NAME_PIECES = [
    "X",
    "-",
    "Api",
    "Key",
    "Token",
    "Host",
    "Content",
    "Length",
    "Type",
    "Accept",
    "Encoding",
    "Connection",
    "Keep-Alive",
    "Transfer",
    "TE",
    "Trailer",
    "Upgrade",
    "Expect",
    "Scheduler",
    "traceparent",
    "tracestate",
    "Proxy",
    "Authorization",
    "Cookie",
    "_",
    ".",
    "~",
    "!",
    "'",
    " ",
    ":",
    "\r\n",
    "\x00",
    "\u00e9",
    "(",
    '"',
]
HOSTILE_NAMES = st.one_of(
    st.lists(st.sampled_from(NAME_PIECES), min_size=1, max_size=5).map("".join),
    st.text(max_size=10),
)
# What the issue says a job may not send, written out here rather than taken from the code under
# test: hop-by-hop headers, those the scheduler sets, the trace context, and Scheduler-*.
REFUSED_NAMES = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "host",
    "content-length",
    "content-type",
    "accept-encoding",
    "traceparent",
    "tracestate",
}
HOSTILE = hypothesis.settings(
    max_examples=200,
    deadline=None,  # a request is a few database round trips
    database=None,
    # One app and database for every example: each looks only at its own job.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def stays_under_the_endpoint(url: str) -> None:
    """`url` has DEEP_URL's scheme and authority, and a path under its path, however a server
    decodes and resolves it."""
    endpoint = urllib.parse.urlsplit(DEEP_URL)
    parts = urllib.parse.urlsplit(url)
    assert (parts.scheme, parts.netloc) == (endpoint.scheme, endpoint.netloc), url
    assert (parts.hostname, parts.port, parts.username) == ("api.example.com", 8443, "user"), url
    assert parts.path.startswith(endpoint.path + "/"), url
    decoded = urllib.parse.unquote(parts.path)
    assert posixpath.normpath(decoded).startswith(endpoint.path + "/"), url
    assert "\\" not in decoded and "//" not in decoded, url
    assert not parts.fragment, url


@given(path=HOSTILE_PATHS)
@example(path="orders/42?next=%2Fhome&q=a/b..c")
@example(path="%2e%2e%2fadmin")
@example(path="%ef%bc%8f%ef%bc%8f")
@example(path="a/%c0%ae%c0%ae/b")
@example(path="/v1/items;matrix=1/~x:y")
@HOSTILE
def test_a_hostile_path_is_refused_naming_path_or_stays_under_the_endpoint(
    app: Flask, path: str
) -> None:
    client = app.test_client()
    payload = {"timestamp": FUTURE, "endpoint": "deep", "path": path}
    response = client.post("/insert", json=payload, headers=AUTH)
    if response.status_code == 400:
        assert list(response.get_json()["error"]["fields"]) == ["path"], response.get_json()
        return
    assert response.status_code == 200, response.get_json()
    shown = client.get(f"/jobs/{response.get_json()['id']}", headers=AUTH).get_json()
    assert shown["path"] == path
    joined = http_options.join_url(DEEP_URL, path)
    stays_under_the_endpoint(joined)
    # The dispatcher sends the URL as requests prepares it (quoting what it quotes).
    prepared = requests.PreparedRequest()
    prepared.prepare_url(joined, None)
    assert prepared.url is not None
    stays_under_the_endpoint(prepared.url)


@given(name=HOSTILE_NAMES)
@example(name="X-Api-Key")
@example(name="Scheduler-Secret")
@example(name="Keep-Alive")
@example(name="X\r\nHost")
@HOSTILE
def test_a_hostile_header_name_is_refused_naming_it_or_shown_as_given(
    app: Flask, name: str
) -> None:
    client = app.test_client()
    payload = {"timestamp": FUTURE, "headers": {name: "value"}}
    response = client.post("/insert", json=payload, headers=AUTH)
    if response.status_code == 400:
        fields = response.get_json()["error"]["fields"]
        if "\x00" in name:
            # Refused before validation, as anywhere in a request: the key cannot be stored.
            assert fields == {"headers": ["A key contains \\u0000, which PostgreSQL cannot store."]}
        else:
            assert list(fields) == ["headers"] and list(fields["headers"]) == [name], fields
        return
    assert response.status_code == 200, response.get_json()
    # Accepted: a valid field name that a job may send.
    requests.utils.check_header_validity((name, "value"))
    assert name.isascii() and name.lower() not in REFUSED_NAMES
    assert not name.lower().startswith("scheduler-")
    shown = client.get(f"/jobs/{response.get_json()['id']}", headers=AUTH).get_json()
    lowered = name.lower()
    secret = any(word in lowered for word in ("key", "token", "secret"))
    secret = secret or lowered in ("authorization", "proxy-authorization", "cookie")
    assert shown["headers"] == {name: REDACTED if secret else "value"}
