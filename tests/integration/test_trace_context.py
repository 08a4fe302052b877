"""The W3C trace context of the request that schedules jobs is stored with them; a malformed one
is ignored, never refused."""

from __future__ import annotations

import psycopg
import pytest
from flask.testing import FlaskClient

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
JOB = {"timestamp": "2030-01-01T00:00:00Z", "body": {"k": 1}}


def stored(db: psycopg.Connection, job_id: str) -> tuple[str | None, str | None]:
    row = db.execute("SELECT traceparent, tracestate FROM jobs WHERE id = %s", (job_id,)).fetchone()
    assert row is not None
    return row


def test_an_insert_keeps_its_trace_context(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    headers = {**auth, "traceparent": TRACEPARENT, "tracestate": "congo=t61rcWkgMzE, rojo=1"}
    response = client.post("/insert", json=JOB, headers=headers)
    assert response.status_code == 200
    assert stored(db, response.get_json()["id"]) == (TRACEPARENT, "congo=t61rcWkgMzE,rojo=1")
    untraced = client.post("/insert", json=JOB, headers=auth)
    assert stored(db, untraced.get_json()["id"]) == (None, None)


@pytest.mark.parametrize(
    ("traceparent", "tracestate", "kept"),
    [
        ("00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01", "k=v", (None, None)),
        ("not a trace", None, (None, None)),
        (TRACEPARENT, "k=v,k=w", (TRACEPARENT, None)),
    ],
)
def test_a_malformed_trace_context_is_ignored(
    client: FlaskClient,
    auth: dict[str, str],
    db: psycopg.Connection,
    traceparent: str,
    tracestate: str | None,
    kept: tuple[str | None, str | None],
) -> None:
    headers = {**auth, "traceparent": traceparent}
    if tracestate is not None:
        headers["tracestate"] = tracestate
    response = client.post("/insert", json=JOB, headers=headers)
    assert response.status_code == 200
    assert stored(db, response.get_json()["id"]) == kept


def test_every_job_of_a_batch_keeps_the_trace_context(
    client: FlaskClient, auth: dict[str, str], db: psycopg.Connection
) -> None:
    headers = {**auth, "traceparent": TRACEPARENT}
    response = client.post("/jobs/batch", json={"jobs": [JOB, JOB, JOB]}, headers=headers)
    assert response.status_code == 200
    ids = response.get_json()["ids"]
    assert [stored(db, job_id) for job_id in ids] == [(TRACEPARENT, None)] * 3
