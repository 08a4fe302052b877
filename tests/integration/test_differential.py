"""Differential property tests: arbitrary JSON through the real app to the real database.

Hypothesis writes JSON documents as text (numbers that overflow a float or carry long exponents,
big integers, every Unicode plane, lone surrogates and U+0000, nesting deep and wide around the
limits, duplicate keys) and sends them as job bodies. PostgreSQL is asked, on its own, what it
makes of each document (`SELECT <document>::jsonb::text`); from that, and from the API's
documented rules (no number beyond a float or written with an exponent beyond ±1073741822, at
most 64 levels, bodies bounded as stored), the exact answer is known beforehand: the API must
give it. Duplicate keys are resolved first (the last value is kept, as jsonb keeps it): a value
replaced by a later duplicate is never stored, so it has no say. A 200 must have stored exactly
what PostgreSQL makes of the document, equal in meaning to what was sent; GET /jobs/<id> and a
real delivery (claimed by the dispatcher's query, sent to a real receiver) must carry it back,
within SCHEDULER_MAX_BODY_BYTES. PUT /cron/<id> and the list routes' query strings get the same
treatment with what they take; nothing may ever be a 5xx.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import urllib.parse
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import hypothesis
import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, example, given
from hypothesis import strategies as st
from werkzeug import Request

from scheduler import config, cron, jobs
from scheduler.storage import db, deliveries
from scheduler.web import app as app_module
from scheduler.web import http, schemas
from scheduler.worker import attempt, watchdog
from tests import support

# Small, so that generated documents reach it; the rules do not depend on its value.
LIMIT = 8192
BUDGET = LIMIT - jobs.ENVELOPE_BYTES
AUTH = {http.SECRET_HEADER: support.SECRET}
DUE = "2030-01-01T00:00:00Z"
PROPERTIES = hypothesis.settings(
    deadline=None,  # each example is a few database round trips; timing belongs in `make bench`
    database=None,  # as test_fuzz.py: a failure prints its falsifying example anyway
    # One app and database for all the examples of a test; documents are large by design.
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


@pytest.fixture
def small_app(settings: config.Settings) -> Iterator[Flask]:
    flask_app = app_module.create_app(dataclasses.replace(settings, max_body_bytes=LIMIT))
    flask_app.extensions["scheduler.database"].pool.wait()  # see the `app` fixture
    yield flask_app
    flask_app.extensions["scheduler.database"].pool.close()


# --- documents, as JSON text -----------------------------------------------------------------

DIGITS = "0123456789"


@st.composite
def numbers(draw: st.DrawFn) -> str:
    """Number tokens: short and long, integers of every size up to past a float's range,
    exponents around a float's limits, numeric's 16383 fraction digits and its exponent limit."""
    sign = draw(st.sampled_from(["", "", "-"]))
    size = draw(st.sampled_from([1, 1, 1, 2, 3, 16, 20, 40, 308, 309, 310, 400]))
    if size == 1:
        whole = draw(st.sampled_from(DIGITS))
    else:
        whole = draw(st.sampled_from(DIGITS[1:])) + draw(
            st.text(DIGITS, min_size=size - 1, max_size=size - 1)
        )
    fraction = draw(
        st.none() | st.text(DIGITS, min_size=1, max_size=draw(st.sampled_from([3, 30])))
    )
    exponent = draw(
        st.none()
        | st.integers(-30, 30)
        | st.integers(290, 330)
        | st.integers(-330, -290)
        | st.integers(-16400, -16370)
        | st.integers(-1073741826, -1073741820)
        | st.integers(1073741820, 1073741826)
        | st.integers(10**19, 10**21)
    )
    text = sign + whole + ("." + fraction if fraction is not None else "")
    if exponent is not None:
        mark = draw(st.sampled_from(["e", "E"]))
        plus = "+" if exponent >= 0 and draw(st.booleans()) else ""
        text += mark + plus + str(exponent)
    return text


CHARACTERS = st.one_of(
    st.characters(),
    st.integers(0, 0x10FFFF).map(chr),  # every plane, lone surrogates included
    st.sampled_from(['"', "\\", "/", "\x00", "\x1f", "\x7f", "\u2028", "\ufeff", "\U0001f600"]),
)
TEXTS = st.text(CHARACTERS, max_size=12) | st.text(CHARACTERS, min_size=100, max_size=400)


@st.composite
def strings(draw: st.DrawFn, texts: st.SearchStrategy[str] = TEXTS) -> str:
    value = draw(texts)
    # A lone surrogate can only be sent escaped; anything else either way.
    plain = draw(st.booleans()) and not any("\ud800" <= c <= "\udfff" for c in value)
    return json.dumps(value, ensure_ascii=not plain)


KEYS = strings(st.sampled_from(["a", "b", "é", "𝄞", "", "body"]) | st.text(CHARACTERS, max_size=6))
SEPARATORS = st.sampled_from([",", ", ", " ,\n\t"])
SCALARS = numbers() | strings() | st.sampled_from(["true", "false", "null"])


def containers(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    arrays = st.builds(
        lambda items, separator: "[" + separator.join(items) + "]",
        st.lists(children, max_size=6),
        SEPARATORS,
    )
    # Keys drawn from a small pool repeat: jsonb keeps the last value, as json.loads does.
    objects = st.builds(
        lambda pairs, separator: "{" + separator.join(f"{k}: {v}" for k, v in pairs) + "}",
        st.lists(st.tuples(KEYS, children), max_size=6),
        SEPARATORS,
    )
    return arrays | objects


@st.composite
def deep(draw: st.DrawFn) -> str:
    """A chain of arrays and objects around a scalar, around the nesting limit."""
    text = draw(SCALARS)
    for _ in range(draw(st.integers(55, 70))):
        text = f"[{text}]" if draw(st.booleans()) else f'{{"k": {text}}}'
    return text


WIDE = st.lists(numbers() | st.just("0"), min_size=50, max_size=200).map(
    lambda items: "[" + ",".join(items) + "]"
)
DOCUMENTS = st.recursive(SCALARS, containers, max_leaves=30) | deep() | WIDE


# --- the oracle ------------------------------------------------------------------------------


def exact(text: str | bytes) -> Any:
    """JSON with every number as a Decimal, to compare in meaning (1e2 equals 100.0)."""
    return json.loads(text, parse_float=Decimal, parse_int=Decimal)


def levels(value: Any) -> int:
    """Nesting, counted as the API counts it: a scalar or an empty container is one level."""
    children = value.values() if isinstance(value, dict) else value
    if isinstance(value, dict | list) and children:
        return 1 + max(levels(child) for child in children)
    return 1


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What PostgreSQL and the API's rules make of one document."""

    document: str
    kept: str  # the document once duplicate keys are resolved
    stored: str | None  # jsonb's text of it, None when PostgreSQL refuses it
    refusal: str | None  # PostgreSQL's reason, when it does
    # A number is beyond a float's range, or written with an exponent beyond ±1073741822 (which
    # PostgreSQL 15 refuses, and 16 not quite: the API keeps to the older limit).
    out_of_range: bool
    levels: int

    @property
    def stored_size(self) -> int:
        assert self.stored is not None
        return len(self.stored.encode("utf-8"))

    def storable(self, depth: int) -> bool:
        """Whether the API keeps it when the document's root is at nesting level `depth`."""
        return self.stored is not None and not self.out_of_range and depth + self.levels - 1 <= 64


class Token(str):
    """A number as written."""


def write(value: Any) -> str:
    """JSON text of a document read with Token numbers; numbers as they were written."""
    if isinstance(value, Token):
        return str(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {write(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(write(item) for item in value) + "]"
    return json.dumps(value)


def tokens(value: Any) -> Iterator[Token]:
    if isinstance(value, Token):
        yield value
    elif isinstance(value, dict | list):
        for child in value.values() if isinstance(value, dict) else value:
            yield from tokens(child)


def written_exponent(token: str) -> int:
    mark = token.lower().find("e")
    return 0 if mark < 0 else int(token[mark + 1 :])


def judge(db: psycopg.Connection[Any], document: str) -> Verdict:
    """The document with duplicate keys resolved as documented (the last value is kept, as jsonb
    keeps it), as PostgreSQL takes it, and as the API's own rules see it. A value that a later
    duplicate replaces is never stored, so it has no say."""
    read = json.loads(document, parse_float=Token, parse_int=Token)
    kept = write(read)
    stored = refusal = None
    try:
        row = db.execute("SELECT %s::jsonb::text", (kept,)).fetchone()
        stored = None if row is None else row[0]
    except psycopg.Error as exc:
        refusal = str(exc)
    out_of_range = any(
        math.isinf(float(token)) or abs(written_exponent(token)) > 1073741822
        for token in tokens(read)
    )
    return Verdict(document, kept, stored, refusal, out_of_range, levels(read))


def job_json(document: str) -> str:
    return '{"timestamp": "' + DUE + '", "body": ' + document + "}"


def deliver_all(flask_app: Flask, receiver: support.Receiver) -> dict[str, bytes]:
    """Claim every job now due with the dispatcher's query and send it to the receiver."""
    database: db.Database = flask_app.extensions["scheduler.database"]
    with database.pool.connection() as conn:
        # Due by the database's clock, which is what a claim asks.
        conn.execute("UPDATE jobs SET next_attempt_at = now() WHERE state = 'scheduled'")
    claimed = deliveries.claim_due_jobs(database, "test", 60, 100)
    settings = dataclasses.replace(flask_app.config["SETTINGS"], endpoint=receiver.url)
    sent = {}
    guard = watchdog.Watchdog()
    try:
        for item in claimed:
            outcome = attempt.deliver(settings, item, guard)
            assert outcome.status_code == 200, outcome
            sent[item.id] = receiver.received()[-1].body
    finally:
        guard.stop()
    return sent


def check_accepted(
    client: FlaskClient,
    flask_app: Flask,
    receiver: support.Receiver,
    ids: list[str],
    verdicts: list[Verdict],
    db: psycopg.Connection[Any],
) -> None:
    """Stored as PostgreSQL makes the document, equal in meaning to it, and read and
    delivered back so, within the limit."""
    sent = deliver_all(flask_app, receiver)
    assert set(ids) <= set(sent)
    for job_id, verdict in zip(ids, verdicts, strict=True):
        row = db.execute("SELECT body::text FROM jobs WHERE id = %s", (job_id,)).fetchone()
        assert row == (verdict.stored,)
        assert exact(row[0]) == exact(verdict.kept)
        shown = client.get(f"/jobs/{job_id}", headers=AUTH)
        assert shown.status_code == 200
        assert exact(shown.data)["body"] == exact(verdict.kept)
        assert len(sent[job_id]) <= LIMIT
        assert exact(sent[job_id]) == {"id": job_id, "cron_id": "", "body": exact(verdict.kept)}


@pytest.fixture
def leader(db: psycopg.Connection[Any]) -> None:
    """A dispatcher epoch, for the claim query."""
    db.execute("UPDATE dispatcher_leader SET epoch = 1, holder = 'test', heartbeat_at = now()")


@given(document=DOCUMENTS)
@example(document='{"a": 1e400}')
@example(document="-1e400")
@example(document="[" + ",".join(["1e300"] * 30) + "]")
@example(document="[1e-16383]")
@example(document="[1e-7000, -0.00, 1.50, 12345678901234567890123]")
@example(document='{"a": 1, "a": 0.1000000000000000000001}')
@example(document="[1.7976931348623157e308, -1.7976931348623158e308]")
@example(document="1.7976931348623159e308")
@example(document="[0e1073741822, 0e1073741823]")
@hypothesis.settings(PROPERTIES, max_examples=150)
def test_insert_answers_as_postgresql_and_the_rules_say(
    small_app: Flask,
    db: psycopg.Connection[Any],
    receiver: support.Receiver,
    leader: None,
    document: str,
) -> None:
    verdict = judge(db, document)
    raw = job_json(document).encode("utf-8")
    client = small_app.test_client()
    before = db.execute("SELECT count(*) FROM jobs").fetchone()
    response = client.post("/insert", data=raw, headers=AUTH)
    # The request is level 1, its body level 2.
    if len(raw) > LIMIT:
        expected = 413
    elif not verdict.storable(depth=2):
        expected = 400
    elif verdict.stored_size > BUDGET:
        expected = 413
    else:
        expected = 200
    assert response.status_code == expected, (verdict, response.data[:300])
    if expected == 400:
        assert "body" in response.get_json()["error"]["fields"]
    if expected == 200:
        check_accepted(client, small_app, receiver, [response.get_json()["id"]], [verdict], db)
    else:
        assert db.execute("SELECT count(*) FROM jobs").fetchone() == before


@given(documents=st.lists(DOCUMENTS, min_size=1, max_size=3))
@hypothesis.settings(PROPERTIES, max_examples=75)
def test_batch_answers_as_postgresql_and_the_rules_say(
    small_app: Flask,
    db: psycopg.Connection[Any],
    receiver: support.Receiver,
    leader: None,
    documents: list[str],
) -> None:
    verdicts = [judge(db, document) for document in documents]
    raw = ('{"jobs": [' + ", ".join(job_json(d) for d in documents) + "]}").encode("utf-8")
    client = small_app.test_client()
    before = db.execute("SELECT count(*) FROM jobs").fetchone()
    response = client.post("/jobs/batch", data=raw, headers=AUTH)
    # The request is level 1, `jobs` 2, a job 3, its body 4.
    if len(raw) > LIMIT:
        expected = 413
    elif not all(v.storable(depth=4) for v in verdicts):
        expected = 400
    elif sum(v.stored_size for v in verdicts) > BUDGET:
        expected = 413
    else:
        expected = 200
    assert response.status_code == expected, (verdicts, response.data[:300])
    if expected == 200:
        ids = response.get_json()["ids"]
        check_accepted(client, small_app, receiver, ids, verdicts, db)
    else:
        assert db.execute("SELECT count(*) FROM jobs").fetchone() == before


# --- PUT /cron/<id> --------------------------------------------------------------------------

VALID_SPECS = [
    "* * * * *",
    "0 30 9 * * mon-fri",
    "@every 1h30m",
    "@daily",
    "0 0 30 2 *",  # never fires: accepted, with a warning
    "0 0 12 31 4 ?",
]
VALID_ZONES = ["UTC", "Europe/Paris", "America/New_York", "Etc/GMT+5"]
CRON_IDS = st.from_regex(r"\A[A-Za-z0-9_:-][A-Za-z0-9_.:-]{0,20}\Z") | st.text(
    CHARACTERS, max_size=10
)


@st.composite
def put_requests(draw: st.DrawFn) -> tuple[str, str, bool]:
    """(cron id, raw body, whether it is valid by construction)."""
    cron_id = draw(CRON_IDS)
    fields = {}
    spec_ok = draw(st.booleans())
    fields["spec"] = (
        json.dumps(draw(st.sampled_from(VALID_SPECS)))
        if spec_ok
        else draw(
            strings()
            | DOCUMENTS
            | st.sampled_from(['"61 * * * *"', '""', '"CRON_TZ=Mars/Base @daily"'])
        )
    )
    zone = draw(st.sampled_from(["absent", "valid", "other"]))
    if zone == "valid":
        fields["timezone"] = json.dumps(draw(st.sampled_from(VALID_ZONES)))
    elif zone == "other":
        fields["timezone"] = draw(
            strings() | DOCUMENTS | st.sampled_from(['"Mars/Base"', '"localtime"', "null"])
        )
    extra = draw(st.booleans())
    if extra:
        fields[draw(st.text(CHARACTERS, max_size=5))] = draw(DOCUMENTS)
    raw = "{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in fields.items()) + "}"
    valid = (
        bool(schemas.ID_PATTERN.match(cron_id))
        and cron_id not in schemas.RESERVED_CRON_IDS
        and spec_ok
        and zone != "other"
        and not extra
    )
    return cron_id, raw, valid


@given(request=put_requests())
@hypothesis.settings(PROPERTIES, max_examples=100)
def test_put_cron_is_a_200_that_is_kept_or_a_4xx_that_changes_nothing(
    client: FlaskClient, db: psycopg.Connection[Any], request: tuple[str, str, bool]
) -> None:
    cron_id, raw, valid = request
    before = db.execute("SELECT id, spec, revision FROM crons ORDER BY id").fetchall()
    path = "/cron/" + urllib.parse.quote(cron_id.encode("utf-8", "surrogatepass"), safe="")
    response = client.put(path, data=raw.encode("utf-8", "surrogatepass"), headers=AUTH)
    assert response.status_code in (200, 400, 404, 405), response.data[:300]
    if valid:
        assert response.status_code == 200, response.data[:300]
    if response.status_code == 200:
        shown = client.get(path, headers=AUTH).get_json()
        assert shown == response.get_json()
        parsed = cron.parse_spec(shown["spec"])
        never = not cron.next_fire_times(parsed, dt.datetime.now(dt.UTC), 1)
        assert shown["warning"] == (cron.NEVER_FIRES if never else None)
        assert db.execute("SELECT spec FROM crons WHERE id = %s", (cron_id,)).fetchone() == (
            shown["spec"],
        )
    else:
        error = response.get_json()["error"]
        assert set(error) <= {"code", "message", "fields"}
        assert db.execute("SELECT id, spec, revision FROM crons ORDER BY id").fetchall() == before


# --- query strings of the list routes --------------------------------------------------------

PARAMETERS = st.sampled_from(
    ["state", "cron_id", "before", "after", "limit", "cursor", "spec", "count", "x"]
)
VALUES = st.one_of(
    st.sampled_from(
        [
            *jobs.JOB_STATES,
            "seeded",
            "1",
            "500",
            "501",
            "0",
            "-1",
            "1e400",
            "9" * 5000,
            DUE,
            "9999-12-31T23:59:59-01:00",
            "1970-01-01T00:00:00Z",
            "* * * * *",
            "0 0 30 2 *",
        ]
    ).map(str.encode),
    st.text(CHARACTERS, max_size=30).map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.binary(max_size=20),  # invalid UTF-8 included
)
ROUTES = st.sampled_from(
    ["/jobs", "/cron/seeded/runs", "/cron/unknown/runs", "/cron/next", "/cron"]
)


@pytest.fixture
def seeded(client: FlaskClient) -> FlaskClient:
    assert client.put("/cron/seeded", json={"spec": "@hourly"}, headers=AUTH).status_code == 200
    assert client.post("/cron/seeded/run", headers=AUTH).status_code == 202
    batch = {"jobs": [{"delay": 60, "body": {"n": n}} for n in range(3)]}
    assert client.post("/jobs/batch", json=batch, headers=AUTH).status_code == 200
    return client


@given(
    route=ROUTES,
    query=st.lists(st.tuples(PARAMETERS | st.text(CHARACTERS, max_size=5), VALUES), max_size=5),
)
@hypothesis.settings(PROPERTIES, max_examples=120)
def test_list_query_strings_are_a_200_or_a_4xx_naming_the_parameter(
    seeded: FlaskClient, route: str, query: list[tuple[str, bytes]]
) -> None:
    encoded = "&".join(
        urllib.parse.quote(name.encode("utf-8", "surrogatepass"), safe="")
        + "="
        + urllib.parse.quote_from_bytes(value, safe="")
        for name, value in query
    )
    response = seeded.get(f"{route}?{encoded}", headers=AUTH)
    assert response.status_code in (200, 400, 404), (response.status_code, response.data[:300])
    body = response.get_json()
    # The parameters as the server reads them (Werkzeug's parsing, not ours).
    args = Request.from_values(query_string=encoded).args
    if response.status_code == 400:
        assert body["error"]["code"] == "invalid_request"
        assert set(body["error"]["fields"]) <= set(args) | {"spec"}, body
    if response.status_code == 200 and route in ("/jobs", "/cron/seeded/runs"):
        assert len(body["jobs"]) <= int(args.get("limit", "50"))
        if "state" in args:
            assert {job["state"] for job in body["jobs"]} <= {args["state"]}
        if route == "/cron/seeded/runs":
            assert {job["cron_id"] for job in body["jobs"]} <= {"seeded"}
