"""The claim loop's queries run at every look, so each must read a few index entries however many
jobs wait: counted from EXPLAIN ANALYZE's rows, not timed."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from scheduler.storage import db, deliveries, endpoints, flows
from scheduler.storage import jobs as job_rows

WAITING = 5_000
# Rows a look may read from `jobs`: the few it claims or plans from, never the waiting backlog.
READ_BOUND = 50
PAUSED = "billing"
PAUSED_BACKLOG = 5_000
ASKED = "paused-asked"
# Rows a paused endpoint's look may read: the one job an operator asked to run, not its backlog.
ASKED_READ_BOUND = 5
PLACEHOLDER = re.compile(r"%\((\w+)\)s")
# The statements a look runs, by name; a paused endpoint's are the variants its module builds.
LOOK_QUERIES = {
    **deliveries.QUERIES,
    "claim_paused_endpoint_jobs": deliveries.CLAIM_ENDPOINT_JOBS[True],
    "paused_endpoint_due_in": deliveries.ENDPOINT_DUE_IN[True],
    "key_turns": deliveries.KEY_TURNS[False],
    "claim_key_jobs": deliveries.CLAIM_KEY_JOBS[False],
    "unkeyed_due": deliveries.UNKEYED_DUE[False],
    "claim_endpoint_jobs": deliveries.CLAIM_ENDPOINT_JOBS[False],
    "endpoint_due_in": deliveries.ENDPOINT_DUE_IN[False],
}


@pytest.fixture
def backlog(db_url: str, database: db.Database) -> str:
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


@pytest.fixture
def paused_backlog(backlog: str, database: db.Database) -> str:
    """The backlog, plus PAUSED_BACKLOG jobs of the paused endpoint due hours ago and one due now
    that an operator asked to run (ASKED), analysed."""
    endpoints.set_endpoint_paused(database, PAUSED, True)
    with psycopg.connect(backlog, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO jobs (id, body, run_at, next_attempt_at, max_attempts, state, endpoint)
            SELECT 'paused' || n, '{}'::jsonb, due, due, 3, 'scheduled', %(endpoint)s
            FROM generate_series(1, %(count)s) AS n,
                 LATERAL (SELECT now() - interval '3 hours' + n * interval '1 second') AS t(due)
            UNION ALL
            SELECT %(asked)s, '{}'::jsonb, now(), now(), 3, 'scheduled', %(endpoint)s
            """,
            {"endpoint": PAUSED, "count": PAUSED_BACKLOG, "asked": ASKED},
        )
        job_rows.run_job_now(database, ASKED)
        conn.execute("ANALYZE jobs")
    return backlog


def plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)


def explain(
    conn: psycopg.Connection[tuple[Any, ...]], query: str, params: dict[str, Any], generic: bool
) -> Any:
    """EXPLAIN ANALYZE of `query`, planned for these parameters or, when `generic`, for any (what
    psycopg's prepared statements come to after a few runs)."""
    if not generic:
        row = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + query, params).fetchone()
    else:
        names = list(dict.fromkeys(PLACEHOLDER.findall(query)))
        numbered = PLACEHOLDER.sub(lambda found: f"${names.index(found[1]) + 1}", query)
        conn.execute("SET plan_cache_mode = force_generic_plan")
        conn.execute("PREPARE measured AS " + numbered)
        values = sql.SQL(", ").join(sql.Literal(params[name]) for name in names)
        row = conn.execute(
            sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE measured ({})").format(values)
        ).fetchone()
    assert row is not None
    return row[0] if isinstance(row[0], list) else json.loads(row[0])


def rows_read_from_jobs(
    db_url: str, query: str, params: dict[str, Any], generic: bool = False
) -> int:
    """Rows the scans of `jobs` read (returned, or removed by a filter), over all their loops, in
    one run of `query` (rolled back)."""
    with psycopg.connect(db_url) as conn:
        plan = explain(conn, query, params, generic)
        conn.rollback()
    scans = [
        node
        for node in plan_nodes(plan[0]["Plan"])
        if node.get("Relation Name") == "jobs" and "Scan" in node["Node Type"]
    ]
    assert scans, "the plan scans no jobs table"
    return sum(
        (
            int(node["Actual Rows"])
            + int(node.get("Rows Removed by Filter", 0))
            + int(node.get("Rows Removed by Index Recheck", 0))
        )
        * int(node["Actual Loops"])
        for node in scans
    )


@pytest.mark.parametrize(
    ("name", "held", "known", "bound"),
    [
        # One probe per endpoint with waiting jobs (and one finding no more), then the first
        # job of each not held.
        ("next_due_in", [], ["default"], 3),
        ("next_due_in", ["billing"], ["default", "reports"], 3),
    ],
)
def test_planning_the_next_look_reads_one_waiting_job(
    backlog: str, database: db.Database, name: str, held: list[str], known: list[str], bound: int
) -> None:
    params = {"held": held, "known": known, "grace": 600.0}
    assert rows_read_from_jobs(backlog, LOOK_QUERIES[name], params) <= bound
    due_in = deliveries.next_due_in(database, held, known)
    assert due_in is not None and 86_000 < due_in <= 86_401


def test_claiming_with_nothing_due_reads_no_waiting_job(backlog: str) -> None:
    params = {
        "dispatcher_id": "one",
        "lease_seconds": 60,
        "limit": 32,
        "held": [],
        "known": ["default"],
        "ahead": 0.05,
        "grace": 600.0,
        "shared": [],
        "rooms": [],
        "holding": [],
        "newcomer": 32,
    }
    assert rows_read_from_jobs(backlog, LOOK_QUERIES["claim_due_jobs"], params) <= READ_BOUND


@pytest.mark.parametrize("generic", [False, True], ids=["custom-plan", "generic-plan"])
@pytest.mark.parametrize(
    "name", ["claim_paused_endpoint_jobs", "paused_endpoint_due_in", "count_in_flight"]
)
def test_a_paused_endpoint_look_reads_the_job_asked_to_run_not_its_backlog(
    paused_backlog: str, name: str, generic: bool
) -> None:
    params = {
        "dispatcher_id": "one",
        "lease_seconds": 60,
        "limit": 32,
        "endpoint": PAUSED,
        "ended": ["ended-1"],
    }
    read = rows_read_from_jobs(paused_backlog, LOOK_QUERIES[name], params, generic)
    assert read <= ASKED_READ_BOUND


def test_a_paused_endpoint_still_plans_and_claims_the_job_asked_to_run(
    paused_backlog: str, database: db.Database
) -> None:
    with psycopg.connect(paused_backlog) as conn:
        row = conn.execute(LOOK_QUERIES["paused_endpoint_due_in"], {"endpoint": PAUSED}).fetchone()
    # Due since it was asked for, not since the backlog's first job, three hours ago.
    assert row is not None and -600 < row[0] <= 0
    claim = deliveries.claim_endpoint_jobs(
        database, "one", 60, 32, PAUSED, endpoints.EndpointLimits(None, None)
    )
    assert [delivery.id for delivery in claim.claimed] == [ASKED]
    assert claim.retry_in is None


HELD_LOOK = {
    "dispatcher_id": "one",
    "lease_seconds": 60,
    "limit": 32,
    "held": [PAUSED],
    "known": ["default", PAUSED],
    "ahead": 0.05,
    "grace": 600.0,
    "shared": [],
    "rooms": [],
    "holding": [],
    "newcomer": 32,
}


@pytest.mark.parametrize("generic", [False, True], ids=["custom-plan", "generic-plan"])
@pytest.mark.parametrize("name", ["claim_due_jobs", "next_due_in"])
def test_a_look_with_an_endpoint_held_steps_over_none_of_its_backlog(
    paused_backlog: str, name: str, generic: bool
) -> None:
    read = rows_read_from_jobs(paused_backlog, LOOK_QUERIES[name], HELD_LOOK, generic)
    assert read <= READ_BOUND


def test_a_look_with_an_endpoint_held_claims_the_other_endpoints_due_jobs(
    paused_backlog: str, database: db.Database
) -> None:
    with psycopg.connect(paused_backlog, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO jobs (id, body, run_at, next_attempt_at, max_attempts, state, endpoint)
            VALUES ('due-default', '{}', now(), now(), 3, 'scheduled', 'default'),
                   ('due-unknown', '{}', now(), now(), 3, 'scheduled', 'elsewhere')
            """
        )
    held, known = HELD_LOOK["held"], HELD_LOOK["known"]
    claimed = deliveries.claim_due_jobs(database, "one", 60, 32, held, known, ahead=0.05)
    # An endpoint this dispatcher does not know is claimed too, to fail unsent.
    assert sorted(delivery.id for delivery in claimed) == ["due-default", "due-unknown"]
    due_in = deliveries.next_due_in(database, held, known)
    assert due_in is not None and 86_000 < due_in <= 86_401


KEYED = "keyed"
KEYS = 10_000
PER_KEY = 2
UNKEYED_DUE = 3
# Rows a keyed endpoint's look may read per key it looks at: the probe finding it, its due jobs
# (counted up to the claim's limit), the first of its later ones.
KEYED_LOOK = {"endpoint": KEYED, "after": "", "probes": 64, "cap": 4}


KEYED_BACKLOG = """
    INSERT INTO jobs (id, body, run_at, next_attempt_at, max_attempts, state, endpoint, flow_key)
    SELECT 'keyed' || n, '{}'::jsonb, due, due, 3, 'scheduled', %(endpoint)s,
           'key' || lpad((n %% %(keys)s)::text, 5, '0')
    FROM generate_series(1, %(count)s) AS n,
         LATERAL (SELECT now() - interval '3 hours') AS t(due)
    UNION ALL
    SELECT 'plain' || n, '{}'::jsonb, now(), now(), 3, 'scheduled', %(endpoint)s, NULL
    FROM generate_series(1, %(unkeyed)s) AS n
"""


@pytest.fixture(params=["analysed", "unanalysed"])
def keyed_backlog(request: pytest.FixtureRequest, db_url: str, database: db.Database) -> str:
    """KEYS keys of the keyed endpoint with PER_KEY jobs each due at one instant hours ago, and
    UNKEYED_DUE jobs of it without a key due now: beside the analysed backlog, or in a table last
    vacuumed empty, as when a burst comes after retention emptied it (the planner then takes the
    table for empty, and the narrowest index that can serve a query wins the tie)."""
    analysed = request.param == "analysed"
    target = request.getfixturevalue("backlog") if analysed else db_url
    params = {"endpoint": KEYED, "keys": KEYS, "count": KEYS * PER_KEY, "unkeyed": UNKEYED_DUE}
    with psycopg.connect(target, autocommit=True) as conn:
        if not analysed:
            conn.execute("VACUUM ANALYZE jobs")
        conn.execute(KEYED_BACKLOG, params)
        # As storing a keyed job makes it (flows.use_flows).
        conn.execute("INSERT INTO endpoints (name) VALUES (%s)", (KEYED,))
        conn.execute(
            "INSERT INTO flows (endpoint, key, rate_limit) SELECT %s, 'key' || lpad(n::text, 5, "
            "'0'), 1000 FROM generate_series(0, %s) AS n",
            (KEYED, KEYS - 1),
        )
        if analysed:
            conn.execute("ANALYZE jobs")
            conn.execute("ANALYZE flows")
    return target


@pytest.mark.parametrize("generic", [False, True], ids=["custom-plan", "generic-plan"])
def test_a_keyed_look_reads_a_few_rows_per_key_it_looks_at_not_the_backlog(
    keyed_backlog: str, generic: bool
) -> None:
    read = rows_read_from_jobs(keyed_backlog, LOOK_QUERIES["key_turns"], KEYED_LOOK, generic)
    probes, cap = KEYED_LOOK["probes"], KEYED_LOOK["cap"]
    assert isinstance(probes, int) and isinstance(cap, int)
    assert read <= probes * (cap + 3)


@pytest.mark.parametrize("generic", [False, True], ids=["custom-plan", "generic-plan"])
def test_a_keyed_claim_reads_the_jobs_it_takes_not_the_backlog(
    keyed_backlog: str, generic: bool
) -> None:
    turns = {"keys": [f"key{n:05d}" for n in range(8)], "counts": [2] * 8}
    params = {"dispatcher_id": "one", "lease_seconds": 60, "endpoint": KEYED, **turns}
    read = rows_read_from_jobs(keyed_backlog, LOOK_QUERIES["claim_key_jobs"], params, generic)
    # Each taken once by key and again by id.
    assert read <= 2 * sum(turns["counts"])


@pytest.mark.parametrize("generic", [False, True], ids=["custom-plan", "generic-plan"])
@pytest.mark.parametrize("name", ["unkeyed_due", "claim_endpoint_jobs", "endpoint_due_in"])
def test_a_keyed_endpoint_s_jobs_without_a_key_are_read_without_its_keyed_backlog(
    keyed_backlog: str, name: str, generic: bool
) -> None:
    params = {"dispatcher_id": "one", "lease_seconds": 60, "limit": 32, "endpoint": KEYED}
    read = rows_read_from_jobs(keyed_backlog, LOOK_QUERIES[name], {**params, "cap": 32}, generic)
    # Those due (and one past them), and each again by id when claimed.
    assert read <= 2 * UNKEYED_DUE + 1


@pytest.mark.parametrize("generic", [False, True], ids=["custom-plan", "generic-plan"])
def test_the_shared_claim_steps_over_no_keyed_backlog(keyed_backlog: str, generic: bool) -> None:
    look = {**HELD_LOOK, "held": [], "known": ["default", KEYED]}
    read = rows_read_from_jobs(keyed_backlog, LOOK_QUERIES["claim_due_jobs"], look, generic)
    assert read <= READ_BOUND


def test_finding_the_keyed_endpoints_reads_one_row_of_each(
    keyed_backlog: str, database: db.Database
) -> None:
    assert rows_read_from_jobs(keyed_backlog, flows.QUERIES["keyed_endpoints"], {}) <= 2
    assert flows.keyed_endpoints(database) == [KEYED]
