"""The claim loop's queries run at every look, so each must read a few index entries however many
jobs wait: counted from EXPLAIN ANALYZE's rows, not timed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from scheduler import store

WAITING = 5_000
# Rows a look may read from `jobs`: the few it claims or plans from, never the waiting backlog.
READ_BOUND = 50


@pytest.fixture
def backlog(db_url: str, job_store: store.Store) -> str:
    """WAITING jobs of the default endpoint due a day and more from now, analysed."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO jobs (id, body, run_at, next_attempt_at, max_attempts, state)
            SELECT 'waiting' || n, '{}'::jsonb, due, due, 3, 'scheduled'
            FROM generate_series(1, %(count)s) AS n,
                 LATERAL (SELECT now() + interval '1 day' + n * interval '1 second') AS t(due)
            """,
            {"count": WAITING},
        )
        conn.execute("ANALYZE jobs")
    return db_url


def plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)


def rows_read_from_jobs(db_url: str, query: str, params: dict[str, Any]) -> int:
    """Rows the scans of `jobs` returned, over all their loops, in one run of `query` (rolled
    back)."""
    with psycopg.connect(db_url) as conn:
        row = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + query, params).fetchone()
        conn.rollback()
    assert row is not None
    plan = row[0] if isinstance(row[0], list) else json.loads(row[0])
    scans = [
        node
        for node in plan_nodes(plan[0]["Plan"])
        if node.get("Relation Name") == "jobs" and "Scan" in node["Node Type"]
    ]
    assert scans, "the plan scans no jobs table"
    return sum(int(node["Actual Rows"]) * int(node["Actual Loops"]) for node in scans)


@pytest.mark.parametrize(
    ("held", "known"), [([], ["default"]), (["billing"], ["default", "reports"])]
)
def test_planning_the_next_look_reads_one_waiting_job(
    backlog: str, job_store: store.Store, held: list[str], known: list[str]
) -> None:
    params = {"held": held, "known": known}
    assert rows_read_from_jobs(backlog, store.QUERIES["next_due_in"], params) <= 1
    due_in = job_store.next_due_in(held, known)
    assert due_in is not None and 86_000 < due_in <= 86_401


def test_claiming_with_nothing_due_reads_no_waiting_job(backlog: str) -> None:
    params = {
        "dispatcher_id": "one",
        "lease_seconds": 60,
        "limit": 32,
        "held": [],
        "known": ["default"],
    }
    assert rows_read_from_jobs(backlog, store.QUERIES["claim_due_jobs"], params) <= READ_BOUND
