"""The store's fencing, leasing and pruning rules, against a real database."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable, Iterator

import psycopg
import pytest
from flask import Flask

from scheduler import db, errors, jobs, store

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def db_store(db_url: str) -> Iterator[store.Store]:
    pool = db.open_pool(db_url, 2, name="test")
    yield store.Store(pool)
    pool.close()


@pytest.fixture
def epoch(db_url: str) -> Iterator[int]:
    lock = store.LeaderLock(db_url, timeout=10)
    value = lock.try_acquire("test")
    assert value is not None
    yield value
    lock.close()


def insert(db_store: store.Store, run_at: dt.datetime, max_attempts: int = 3) -> str:
    job_id = jobs.new_job_id()
    db_store.insert_job(jobs.NewJob(job_id, '{"k": 1}', run_at, max_attempts))
    return job_id


def attempt(job_id: str, number: int, status: int | None) -> store.AttemptRecord:
    return store.AttemptRecord(
        job_id=job_id,
        attempt=number,
        started_at=NOW,
        duration_ms=5,
        status_code=status,
        error=None,
        response_excerpt=None,
    )


def test_claims_need_the_current_epoch(db_store: store.Store, epoch: int, db_url: str) -> None:
    job_id = insert(db_store, NOW - dt.timedelta(seconds=1))
    assert db_store.claim_due_jobs(epoch - 1, NOW, NOW, 10) == []
    (claimed,) = db_store.claim_due_jobs(epoch, NOW, NOW + dt.timedelta(seconds=60), 10)
    assert (claimed.id, claimed.attempts, claimed.body) == (job_id, 1, '{"k": 1}')
    assert db_store.claim_due_jobs(epoch, NOW, NOW, 10) == [], "a claimed job is not claimed twice"


def test_only_due_jobs_are_claimed_in_due_order(db_store: store.Store, epoch: int) -> None:
    later = insert(db_store, NOW - dt.timedelta(seconds=1))
    earlier = insert(db_store, NOW - dt.timedelta(seconds=5))
    insert(db_store, NOW + dt.timedelta(seconds=1))
    assert [c.id for c in db_store.claim_due_jobs(epoch, NOW, NOW, 1)] == [earlier]
    assert [c.id for c in db_store.claim_due_jobs(epoch, NOW, NOW, 10)] == [later]


def test_an_outcome_only_closes_its_own_attempt(
    db_store: store.Store, epoch: int, db_url: str
) -> None:
    job_id = insert(db_store, NOW)
    db_store.claim_due_jobs(epoch, NOW, NOW, 1)
    db_store.settle_deliveries([store.Settlement(attempt(job_id, 2, 200), "delivered")])
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT state FROM jobs").fetchone() == ("delivering",)
    db_store.settle_deliveries([store.Settlement(attempt(job_id, 1, 200), "delivered")])
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT state FROM jobs").fetchone() == ("delivered",)


def test_a_job_cancelled_in_flight_stays_cancelled(
    db_store: store.Store, epoch: int, db_url: str
) -> None:
    job_id = insert(db_store, NOW)
    db_store.claim_due_jobs(epoch, NOW, NOW, 1)
    with psycopg.connect(db_url) as conn:
        conn.execute("UPDATE jobs SET state = 'cancelled'")
    db_store.settle_deliveries([store.Settlement(attempt(job_id, 1, 500), "scheduled", NOW)])
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT state FROM jobs").fetchone() == ("cancelled",)


def test_one_settlement_records_every_outcome_and_gives_back_unsent_claims(
    db_store: store.Store, epoch: int, db_url: str
) -> None:
    delivered, failed, retried, unsent = (insert(db_store, NOW) for _ in range(4))
    assert len(db_store.claim_due_jobs(epoch, NOW, NOW, 10)) == 4
    retry_at = NOW + dt.timedelta(seconds=30)
    db_store.settle_deliveries(
        [
            store.Settlement(attempt(delivered, 1, 200), "delivered"),
            store.Settlement(attempt(failed, 1, 500), "failed"),
            store.Settlement(attempt(retried, 1, 503), "scheduled", retry_at),
        ],
        [(unsent, 1)],
    )
    with psycopg.connect(db_url) as conn:
        rows = dict(
            (row[0], row[1:])
            for row in conn.execute("SELECT id, state, attempts, next_attempt_at FROM jobs")
        )
        recorded = conn.execute("SELECT job_id FROM delivery_attempts").fetchall()
    assert rows[delivered][:2] == ("delivered", 1)
    assert rows[failed][:2] == ("failed", 1)
    assert rows[retried] == ("scheduled", 1, retry_at)
    assert rows[unsent] == ("scheduled", 0, NOW), "a claim never sent is not an attempt"
    assert sorted(r[0] for r in recorded) == sorted([delivered, failed, retried])


def test_expired_leases_and_orphans_are_released(
    db_store: store.Store, epoch: int, db_url: str
) -> None:
    first = insert(db_store, NOW)
    second = insert(db_store, NOW)
    db_store.claim_due_jobs(epoch, NOW, NOW + dt.timedelta(seconds=10), 1)
    db_store.claim_due_jobs(epoch, NOW, NOW + dt.timedelta(seconds=100), 1)
    assert db_store.release_expired_leases(epoch, NOW + dt.timedelta(seconds=50)) == 1
    assert db_store.release_expired_leases(epoch - 1, NOW + dt.timedelta(seconds=500)) == 0
    assert db_store.release_orphaned_deliveries(epoch, NOW) == 1
    with psycopg.connect(db_url) as conn:
        states = conn.execute("SELECT id, state FROM jobs ORDER BY id").fetchall()
    assert sorted(states) == sorted([(first, "scheduled"), (second, "scheduled")])


def tick(revision: int, at: dt.datetime) -> jobs.CronTick:
    return jobs.CronTick(revision, jobs.new_job_id(), at)


def test_cron_ticks_are_unique_and_fenced(db_store: store.Store, epoch: int, db_url: str) -> None:
    db_store.replace_crons([jobs.CronDefinition("c", "* * * * * *", "UTC")])
    revision = db_store.list_crons()[0].revision
    assert db_store.record_cron_fires(epoch, [tick(revision, NOW)], 3) == 1
    assert db_store.record_cron_fires(epoch, [tick(revision, NOW)], 3) == 0, "a repeat"
    assert db_store.record_cron_fires(epoch - 1, [tick(revision, NOW)], 3) == 0, "old leader"
    later = NOW + dt.timedelta(seconds=1)
    assert db_store.record_cron_fires(epoch, [tick(revision + 1, later)], 3) == 0, "no such cron"
    with psycopg.connect(db_url) as conn:
        ticks = conn.execute("SELECT cron_id, run_at FROM jobs").fetchall()
    assert ticks == [("c", NOW)]
    assert db_store.list_crons()[0].last_fire_at == NOW


def test_a_pass_of_ticks_is_recorded_at_once(
    db_store: store.Store, epoch: int, db_url: str
) -> None:
    db_store.replace_crons(
        [jobs.CronDefinition(name, "* * * * * *", "UTC") for name in ("a", "b", "gone")]
    )
    revisions = {c.id: c.revision for c in db_store.list_crons()}
    db_store.replace_crons([jobs.CronDefinition(name, "* * * * * *", "UTC") for name in ("a", "b")])
    later = NOW + dt.timedelta(seconds=1)
    recorded = db_store.record_cron_fires(
        epoch,
        [
            tick(revisions["a"], NOW),
            tick(revisions["a"], later),
            tick(revisions["a"], later),  # the same tick twice in one pass
            tick(revisions["b"], NOW),
            tick(revisions["gone"], NOW),
        ],
        3,
    )
    assert recorded == 3
    with psycopg.connect(db_url) as conn:
        ticks = conn.execute("SELECT cron_id, run_at FROM jobs ORDER BY cron_id, run_at").fetchall()
    assert ticks == [("a", NOW), ("a", later), ("b", NOW)]
    last = {c.id: c.last_fire_at for c in db_store.list_crons()}
    assert last == {"a": later, "b": NOW}


def test_a_second_leader_cannot_take_the_lock(db_url: str, epoch: int) -> None:
    other = store.LeaderLock(db_url, timeout=10)
    try:
        assert other.try_acquire("other") is None
        assert not other.confirm(epoch)
    finally:
        other.close()


def test_pruning_removes_old_delivered_and_cancelled_jobs_only(
    db_store: store.Store, db_url: str
) -> None:
    ids = {state: insert(db_store, NOW) for state in ("delivered", "cancelled", "failed")}
    recent = insert(db_store, NOW)
    pending = insert(db_store, NOW)
    with psycopg.connect(db_url) as conn:
        for state, job_id in ids.items():
            conn.execute(
                "UPDATE jobs SET state = %s, finished_at = now() - interval '8 days' WHERE id = %s",
                (state, job_id),
            )
            conn.execute(
                "INSERT INTO delivery_attempts (job_id, attempt, started_at, duration_ms)"
                " VALUES (%s, 1, now(), 1)",
                (job_id,),
            )
        conn.execute(
            "UPDATE jobs SET state = 'delivered', finished_at = now() WHERE id = %s", (recent,)
        )
    before = dt.datetime.now(dt.UTC) - dt.timedelta(days=7)
    assert db_store.prune_finished_jobs(before, 1) == 1
    assert db_store.prune_finished_jobs(before, 10) == 1
    assert db_store.prune_finished_jobs(before, 10) == 0
    with psycopg.connect(db_url) as conn:
        left = {row[0] for row in conn.execute("SELECT id FROM jobs")}
        attempts = {row[0] for row in conn.execute("SELECT job_id FROM delivery_attempts")}
    assert left == {ids["failed"], recent, pending}
    assert attempts == {ids["failed"]}


def refused(action: Callable[[], object]) -> errors.SchedulerError:
    with pytest.raises(errors.SchedulerError) as caught:
        action()
    return caught.value


def test_values_the_database_refuses_become_domain_errors(db_store: store.Store) -> None:
    """Validation stops these first; if one ever slipped through, it would be the client's 400
    (or a 409), never a 500, nor a 503 that invites a retry bound to fail again."""
    existing = jobs.NewJob(jobs.new_job_id(), "1", NOW, 3)
    db_store.insert_job(existing)
    cases: list[tuple[Callable[[], object], type[errors.SchedulerError], str]] = [
        # A unique constraint: the row exists.
        (lambda: db_store.insert_jobs([existing, existing]), errors.Conflict, "duplicate key"),
        # A check constraint (max_attempts > 0).
        (
            lambda: db_store.insert_job(jobs.NewJob(jobs.new_job_id(), "1", NOW, 0)),
            errors.InvalidValue,
            "check constraint",
        ),
        # Data exceptions, found by PostgreSQL and by psycopg before sending.
        (
            lambda: db_store.insert_job(jobs.NewJob(jobs.new_job_id(), '"\\u0000"', NOW, 3)),
            errors.InvalidValue,
            "unsupported Unicode escape",
        ),
        (
            lambda: db_store.insert_job(jobs.NewJob(jobs.new_job_id(), "1e400000000000", NOW, 3)),
            errors.InvalidValue,
            "numeric",
        ),
        (lambda: db_store.cancel_job("nul\x00"), errors.InvalidValue, "NUL"),
        (lambda: db_store.cancel_job("\ud800"), errors.InvalidValue, "not valid Unicode"),
        # A program limit (an index row too long for a btree, even compressed), once a 503.
        (
            lambda: db_store.put_cron(
                jobs.CronDefinition(secrets.token_urlsafe(8000), "@daily", "UTC")
            ),
            errors.InvalidValue,
            "index row",
        ),
    ]
    for action, kind, words in cases:
        error = refused(action)
        assert type(error) is kind, (words, error)
        assert words in str(error), error
    assert db_store.list_crons() == []


def test_a_refused_value_that_reached_the_app_is_a_400(app: Flask) -> None:
    with app.test_request_context("/insert", method="POST"):
        response = app.make_response(
            app.handle_user_exception(errors.InvalidValue("value overflows numeric format"))
        )
    assert response.status_code == 400
    assert response.get_json()["error"] == {
        "code": "invalid_request",
        "message": "PostgreSQL refused a value: value overflows numeric format.",
    }
