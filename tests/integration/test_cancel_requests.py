"""A cancel wins, in the storage statements on a real database: a cancel that finds a job being
delivered is kept on it, and every statement that ends the claim ends the job cancelled (or
delivered, if that attempt delivered it), with no failure notification."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from scheduler import jobs
from scheduler.storage import cluster, crons, db, deliveries, outcomes
from scheduler.storage import jobs as job_rows

NOTICES = outcomes.FailureNotices("default", 3)


def claimed_job(
    database: db.Database, max_attempts: int = 3, cron_id: str | None = None
) -> jobs.Delivery:
    """A job due now (a run of `cron_id` when given), claimed by dispatcher `one`."""
    due = cluster.database_now(database) - dt.timedelta(seconds=1)
    if cron_id is None:
        job_rows.insert_jobs(database, [jobs.NewJob(jobs.new_job_id(), "{}", due, max_attempts)])
    else:
        crons.run_cron_now(database, cron_id, jobs.new_job_id(), max_attempts)
    (claimed,) = deliveries.claim_due_jobs(database, "one", 60, 10)
    return claimed


def settlement(
    item: jobs.Delivery, state: str, status: int | None, attempted: bool = True
) -> outcomes.Settlement:
    record = outcomes.AttemptRecord(
        job_id=item.id,
        attempt=item.attempts,
        started_at=dt.datetime.now(dt.UTC),
        duration_ms=4,
        status_code=status,
        error=None if status == 200 else f"HTTP {status}",
        response_excerpt=None,
        error_kind=None if status == 200 else f"http_{status}",
    )
    retry_in = 60.0 if state == "scheduled" else None
    return outcomes.Settlement(record, item.claim_token, state, retry_in, attempted=attempted)


def row(db_url: str, job_id: str) -> dict[str, Any]:
    with psycopg.connect(db_url, row_factory=dict_row) as conn:
        found = conn.execute(
            "SELECT state, attempts, finished_at, cancel_requested_at, next_attempt_at,"
            " last_status, claim_token FROM jobs WHERE id = %s",
            (job_id,),
        ).fetchone()
    assert found is not None
    return found


def notices(db_url: str) -> int:
    with psycopg.connect(db_url) as conn:
        counted = conn.execute("SELECT count(*) FROM jobs WHERE event IS NOT NULL").fetchone()
    assert counted is not None
    return int(counted[0])


def test_a_cancel_of_a_job_being_delivered_is_kept_on_it_until_its_claim_ends(
    database: db.Database, db_url: str
) -> None:
    claimed = claimed_job(database)
    job_rows.cancel_job(database, claimed.id)
    first = row(db_url, claimed.id)
    assert (first["state"], first["finished_at"]) == ("delivering", None)
    assert first["cancel_requested_at"] is not None
    assert first["claim_token"] == claimed.claim_token, "the attempt in flight keeps its claim"
    job_rows.cancel_job(database, claimed.id)
    assert row(db_url, claimed.id)["cancel_requested_at"] == first["cancel_requested_at"]
    record, _ = job_rows.get_job(database, claimed.id)
    assert record.cancel_requested_at == first["cancel_requested_at"]
    assert not record.cancellable, "asked once; a second cancel changes nothing"


def test_a_waiting_job_is_cancelled_at_once_and_a_finished_one_is_left_alone(
    database: db.Database, db_url: str
) -> None:
    delivered = claimed_job(database)
    outcomes.settle_deliveries(database, [settlement(delivered, "delivered", 200)])
    later = cluster.database_now(database) + dt.timedelta(hours=1)
    (waiting,) = job_rows.insert_jobs(database, [jobs.NewJob(jobs.new_job_id(), "{}", later, 3)])
    changed = job_rows.cancel_jobs(database, [waiting, delivered.id, "unknown"])
    assert (changed.now, changed.requested) == (1, 0)
    cancelled = row(db_url, waiting)
    assert cancelled["state"] == "cancelled"
    assert cancelled["finished_at"] is not None and cancelled["cancel_requested_at"] is not None
    assert row(db_url, delivered.id)["cancel_requested_at"] is None


@pytest.mark.parametrize("max_attempts", [1, 3], ids=["last attempt", "retries left"])
def test_a_failed_attempt_after_a_cancel_ends_the_job_cancelled_without_a_notice(
    database: db.Database, db_url: str, max_attempts: int
) -> None:
    claimed = claimed_job(database, max_attempts)
    changed = job_rows.cancel_jobs(database, [claimed.id])
    assert (changed.now, changed.requested) == (0, 1)
    state = "failed" if max_attempts == 1 else "scheduled"
    outcomes.settle_deliveries(database, [settlement(claimed, state, 500)], notices=NOTICES)
    ended = row(db_url, claimed.id)
    assert (ended["state"], ended["attempts"], ended["last_status"]) == ("cancelled", 1, 500)
    assert ended["finished_at"] is not None and ended["claim_token"] is None
    assert ended["next_attempt_at"] == claimed.due_at, "a cancelled job has no next try"
    assert notices(db_url) == 0
    with psycopg.connect(db_url) as conn:
        recorded = conn.execute("SELECT attempt, status_code FROM delivery_attempts").fetchall()
    assert recorded == [(1, 500)]
    assert deliveries.claim_due_jobs(database, "two", 60, 10) == []


def test_a_job_that_fails_without_a_cancel_still_makes_its_notice(
    database: db.Database, db_url: str
) -> None:
    claimed = claimed_job(database, 1)
    outcomes.settle_deliveries(database, [settlement(claimed, "failed", 500)], notices=NOTICES)
    assert row(db_url, claimed.id)["state"] == "failed"
    assert notices(db_url) == 1


def test_an_attempt_that_delivers_after_a_cancel_ends_the_job_delivered(
    database: db.Database, db_url: str
) -> None:
    claimed = claimed_job(database)
    job_rows.cancel_job(database, claimed.id)
    outcomes.settle_deliveries(database, [settlement(claimed, "delivered", 200)])
    ended = row(db_url, claimed.id)
    assert (ended["state"], ended["last_status"]) == ("delivered", 200)
    assert ended["cancel_requested_at"] is not None, "the job shows the cancel came too late"


def test_a_claim_given_back_unsent_after_a_cancel_ends_the_job_cancelled(
    database: db.Database, db_url: str
) -> None:
    claimed = claimed_job(database)
    job_rows.cancel_job(database, claimed.id)
    outcomes.settle_deliveries(database, [], [(claimed.id, claimed.claim_token)])
    ended = row(db_url, claimed.id)
    assert (ended["state"], ended["attempts"]) == ("cancelled", 0)
    assert ended["finished_at"] is not None


def test_a_claim_never_sent_that_fails_after_a_cancel_ends_cancelled_without_a_notice(
    database: db.Database, db_url: str
) -> None:
    claimed = claimed_job(database, 1)
    job_rows.cancel_job(database, claimed.id)
    unsent = settlement(claimed, "failed", None, attempted=False)
    outcomes.settle_deliveries(database, [unsent], notices=NOTICES)
    assert (row(db_url, claimed.id)["state"], notices(db_url)) == ("cancelled", 0)


def test_a_rescued_claim_of_a_cancelled_job_ends_cancelled_and_others_are_due_again(
    database: db.Database, db_url: str, epoch: int
) -> None:
    cancelled = claimed_job(database)
    kept = claimed_job(database)
    job_rows.cancel_job(database, cancelled.id)
    # Dispatcher `one` has no heartbeat row: it is dead, and the leader hands its claims on.
    assert deliveries.release_dead_claims(cluster.TermDatabase(database.pool, epoch), 10) == 2
    ended = row(db_url, cancelled.id)
    assert (ended["state"], ended["claim_token"]) == ("cancelled", None)
    assert ended["finished_at"] is not None
    assert row(db_url, kept.id)["state"] == "scheduled"
    assert [c.id for c in deliveries.claim_due_jobs(database, "two", 60, 10)] == [kept.id]


@pytest.mark.parametrize("removal", ["replace_crons", "delete_cron"])
def test_a_removed_cron_s_run_in_flight_ends_cancelled(
    database: db.Database, db_url: str, removal: str
) -> None:
    crons.replace_crons(database, [jobs.CronDefinition("nightly", "0 3 * * *", "UTC")])
    claimed = claimed_job(database, cron_id="nightly")
    later = crons.run_cron_now(database, "nightly", jobs.new_job_id(), 3)
    if removal == "replace_crons":
        crons.replace_crons(database, [])
    else:
        assert crons.delete_cron(database, "nightly")
    assert row(db_url, later)["state"] == "cancelled", "a run waiting is cancelled at once"
    in_flight = row(db_url, claimed.id)
    assert in_flight["state"] == "delivering" and in_flight["cancel_requested_at"] is not None
    outcomes.settle_deliveries(database, [settlement(claimed, "scheduled", 503)])
    assert row(db_url, claimed.id)["state"] == "cancelled"
