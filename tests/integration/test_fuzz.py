"""Property-based fuzzing of the API against the real app on a real database.

Schemathesis generates requests from the OpenAPI document (its examples, then valid and invalid
requests) for every operation and checks each answer: no 5xx, a documented status code and
content type, documented headers, a body that matches the documented schema, and invalid input
rejected. A second pass sends no secret and expects 401 from every route but the public ones.
A plain hypothesis test throws random JSON at /insert and checks that a rejected request stores
nothing. (test_openapi.py checks the methods: an undocumented one is a 405.)
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import hypothesis
import psycopg
import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, example, given
from hypothesis import strategies as st
from schemathesis import GenerationMode, checks

from scheduler import config
from scheduler.web import api, http, openapi
from scheduler.web import app as app_module
from tests import support

# The `auth` fixture's header, as a constant for the module-scoped fixtures below.
AUTH = {http.SECRET_HEADER: support.SECRET}

# Per operation and per kind of input (the document's examples, valid and invalid requests).
FUZZ = hypothesis.settings(
    max_examples=25,
    deadline=None,  # a request is a few database round trips; timing belongs in `make bench`
    # Every operation's inner test has the same name, so saved examples would be replayed into
    # another operation's strategy; a failure prints its falsifying request anyway.
    database=None,
    # Drawing a request from a large schema (a batch of jobs) can take a while on a loaded
    # two-core CI; the budget is bounded by max_examples, not by time.
    suppress_health_check=[HealthCheck.too_slow],
)

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
    checks.negative_data_rejection,
    # Not positive_data_acceptance: a request can match the document and still be refused, e.g.
    # a well-formed string that is no cron spec, or a reused idempotency key (both documented).
]

# The document the app serves (test_openapi.py checks that they are equal). Schemathesis' own
# pytest integration (`schema.parametrize()`, `schemathesis.pytest.from_fixture`) does not work
# with pytest 9.2: every operation's test gets the same node id, so under xdist (`make test`) one
# of them runs and the failures of the others are lost. Its strategies, driven by pytest's
# parametrize and hypothesis' @given, do not depend on pytest's internals.
SCHEMA = schemathesis.openapi.from_dict(openapi.document(api.bp))
OPERATIONS = {
    f"{method.upper()} {path}": SCHEMA[path][method]
    for path, item in openapi.document(api.bp)["paths"].items()
    for method in item
}


def sendable_query(case: schemathesis.Case) -> bool:
    """Whether every query parameter can be written into a URL: schemathesis' invalid requests
    sometimes give one an object, a null or an empty list as its value, which the request it
    makes silently leaves out, so the app sees a valid query and is then blamed for accepting
    it."""

    def scalar(value: Any) -> bool:
        return isinstance(value, str | int | float | bool)

    return all(
        (bool(value) and all(scalar(item) for item in value))
        if isinstance(value, list)
        else scalar(value)
        for value in (case.query or {}).values()
    )


def fuzz(operation: schemathesis.APIOperation, settings: hypothesis.settings, test: Any) -> None:
    """Run `test(case)` on the document's examples, then on valid and on invalid requests."""
    sources = [("valid", operation.as_strategy(GenerationMode.POSITIVE))]
    examples = operation.get_strategies_from_examples()
    if examples:
        sources.insert(0, ("examples", st.one_of(examples)))
    raw = operation.definition.raw
    if raw.get("parameters") or "requestBody" in raw:  # else there is nothing to make invalid
        invalid = operation.as_strategy(GenerationMode.NEGATIVE).filter(sendable_query)
        sources.append(("invalid", invalid))
    for kind, cases in sources:
        try:
            settings(given(case=cases)(test))()
        except Exception as exc:
            exc.add_note(f"while sending {operation.label} {kind} requests")
            raise


@pytest.fixture(scope="module")
def fuzz_db_url(server_url: str, template_db: str) -> Iterator[str]:
    """One fresh database for the module: a database per operation would cost seconds, and what
    one operation leaves (jobs, crons, idempotency keys) makes the next one's answers richer."""
    with support.fresh_database(server_url, template_db) as url:
        yield url


@pytest.fixture(scope="module")
def fuzz_app(fuzz_db_url: str) -> Iterator[Flask]:
    # As the `settings` and `app` fixtures, with a dispatcher heartbeat that stays fresh for the
    # whole run (see `seeded`), so that /readyz answers 200 rather than its 503.
    settings = config.Settings(
        database_url=fuzz_db_url,
        secrets=(support.SECRET,),
        endpoint="http://127.0.0.1:9/hook",
        heartbeat_max_age=3600.0,
    )
    flask_app = app_module.create_app(settings)
    flask_app.extensions["scheduler.database"].pool.wait()  # see the `app` fixture
    yield flask_app
    flask_app.extensions["scheduler.database"].pool.close()


@pytest.fixture
def seeded(fuzz_app: Flask, fuzz_db_url: str) -> Flask:
    """Before each operation: the document's example cron and job exist (earlier operations may
    have deleted or changed them), so the examples reach the 200 answers and their schemas."""
    client = fuzz_app.test_client()
    cron = {"spec": openapi.EXAMPLE_SPEC, "timezone": "Europe/Paris"}
    response = client.put(f"/cron/{openapi.EXAMPLE_CRON_ID}", json=cron, headers=AUTH)
    assert response.status_code == 200, response.get_json()
    response = client.post(f"/cron/{openapi.EXAMPLE_CRON_ID}/resume", headers=AUTH)
    assert response.status_code == 200, response.get_json()
    with psycopg.connect(fuzz_db_url, autocommit=True) as conn:
        # A live dispatcher, as far as /readyz can tell.
        conn.execute(
            "UPDATE dispatcher_leader SET epoch = 1, holder = 'fuzz', heartbeat_at = now()"
        )
        # A job that failed its one attempt, so GET shows a history and retry applies.
        conn.execute(
            "INSERT INTO jobs (id, body, run_at, state, attempts, max_attempts, next_attempt_at,"
            " last_status, last_error, finished_at)"
            " VALUES (%(id)s, '{\"foo\": \"bar\"}', %(at)s, 'failed', 1, 1, %(at)s, 500,"
            " 'HTTP 500', now())"
            " ON CONFLICT (id) DO UPDATE SET state = 'failed', attempts = 1, max_attempts = 1,"
            " finished_at = now(), updated_at = now()",
            {"id": openapi.EXAMPLE_JOB_ID, "at": openapi.EXAMPLE_TIME},
        )
        conn.execute(
            "INSERT INTO delivery_attempts VALUES (%s, 1, now(), 12, 500, 'HTTP 500', 'oops')"
            " ON CONFLICT DO NOTHING",
            (openapi.EXAMPLE_JOB_ID,),
        )
    return fuzz_app


@pytest.mark.parametrize("label", list(OPERATIONS))
def test_api_conforms_to_its_document(label: str, seeded: Flask) -> None:
    def test(case: schemathesis.Case) -> None:
        case.call_and_validate(app=seeded, headers=AUTH, checks=CHECKS)

    fuzz(OPERATIONS[label], FUZZ, test)


@pytest.mark.parametrize("label", list(OPERATIONS))
def test_api_without_secret_is_unauthorized(label: str, fuzz_app: Flask) -> None:
    operation = OPERATIONS[label]
    public = operation.definition.raw["operationId"] in http.PUBLIC_ENDPOINTS

    def test(case: schemathesis.Case) -> None:
        response = case.call(app=fuzz_app)
        if public:
            assert response.status_code != 401
        else:
            assert response.status_code == 401, (case.method, case.formatted_path, response.text)
            assert response.json()["error"]["code"] == "unauthorized"
        case.validate_response(response, checks=CHECKS)

    fuzz(operation, hypothesis.settings(FUZZ, max_examples=5), test)


# --- /insert with random JSON, without schemathesis ------------------------------------------

JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=16,
)
RFC3339 = st.datetimes(
    min_value=dt.datetime(1960, 1, 1),
    timezones=st.timezones(),
).map(lambda moment: moment.isoformat())
DURATIONS = st.from_regex(r"\AP(?:[0-9]{1,3}W)?(?:[0-9]{1,3}D)?(?:T[0-9]{1,4}(?:\.[0-9])?S)?\Z")
# Delays as random strings, plus numbers; integers stay within a float's range because of the
# bug that test_insert_rejects_a_delay_too_large_for_a_float pins down.
DELAYS = st.text() | DURATIONS | st.floats() | st.integers(-(10**308), 10**308)
TIMESTAMPS = st.text() | RFC3339


@st.composite
def insert_requests(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly one of timestamp and delay, sometimes both or neither, and any JSON as body."""
    payload: dict[str, Any] = {"body": draw(JSON_VALUES)}
    when = draw(st.sampled_from(["timestamp", "delay", "timestamp", "delay", "both", "neither"]))
    if when in ("timestamp", "both"):
        payload["timestamp"] = draw(TIMESTAMPS)
    if when in ("delay", "both"):
        payload["delay"] = draw(DELAYS)
    return payload


def exact(text: str | bytes) -> Any:
    """JSON with every number as a Decimal: jsonb keeps a number's decimal value, so 1e16 comes
    back as 10000000000000000 and 1.7976931348623157e308 with all its digits."""
    return json.loads(text, parse_float=Decimal, parse_int=Decimal)


def count_jobs(db: psycopg.Connection[Any]) -> int:
    row = db.execute("SELECT count(*) FROM jobs").fetchone()
    assert row is not None
    return int(row[0])


@given(payload=insert_requests())
@example(payload={"delay": 5, "body": {"nested": [1.5, None, "x"]}})
@example(payload={"timestamp": "2030-01-01T00:00:00Z", "body": "\x00"})
@example(payload={"timestamp": "2030-01-01T00:00:00Z", "body": {"\ud800": 1}})
@example(payload={"delay": float("nan"), "body": None})
@hypothesis.settings(
    max_examples=150,
    deadline=None,
    database=None,  # as FUZZ
    # One app and database for all examples: each example counts the rows before and after.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_insert_random_json_is_a_200_or_a_400_that_stores_nothing(
    client: FlaskClient, db: psycopg.Connection[Any], payload: dict[str, Any]
) -> None:
    before = count_jobs(db)
    # Serialised here, so NaN, infinities and lone surrogates reach the server as they are.
    response = client.post("/insert", data=json.dumps(payload), headers=AUTH)
    assert response.status_code in (200, 400), (response.status_code, response.data)
    if response.status_code == 400:
        assert response.get_json()["error"]["code"] in ("invalid_json", "invalid_request")
        assert count_jobs(db) == before
    else:
        assert count_jobs(db) == before + 1
        job = client.get(f"/jobs/{response.get_json()['id']}", headers=AUTH)
        assert exact(job.data)["body"] == exact(json.dumps(payload))["body"]


def test_insert_rejects_a_delay_too_large_for_a_float(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    response = client.post("/insert", data='{"delay": 1' + "0" * 400 + "}", headers=auth)
    assert response.status_code == 400
    assert count_jobs(db) == 0


@pytest.mark.parametrize(
    ("spec", "after"),
    [("* * * * * *", "9999-12-31T23:59:59Z"), ("@every 1h", "9999-12-31T23:30:00Z")],
)
def test_preview_past_the_last_representable_time_is_not_a_500(
    client: FlaskClient, auth: dict[str, str], spec: str, after: str
) -> None:
    response = client.get("/cron/next", query_string={"spec": spec, "after": after}, headers=auth)
    # Either the list ends (as for a spec that stops firing) or `after` is refused.
    assert response.status_code in (200, 400)
    if response.status_code == 200:
        assert response.get_json()["next"] == []
