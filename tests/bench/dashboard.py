"""The dashboard's pages on a big table: each page's p95 with a million jobs (half delivered, a
tenth failed, the rest scheduled), every finished one with its attempt, an hour of the delivery
rollup and a few hundred crons; measured through the web process, logged in as a browser is."""

from __future__ import annotations

import re
import time
from typing import Any

import psycopg
import requests

from tests import support
from tests.bench import stats
from tests.bench.system import System

ROUNDS = 3
CRONS = 200
TARGET_P95_MS = 200.0
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
# Kinds of failure spread over the failed tenth, as a real outage leaves them.
KINDS = ("http_500", "http_503", "http_404", "timeout", "refused", "dns", "tls", "connection")


def load_history(db_url: str, count: int) -> float:
    """`count` jobs with their attempts, the last hour's rollup and the crons; seconds taken."""
    started = time.monotonic()
    with psycopg.connect(db_url, autocommit=True) as conn:
        # Ids sort by creation like the scheduler's own: a zero-padded counter, newest highest.
        conn.execute(
            """
            INSERT INTO jobs (id, cron_id, body, run_at, next_attempt_at, max_attempts, attempts,
                              state, last_status, last_error, last_error_kind, finished_at,
                              created_at, endpoint)
            SELECT lpad(n::text, 26, '0'),
                   CASE WHEN n %% 10 = 0 THEN 'cron-' || (n / 10) %% %(crons)s END,
                   jsonb_build_object('order', n, 'note', 'dashboard benchmark'),
                   due, due, 3,
                   CASE WHEN kind = 'scheduled' THEN 0 WHEN kind = 'failed' THEN 3 ELSE 1 END,
                   kind,
                   CASE WHEN kind = 'failed' AND fault LIKE 'http_%%'
                        THEN substr(fault, 6)::int WHEN kind = 'delivered' THEN 200 END,
                   CASE WHEN kind = 'failed' THEN fault END,
                   CASE WHEN kind = 'failed' THEN fault END,
                   CASE WHEN kind <> 'scheduled' THEN due + interval '1 second' END,
                   now() - make_interval(secs => %(count)s - n),
                   'default'
            FROM generate_series(1, %(count)s) AS n,
                 LATERAL (SELECT CASE WHEN n %% 10 < 5 THEN 'delivered'
                                      WHEN n %% 10 = 5 THEN 'failed'
                                      ELSE 'scheduled' END,
                                 (%(kinds)s::text[])[1 + n %% %(kind_count)s],
                                 CASE WHEN n %% 10 < 6 THEN now() - make_interval(secs => %(count)s - n)
                                      ELSE now() + interval '30 days' + make_interval(secs => n)
                                 END) AS t(kind, fault, due)
            """,
            {"count": count, "crons": CRONS, "kinds": list(KINDS), "kind_count": len(KINDS)},
        )
        conn.execute(
            """
            INSERT INTO delivery_attempts (job_id, attempt, started_at, duration_ms, status_code,
                                           error, error_kind)
            SELECT id, 1, finished_at, 12, last_status, last_error, last_error_kind
            FROM jobs WHERE finished_at IS NOT NULL
            """
        )
        conn.execute(
            """
            INSERT INTO delivery_minutes (minute, dispatcher_id, delivered, failed, retried,
                                          lateness)
            SELECT date_trunc('minute', now()) - make_interval(mins => m), 'bench-' || d,
                   6000, 60, 120, ARRAY[0, 0, 100, 3000, 2500, 400, 50, 10, 0, 0, 0, 0, 0, 0,
                                        0, 0]
            FROM generate_series(0, 59) AS m, generate_series(1, 2) AS d
            """
        )
        conn.execute(
            """
            INSERT INTO crons (id, spec, timezone)
            SELECT 'cron-' || n, '0 ' || n %% 60 || ' * * * *', 'UTC'
            FROM generate_series(0, %(crons)s - 1) AS n
            """,
            {"crons": CRONS},
        )
        # Autovacuum would get to a table this size within minutes; the dashboard's index-only
        # plans need its visibility map, so do it now rather than time its absence.
        conn.execute("VACUUM (ANALYZE) jobs")
        conn.execute("VACUUM (ANALYZE) delivery_attempts")
    return time.monotonic() - started


def pages(db_url: str) -> dict[str, str]:
    """Each page the dashboard serves, at a URL that makes it work hardest on this table."""
    with psycopg.connect(db_url) as conn:
        newest_failed = conn.execute(
            "SELECT id FROM jobs WHERE state = 'failed' ORDER BY id DESC LIMIT 1"
        ).fetchone()
    assert newest_failed is not None
    return {
        "overview": "/ui/",
        "jobs": "/ui/jobs",
        "jobs, failed": "/ui/jobs?state=failed",
        "jobs, one cron": "/ui/jobs?cron_id=cron-7",
        "jobs, one kind": "/ui/jobs?state=failed&error_kind=timeout",
        "jobs, page 100": f"/ui/jobs?cursor={int(newest_failed[0]) - 5000:026d}",
        "job": f"/ui/jobs/{newest_failed[0]}",
        "failed groups": "/ui/failed",
        "retry confirmation": "/ui/jobs/retry?error_kind=http_503",
        "crons": "/ui/crons",
        "cron": "/ui/crons/cron-7",
    }


def log_in(base: str) -> requests.Session:
    session = requests.Session()
    form = session.get(base + "/ui/login", timeout=30)
    token = _CSRF.search(form.text)
    assert token, "the login form carries a CSRF token"
    answer = session.post(
        base + "/ui/login",
        data={"csrf_token": token.group(1), "secret": support.SECRET},
        allow_redirects=False,
        timeout=30,
    )
    assert answer.status_code == 303, answer.text[:200]
    return session


def measure(system: System, jobs: int, requests_per_page: int) -> dict[str, Any]:
    """Load the table, start the web process, then time every page in ROUNDS rounds."""
    out: dict[str, Any] = {"jobs": jobs, "load_seconds": load_history(system.db_url, jobs)}
    system.start_web()
    session = log_in(system.url)
    urls = pages(system.db_url)
    for url in urls.values():  # the first view of each warms the pool and the page cache
        answer = session.get(system.url + url, timeout=60)
        assert answer.status_code == 200, (url, answer.status_code)
    rounds: dict[str, list[list[float]]] = {name: [] for name in urls}
    for _ in range(ROUNDS):
        for name, url in urls.items():
            times = []
            for _ in range(requests_per_page):
                started = time.perf_counter()
                answer = session.get(system.url + url, timeout=60)
                times.append(time.perf_counter() - started)
                assert answer.status_code == 200, (url, answer.status_code)
            rounds[name].append(times)
    out["pages"] = {
        name: {
            "url": urls[name],
            "p95_ms": stats.summary_ms([t for r in per_round for t in r])["p95"],
            "round_p95_ms": [stats.summary_ms(r)["p95"] for r in per_round],
            "p50_ms": stats.summary_ms([t for r in per_round for t in r])["p50"],
        }
        for name, per_round in rounds.items()
    }
    return out
