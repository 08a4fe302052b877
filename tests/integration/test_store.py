"""The store's fencing, leasing and pruning rules, against a real database."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable

import psycopg
import pytest
from flask import Flask

from scheduler import errors, jobs
from scheduler.storage import cluster, crons, db, deliveries, outcomes, retention
from scheduler.storage import jobs as job_rows

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def database(database: db.Database) -> db.Database:
    return database


def insert(database: db.Database, run_at: dt.datetime, max_attempts: int = 3) -> str:
    job_id = jobs.new_job_id()
    job_rows.insert_jobs(database, [jobs.NewJob(job_id, '{"k": 1}', run_at, max_attempts)])
    return job_id


def attempt(job_id: str, number: int, status: int | None) -> outcomes.AttemptRecord:
    return outcomes.AttemptRecord(
        job_id=job_id,
        attempt=number,
        started_at=NOW,
        duration_ms=5,
        status_code=status,
        error=None,
        response_excerpt=None,
    )


def settle(
    claimed: jobs.Delivery, status: int, state: str, retry_in: float | None = None
) -> outcomes.Settlement:
    record = attempt(claimed.id, claimed.attempts, status)
    return outcomes.Settlement(record, claimed.claim_token, state, retry_in)


def state_of(db_url: str, job_id: str) -> tuple[str, int]:
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT state, attempts FROM jobs WHERE id = %s", (job_id,)).fetchone()
    assert row is not None
    return row


def test_any_dispatcher_claims_and_a_claimed_job_is_not_claimed_twice(
    database: db.Database,
) -> None:
    job_id = insert(database, NOW)
    (claimed,) = deliveries.claim_due_jobs(database, "one", 60, 10)
    assert (claimed.id, claimed.attempts, claimed.body) == (job_id, 1, '{"k": 1}')
    assert deliveries.claim_due_jobs(database, "two", 60, 10) == []


def test_due_is_judged_by_the_database_clock_in_due_order(database: db.Database) -> None:
    now = cluster.database_now(database)
    later = insert(database, now - dt.timedelta(seconds=1))
    earlier = insert(database, now - dt.timedelta(seconds=5))
    insert(database, now + dt.timedelta(seconds=30))
    assert [c.id for c in deliveries.claim_due_jobs(database, "one", 60, 1)] == [earlier]
    assert [c.id for c in deliveries.claim_due_jobs(database, "one", 60, 10)] == [later]
    due_in = deliveries.next_due_in(database)
    assert due_in is not None and 25 < due_in <= 30


def test_a_claim_ahead_takes_the_jobs_due_within_it_and_says_how_soon_each_is_due(
    database: db.Database,
) -> None:
    now = cluster.database_now(database)
    soon = insert(database, now + dt.timedelta(seconds=30))
    insert(database, now + dt.timedelta(seconds=90))
    assert deliveries.claim_due_jobs(database, "one", 60, 10) == []
    (claimed,) = deliveries.claim_due_jobs(database, "one", 60, 10, known=["default"], ahead=60)
    assert claimed.id == soon
    assert 29 < claimed.starts_in <= 30


def test_an_outcome_is_fenced_by_its_claim_not_its_attempt_number(
    database: db.Database, db_url: str
) -> None:
    job_id = insert(database, NOW)
    (first,) = deliveries.claim_due_jobs(database, "one", 60, 1)
    outcomes.settle_deliveries(database, [], [(job_id, first.claim_token)])
    (second,) = deliveries.claim_due_jobs(database, "two", 60, 1)
    assert second.attempts == first.attempts == 1
    assert second.claim_token != first.claim_token

    outcomes.settle_deliveries(database, [settle(first, 200, "delivered")])
    assert state_of(db_url, job_id) == ("delivering", 1), "a stale claim changed the job"
    outcomes.settle_deliveries(database, [settle(second, 200, "delivered")])
    assert state_of(db_url, job_id) == ("delivered", 1)


def test_a_job_cancelled_in_flight_stays_cancelled(database: db.Database, db_url: str) -> None:
    job_id = insert(database, NOW)
    (claimed,) = deliveries.claim_due_jobs(database, "one", 60, 1)
    with psycopg.connect(db_url) as conn:
        conn.execute("UPDATE jobs SET state = 'cancelled'")
    outcomes.settle_deliveries(database, [settle(claimed, 500, "scheduled", 1)])
    assert state_of(db_url, job_id) == ("cancelled", 1)


def test_one_settlement_records_every_outcome_and_gives_back_unsent_claims(
    database: db.Database, db_url: str
) -> None:
    delivered, failed, retried, unsent = (insert(database, NOW) for _ in range(4))
    claimed = {c.id: c for c in deliveries.claim_due_jobs(database, "one", 60, 10)}
    assert len(claimed) == 4
    outcomes.settle_deliveries(
        database,
        [
            settle(claimed[delivered], 200, "delivered"),
            settle(claimed[failed], 500, "failed"),
            settle(claimed[retried], 503, "scheduled", 30),
        ],
        [(unsent, claimed[unsent].claim_token)],
    )
    with psycopg.connect(db_url) as conn:
        rows = dict(
            (row[0], row[1:])
            for row in conn.execute(
                "SELECT id, state, attempts, next_attempt_at - now(), claim_token FROM jobs"
            )
        )
        recorded = conn.execute("SELECT job_id FROM delivery_attempts").fetchall()
    assert rows[delivered][:2] == ("delivered", 1)
    assert rows[failed][:2] == ("failed", 1)
    state, attempts, retry_in, token = rows[retried]
    assert (state, attempts, token) == ("scheduled", 1, None)
    assert dt.timedelta(seconds=29) < retry_in <= dt.timedelta(seconds=30), "database clock"
    assert rows[unsent][:2] == ("scheduled", 0), "a claim never sent is not an attempt"
    assert sorted(r[0] for r in recorded) == sorted([delivered, failed, retried])


def beat(database: db.Database, dispatcher_id: str, age_seconds: float, db_url: str) -> None:
    cluster.beat_dispatcher(database, dispatcher_id, "host", 1, (0, 0), None, ["default"])
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "UPDATE dispatchers SET heartbeat_at = now() - make_interval(secs => %s) WHERE id = %s",
            (age_seconds, dispatcher_id),
        )


def test_dead_dispatchers_claims_and_expired_leases_are_released_live_ones_kept(
    database: db.Database, epoch: int, db_url: str
) -> None:
    beat(database, "live", 1, db_url)
    beat(database, "dead", 11, db_url)
    held = {name: insert(database, NOW) for name in ("live", "dead", "expired", "unowned")}
    for name in ("live", "dead"):
        deliveries.claim_due_jobs(database, name, 60, 1)
    deliveries.claim_due_jobs(database, "live", 0, 1)  # a lease that has already run out
    deliveries.claim_due_jobs(database, "vanished", 60, 1)  # a dispatcher with no row at all
    del held["unowned"]
    unowned = insert(database, NOW)
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "UPDATE jobs SET state = 'delivering', leased_until = now() + interval '1 hour'"
            " WHERE id = %s",
            (unowned,),
        )

    with pytest.raises(errors.TermEnded):
        deliveries.release_dead_claims(cluster.TermDatabase(database.pool, epoch - 1), 10)
    assert deliveries.release_dead_claims(cluster.TermDatabase(database.pool, epoch), 10) == 3
    assert state_of(db_url, held["live"])[0] == "delivering"
    assert state_of(db_url, held["dead"])[0] == "scheduled"
    assert state_of(db_url, held["expired"])[0] == "scheduled"
    assert state_of(db_url, unowned)[0] == "delivering", "a live claim naming no dispatcher"


def test_live_dispatchers_are_listed_with_the_leader_first(
    database: db.Database, epoch: int, db_url: str
) -> None:
    beat(database, "member", 0, db_url)
    beat(database, "test", 0, db_url)  # the epoch fixture's holder
    beat(database, "gone", 30, db_url)
    listed = cluster.list_dispatchers(database, 10)
    assert [(d.id, d.role) for d in listed] == [("test", "leader"), ("member", "member")]
    cluster.remove_dispatcher(database, "member")
    assert [d.id for d in cluster.list_dispatchers(database, 10)] == ["test"]
    assert retention.prune_dispatchers(database, 20) == 1


def test_pruning_removes_old_delivered_cancelled_and_skipped_jobs_only(
    database: db.Database, db_url: str
) -> None:
    states = ("delivered", "cancelled", "skipped", "failed")
    ids = {state: insert(database, NOW) for state in states}
    recent = insert(database, NOW)
    pending = insert(database, NOW)
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
    assert retention.prune_jobs(database, retention.FINISHED, before, 1) == 1
    assert retention.prune_jobs(database, retention.FINISHED, before, 10) == 2
    assert retention.prune_jobs(database, retention.FINISHED, before, 10) == 0
    with psycopg.connect(db_url) as conn:
        left = {row[0] for row in conn.execute("SELECT id FROM jobs")}
        attempts = {row[0] for row in conn.execute("SELECT job_id FROM delivery_attempts")}
    assert left == {ids["failed"], recent, pending}
    assert attempts == {ids["failed"]}


def refused(action: Callable[[], object]) -> errors.SchedulerError:
    with pytest.raises(errors.SchedulerError) as caught:
        action()
    return caught.value


@pytest.mark.parametrize("announce_within", [None, 0.0], ids=["announced", "quiet"])
def test_several_jobs_are_stored_in_one_statement_with_their_own_bodies_and_due_times(
    database: db.Database, db_url: str, announce_within: float | None
) -> None:
    later = NOW + dt.timedelta(days=1)
    new = [
        jobs.NewJob(jobs.new_job_id(), '{"exact": 1.000000000000000000001}', None, 3, delay=60),
        jobs.NewJob(jobs.new_job_id(), "null", None, 2, delay=1.5),
        jobs.NewJob(jobs.new_job_id(), "[1, 2]", later, 5, endpoint="billing"),
    ]
    assert job_rows.insert_jobs(database, new, announce_within=announce_within) == [
        j.id for j in new
    ]
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT body::text, extract(epoch FROM next_attempt_at - created_at), max_attempts,"
            " endpoint, next_attempt_at FROM jobs ORDER BY id"
        ).fetchall()
    assert [(body, attempts, endpoint) for body, _, attempts, endpoint, _ in rows] == [
        ('{"exact": 1.000000000000000000001}', 3, "default"),
        ("null", 2, "default"),
        ("[1, 2]", 5, "billing"),
    ]
    assert 59 < rows[0][1] <= 61 and 1 < rows[1][1] <= 2.5
    assert rows[2][4] == later


def test_values_the_database_refuses_become_domain_errors(database: db.Database) -> None:
    """Validation stops these first; if one ever slipped through, it would be the client's 400
    (or a 409), never a 500, nor a 503 that invites a retry bound to fail again."""
    existing = jobs.NewJob(jobs.new_job_id(), "1", NOW, 3)
    job_rows.insert_jobs(database, [existing])
    cases: list[tuple[Callable[[], object], type[errors.SchedulerError], str]] = [
        # A unique constraint: the row exists.
        (
            lambda: job_rows.insert_jobs(database, [existing, existing]),
            errors.Conflict,
            "duplicate key",
        ),
        # A check constraint (max_attempts > 0).
        (
            lambda: job_rows.insert_jobs(database, [jobs.NewJob(jobs.new_job_id(), "1", NOW, 0)]),
            errors.InvalidValue,
            "check constraint",
        ),
        # Data exceptions, found by PostgreSQL and by psycopg before sending.
        (
            lambda: job_rows.insert_jobs(
                database, [jobs.NewJob(jobs.new_job_id(), '"\\u0000"', NOW, 3)]
            ),
            errors.InvalidValue,
            "unsupported Unicode escape",
        ),
        (
            lambda: job_rows.insert_jobs(
                database, [jobs.NewJob(jobs.new_job_id(), "1e400000000000", NOW, 3)]
            ),
            errors.InvalidValue,
            "numeric",
        ),
        (lambda: job_rows.cancel_job(database, "nul\x00"), errors.InvalidValue, "NUL"),
        (lambda: job_rows.cancel_job(database, "\ud800"), errors.InvalidValue, "not valid Unicode"),
        # A program limit (an index row too long for a btree, even compressed), once a 503.
        (
            lambda: crons.put_cron(
                database, jobs.CronDefinition(secrets.token_urlsafe(8000), "@daily", "UTC")
            ),
            errors.InvalidValue,
            "index row",
        ),
    ]
    for action, kind, words in cases:
        error = refused(action)
        assert type(error) is kind, (words, error)
        assert words in str(error), error
    assert crons.list_crons(database) == []


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


def due_to(database: db.Database, endpoint: str, seconds_ago: float) -> str:
    job_id = jobs.new_job_id()
    due = cluster.database_now(database) - dt.timedelta(seconds=seconds_ago)
    job_rows.insert_jobs(database, [jobs.NewJob(job_id, "{}", due, 3, endpoint=endpoint)])
    return job_id


def test_the_shared_claim_keeps_each_endpoint_to_its_share_and_the_least_busy_goes_first(
    database: db.Database,
) -> None:
    known = ["default", "slow", "third"]
    backlog = [due_to(database, "slow", 60 - n) for n in range(6)]
    fresh = due_to(database, "third", 0.5)
    mine = due_to(database, "default", 30)

    # `slow` already holds 4 deliveries and may take one more; `default` holds 1.
    claimed = deliveries.claim_due_jobs(
        database,
        "d",
        60,
        2,
        known=known,
        shares=({"slow": 1, "default": 3}, 2),
        holding={"slow": 4, "default": 1},
    )

    # Turn by turn, the least busy first: `third` (holding none), then `default`; in due order
    # alone, `slow`'s oldest would have gone first.
    assert {c.id for c in claimed} == {fresh, mine}
    # With room for all, `slow` still takes no more than its share left: one.
    rest = deliveries.claim_due_jobs(
        database, "d", 60, 10, known=known, shares=({"slow": 1}, 2), holding={"slow": 4}
    )
    assert [c.id for c in rest] == [backlog[0]]
