"""What the dashboard reads of history: failed jobs grouped by the kind of their last error, and
the per-minute rollup of outcomes and lateness the recorder writes with each batch."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import psycopg
import pytest

from scheduler import config, jobs, lateness, tuning
from scheduler.storage import cluster, db, deliveries, outcomes, retention
from scheduler.storage import jobs as job_rows
from scheduler.worker import maintenance


def claim(database: db.Database, count: int, max_attempts: int = 3) -> list[jobs.Delivery]:
    due = cluster.database_now(database) - dt.timedelta(seconds=1)
    new = [jobs.NewJob(jobs.new_job_id(), "{}", due, max_attempts) for _ in range(count)]
    job_rows.insert_jobs(database, new)
    claimed = deliveries.claim_due_jobs(database, "claimer", 60, count)
    assert len(claimed) == count
    return claimed


def settlement(
    item: jobs.Delivery,
    state: str,
    kind: str | None = None,
    late: float | None = None,
    attempted: bool = True,
) -> outcomes.Settlement:
    status = int(kind[5:]) if kind and kind.startswith("http_") else None
    record = outcomes.AttemptRecord(
        job_id=item.id,
        attempt=item.attempts,
        started_at=dt.datetime.now(dt.UTC),
        duration_ms=3,
        status_code=200 if state == "delivered" else status,
        error=None if kind is None else f"text of {kind}",
        response_excerpt=None,
        error_kind=kind,
    )
    retry_in = 60.0 if state == "scheduled" else None
    return outcomes.Settlement(
        record, item.claim_token, state, retry_in, attempted=attempted, lateness=late
    )


def settle_all(
    database: db.Database,
    results: Sequence[tuple[str, str | None]],
    dispatcher: str = "d1",
    late: float | None = None,
) -> list[jobs.Delivery]:
    claimed = claim(database, len(results))
    outcomes.settle_deliveries(
        database,
        [
            settlement(item, state, kind, late)
            for item, (state, kind) in zip(claimed, results, strict=True)
        ],
        dispatcher_id=dispatcher,
    )
    return claimed


def test_failed_jobs_are_counted_by_the_kind_of_their_last_error(
    database: db.Database, db_url: str
) -> None:
    claimed = settle_all(
        database,
        [
            ("failed", "http_503"),
            ("failed", "http_503"),
            ("failed", "timeout"),
            ("failed", "not_sent"),
            ("scheduled", "dns"),  # retried, not failed: in no group
            ("delivered", None),
        ],
    )
    # A job that fails with another kind on its next attempt counts under its last one only.
    assert deliveries.claim_due_jobs(database, "claimer", 60, 1) == [], "the retry is not due yet"
    with psycopg.connect(db_url) as conn:
        conn.execute("UPDATE jobs SET next_attempt_at = now() WHERE id = %s", (claimed[4].id,))
    (again,) = deliveries.claim_due_jobs(database, "claimer", 60, 1)
    outcomes.settle_deliveries(database, [settlement(again, "failed", "tls")])

    groups = job_rows.failed_groups(database)

    assert [(g.kind, g.count) for g in groups] == [
        ("http_503", 2),
        ("not_sent", 1),
        ("timeout", 1),
        ("tls", 1),
    ]
    with psycopg.connect(db_url) as conn:
        latest = conn.execute(
            "SELECT last_error_kind, max(finished_at) FROM jobs WHERE state = 'failed'"
            " GROUP BY last_error_kind"
        ).fetchall()
        attempts = conn.execute(
            "SELECT error_kind FROM delivery_attempts WHERE job_id = %s ORDER BY attempt",
            (again.id,),
        ).fetchall()
    assert {g.kind: g.latest_finished_at for g in groups} == dict(latest)
    assert attempts == [("dns",), ("tls",)]
    job, history = job_rows.get_job(database, again.id)
    assert job.last_error_kind == "tls"
    assert [a.error_kind for a in history] == ["dns", "tls"]


def test_a_failure_notification_carries_the_kind(database: db.Database, db_url: str) -> None:
    (item,) = claim(database, 1)
    outcomes.settle_deliveries(
        database, [settlement(item, "failed", "dns")], notices=outcomes.FailureNotices("alerts", 3)
    )
    with psycopg.connect(db_url) as conn:
        notice = conn.execute("SELECT body FROM jobs WHERE event = 'job.failed'").fetchone()
    assert notice is not None
    assert notice[0]["job"]["id"] == item.id
    assert notice[0]["job"]["last_error_kind"] == "dns"


def test_no_failed_job_makes_no_group(database: db.Database) -> None:
    settle_all(database, [("delivered", None), ("scheduled", "timeout")])
    assert job_rows.failed_groups(database) == []


def rollup_by_dispatcher(db_url: str) -> list[tuple[str, int, int, int, list[int]]]:
    """Each dispatcher's rows summed, whichever minutes they fell in."""
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT dispatcher_id, delivered, failed, retried, lateness FROM delivery_minutes"
            " ORDER BY dispatcher_id, minute"
        ).fetchall()
    summed: dict[str, tuple[int, int, int, list[int]]] = {}
    for dispatcher, delivered, failed, retried, late in rows:
        before = summed.get(dispatcher, (0, 0, 0, [0] * lateness.BUCKETS))
        summed[dispatcher] = (
            before[0] + delivered,
            before[1] + failed,
            before[2] + retried,
            lateness.add_buckets([before[3], late]),
        )
    return [(dispatcher, *totals) for dispatcher, totals in summed.items()]


def test_each_dispatcher_adds_its_outcomes_to_its_own_row_of_the_minute(
    database: db.Database, db_url: str
) -> None:
    before = cluster.database_now(database)
    settle_all(database, [("delivered", None)] * 3 + [("failed", "http_500")], "d1", 0.003)
    settle_all(database, [("delivered", None), ("scheduled", "timeout")], "d1", 0.003)
    settle_all(database, [("delivered", None)] * 2 + [("scheduled", "dns")] * 2, "d2", 0.07)
    (unsent,) = claim(database, 1)
    outcomes.settle_deliveries(
        database, [settlement(unsent, "failed", "not_sent", attempted=False)], dispatcher_id="d2"
    )
    # Claims given back unsent are no outcome at all.
    (given_back,) = claim(database, 1)
    outcomes.settle_deliveries(
        database, [], [(given_back.id, given_back.claim_token)], dispatcher_id="d2"
    )

    assert rollup_by_dispatcher(db_url) == [
        ("d1", 4, 1, 1, lateness.count_buckets([3] * 6)),
        ("d2", 2, 1, 2, lateness.count_buckets([70] * 4)),
    ]
    summed = outcomes.delivery_minutes(database, before - dt.timedelta(minutes=1))
    assert sum(m.delivered for m in summed) == 6
    assert sum(m.failed for m in summed) == 2
    assert sum(m.retried for m in summed) == 3
    assert lateness.add_buckets(m.lateness for m in summed) == lateness.count_buckets(
        [3] * 6 + [70] * 4
    )


def test_lateness_percentiles_come_from_the_buckets_summed_over_dispatchers(
    database: db.Database, db_url: str
) -> None:
    first = claim(database, 60)
    # d1: 50 deliveries 3 ms late; d2: 9 more at 3 ms (one of them retried) and one 800 ms
    # late that failed. The store counts the lateness the attempt measured, whatever came of it.
    outcomes.settle_deliveries(
        database,
        [settlement(item, "delivered", late=0.003) for item in first[:50]],
        dispatcher_id="d1",
    )
    outcomes.settle_deliveries(
        database,
        [settlement(item, "delivered", late=0.003) for item in first[50:58]]
        + [settlement(first[58], "scheduled", "http_503", late=0.003)]
        + [settlement(first[59], "failed", "timeout", late=0.8)],
        dispatcher_id="d2",
    )
    with psycopg.connect(db_url) as conn:
        minute = conn.execute("SELECT max(minute) FROM delivery_minutes").fetchone()
    assert minute is not None

    (summed,) = [m for m in outcomes.delivery_minutes(database, minute[0]) if m.minute == minute[0]]

    if (summed.delivered, summed.failed, summed.retried) != (58, 1, 1):
        pytest.skip("the database's minute turned between the two batches")
    assert list(summed.lateness) == lateness.count_buckets([3] * 59 + [800])
    # Rank 30 of 60 falls among the 59 values in (2, 5] ms; rank 59.4 past them, in (500, 1000].
    assert summed.lateness_p50_ms == pytest.approx(2 + 3 * 30 / 59)
    assert summed.lateness_p99_ms == pytest.approx(500 + 500 * 0.4)


def test_delivery_minutes_sum_each_minute_since_the_moment_given(
    database: db.Database, db_url: str
) -> None:
    base = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
    fast = lateness.count_buckets([0.5])
    slow = lateness.count_buckets([2500])
    with psycopg.connect(db_url) as conn:
        for offset, dispatcher, counts in [
            (0, "d1", fast),
            (1, "d1", fast),
            (1, "d2", slow),
            (2, "d2", slow),
        ]:
            conn.execute(
                "INSERT INTO delivery_minutes"
                " (minute, dispatcher_id, delivered, failed, retried, lateness)"
                " VALUES (%s, %s, 1, 0, 0, %s)",
                (base + dt.timedelta(minutes=offset), dispatcher, counts),
            )

    minutes = outcomes.delivery_minutes(database, base + dt.timedelta(seconds=30))

    assert [(m.minute, m.delivered) for m in minutes] == [
        (base + dt.timedelta(minutes=1), 2),
        (base + dt.timedelta(minutes=2), 1),
    ]
    assert list(minutes[0].lateness) == lateness.add_buckets([fast, slow])
    assert minutes[0].lateness_p50_ms == 1.0  # rank 1 of 2: the top of the first bucket
    assert minutes[0].lateness_p99_ms == pytest.approx(2000 + 3000 * 0.98)
    assert minutes[1].lateness_p50_ms == 2000 + 3000 * 0.5


def test_pruning_removes_rollup_rows_past_their_retention_only(
    database: db.Database, db_url: str, settings: config.Settings
) -> None:
    now = cluster.database_now(database)
    kept_for = dt.timedelta(seconds=tuning.DELIVERY_MINUTES_RETENTION_SECONDS)
    kept = [now - kept_for + dt.timedelta(minutes=2), now]
    with psycopg.connect(db_url) as conn:
        for minute in [now - kept_for - dt.timedelta(minutes=1), *kept]:
            conn.execute(
                "INSERT INTO delivery_minutes (minute, dispatcher_id, lateness)"
                " VALUES (date_trunc('minute', %s::timestamptz), 'd1', '{}')",
                (minute,),
            )

    maintenance.prune(database, settings, now)

    with psycopg.connect(db_url) as conn:
        left = conn.execute("SELECT minute FROM delivery_minutes ORDER BY minute").fetchall()
    assert [row[0] for row in left] == [m.replace(second=0, microsecond=0) for m in kept]
    assert retention.prune_delivery_minutes(database, now + dt.timedelta(minutes=1)) == 2
