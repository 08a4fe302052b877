"""Pruning on a real database: each kind of history after its own retention, all of it in one
pass however many batches that takes, within a time budget, and on every maintenance tick."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest
from prometheus_client import REGISTRY

from scheduler import config, tuning
from scheduler.storage import cluster, db
from scheduler.worker import leader, maintenance
from tests import support

HOUR = 3600


def add_finished(
    db_url: str, group: str, state: str, count: int, finished_ago: float, attempts: int = 1
) -> None:
    """`count` jobs in `state` that finished `finished_ago` seconds ago by the database's clock,
    each with `attempts` attempts; their ids start with `group`."""
    with psycopg.connect(db_url) as conn:
        conn.execute(
            """
            INSERT INTO jobs (id, body, run_at, next_attempt_at, max_attempts, state, attempts,
                              finished_at)
            SELECT %(group)s || lpad(n::text, 8, '0'), '{}', now(), now(), 8, %(state)s,
                   %(attempts)s, now() - make_interval(secs => %(ago)s)
            FROM generate_series(1, %(count)s) AS n
            """,
            {
                "group": group,
                "state": state,
                "attempts": attempts,
                "ago": finished_ago,
                "count": count,
            },
        )
        conn.execute(
            """
            INSERT INTO delivery_attempts (job_id, attempt, started_at, duration_ms, status_code)
            SELECT id, a, finished_at, 5, 500
            FROM jobs, generate_series(1, jobs.attempts) AS a
            WHERE starts_with(id, %(group)s)
            """,
            {"group": group},
        )


def left(db_url: str) -> tuple[dict[str, int], dict[str, int]]:
    """Jobs, and attempts, per group (an id's prefix up to its digits)."""
    with psycopg.connect(db_url) as conn:
        jobs = conn.execute(
            "SELECT rtrim(id, '0123456789'), count(*) FROM jobs GROUP BY 1"
        ).fetchall()
        attempts = conn.execute(
            "SELECT rtrim(job_id, '0123456789'), count(*) FROM delivery_attempts GROUP BY 1"
        ).fetchall()
    return dict(jobs), dict(attempts)


def pruned_total() -> float:
    return REGISTRY.get_sample_value("scheduler_pruned_jobs_total") or 0.0


@pytest.fixture
def short(make_settings: Callable[..., config.Settings]) -> config.Settings:
    return make_settings(SCHEDULER_RETENTION=str(HOUR), SCHEDULER_FAILED_RETENTION=str(24 * HOUR))


def test_failed_jobs_are_pruned_after_their_own_retention_and_kept_before_it(
    short: config.Settings, database: db.Database, db_url: str
) -> None:
    add_finished(db_url, "failed-old-", "failed", 2, 24 * HOUR + 60, attempts=8)
    add_finished(db_url, "failed-young-", "failed", 2, 24 * HOUR - 60, attempts=8)
    add_finished(db_url, "delivered-old-", "delivered", 2, HOUR + 60)
    add_finished(db_url, "delivered-young-", "delivered", 2, HOUR - 60)
    # Older than the retention of delivered jobs, younger than that of failed ones.
    add_finished(db_url, "failed-recent-", "failed", 2, HOUR + 60, attempts=8)

    maintenance.prune(database, short, cluster.database_now(database))

    jobs, attempts = left(db_url)
    assert jobs == {"failed-young-": 2, "failed-recent-": 2, "delivered-young-": 2}
    assert attempts == {"failed-young-": 16, "failed-recent-": 16, "delivered-young-": 2}


def test_one_pass_prunes_everything_past_retention_however_many_batches(
    short: config.Settings, database: db.Database, db_url: str
) -> None:
    batches = 2 * tuning.PRUNE_BATCH + 1
    add_finished(db_url, "delivered-old-", "delivered", batches, 2 * HOUR)
    add_finished(db_url, "cancelled-old-", "cancelled", 3, 2 * HOUR, attempts=0)
    add_finished(db_url, "skipped-old-", "skipped", 3, 2 * HOUR, attempts=0)
    add_finished(db_url, "failed-old-", "failed", tuning.PRUNE_BATCH + 1, 2 * 24 * HOUR)
    add_finished(db_url, "delivered-young-", "delivered", 3, 60)
    before = pruned_total()

    # A budget no pass needs: how many batches, not how fast this machine is, is the point.
    maintenance.prune(database, short, cluster.database_now(database), budget=600)

    assert left(db_url) == ({"delivered-young-": 3}, {"delivered-young-": 3})
    assert pruned_total() - before == batches + 6 + tuning.PRUNE_BATCH + 1


def test_a_pass_out_of_time_takes_one_batch_of_each_kind_and_leaves_the_rest(
    short: config.Settings, database: db.Database, db_url: str
) -> None:
    add_finished(db_url, "delivered-old-", "delivered", tuning.PRUNE_BATCH + 2, 2 * HOUR)
    add_finished(db_url, "failed-old-", "failed", tuning.PRUNE_BATCH + 1, 2 * 24 * HOUR)

    maintenance.prune(database, short, cluster.database_now(database), budget=0)
    assert left(db_url)[0] == {"delivered-old-": 2, "failed-old-": 1}

    maintenance.prune(database, short, cluster.database_now(database))
    assert left(db_url) == ({}, {})


def test_the_leader_prunes_between_reconciles(
    make_settings: Callable[..., config.Settings], database: db.Database, db_url: str, epoch: int
) -> None:
    # Ticks every 0.6 s; no reconcile but the first within the test.
    settings = make_settings(
        SCHEDULER_RETENTION=str(HOUR),
        SCHEDULER_LEADER_TIMEOUT="3",
        SCHEDULER_RECONCILE_INTERVAL="3600",
    )
    term = leader.LeaderTerm(settings, database, epoch, lambda: True, lambda: None)
    term.start()
    try:
        add_finished(db_url, "delivered-old-", "delivered", 3, 2 * HOUR)
        add_finished(db_url, "delivered-young-", "delivered", 1, 60)
        support.wait_until(
            lambda: "delivered-old-" not in left(db_url)[0], timeout=30, interval=0.1
        )
    finally:
        term.stop()
    assert left(db_url) == ({"delivered-young-": 1}, {"delivered-young-": 1})
