"""An endpoint's pause and limits as the claims see them, in-process on a real database: one
token bucket and one in-flight count for every dispatcher."""

from __future__ import annotations

import psycopg
import pytest

from scheduler import jobs, tuning
from scheduler.storage import cluster, db, deliveries, endpoints
from scheduler.storage import jobs as job_rows
from tests.worker.conftest import insert_due

UNLIMITED = endpoints.EndpointLimits(None, None)


def due_for(database: db.Database, count: int, endpoint: str = "billing") -> list[str]:
    due = cluster.database_now(database)
    new = [jobs.NewJob(jobs.new_job_id(), "1", due, 3, endpoint=endpoint) for _ in range(count)]
    return job_rows.insert_jobs(database, new)


def claim(database: db.Database, dispatcher: str, limit: int = 10) -> deliveries.EndpointClaim:
    return deliveries.claim_endpoint_jobs(database, dispatcher, 60, limit, "billing", UNLIMITED)


def test_the_bucket_holds_a_second_of_tokens_shared_by_every_dispatcher(
    database: db.Database,
) -> None:
    due_for(database, 10)
    endpoints.set_endpoint_limits(database, "billing", {"rate_limit": 2.0})
    first = claim(database, "one")
    second = claim(database, "two")
    assert len(first.claimed) == 2
    assert second.claimed == []
    # The next token is half a second away (less the time the claims took).
    assert second.retry_in is not None and 0.3 < second.retry_in <= 0.5


def test_a_slow_rate_still_lets_one_delivery_start(database: db.Database) -> None:
    due_for(database, 3)
    endpoints.set_endpoint_limits(database, "billing", {"rate_limit": 0.1})
    assert len(claim(database, "one").claimed) == 1
    held = claim(database, "two")
    assert held.claimed == [] and held.retry_in is not None and held.retry_in > 9


def test_max_in_flight_counts_every_dispatcher_s_deliveries(
    database: db.Database, db_url: str
) -> None:
    due_for(database, 6)
    defaults = endpoints.EndpointLimits(None, 3)
    one = deliveries.claim_endpoint_jobs(database, "one", 60, 2, "billing", defaults)
    two = deliveries.claim_endpoint_jobs(database, "two", 60, 10, "billing", defaults)
    assert (len(one.claimed), len(two.claimed)) == (2, 1)
    full = deliveries.claim_endpoint_jobs(database, "three", 60, 10, "billing", defaults)
    assert full.claimed == [] and full.retry_in == tuning.IN_FLIGHT_RECHECK_SECONDS
    with psycopg.connect(db_url) as conn:
        conn.execute("UPDATE jobs SET state = 'delivered' WHERE id = %s", (one.claimed[0].id,))
    assert (
        len(deliveries.claim_endpoint_jobs(database, "three", 60, 10, "billing", defaults).claimed)
        == 1
    )


def test_an_attempt_that_ended_leaves_max_in_flight_before_its_outcome_is_recorded(
    database: db.Database,
) -> None:
    due_for(database, 4)
    defaults = endpoints.EndpointLimits(None, 2)
    held = deliveries.claim_endpoint_jobs(database, "one", 60, 10, "billing", defaults)
    assert len(held.claimed) == 2
    full = deliveries.claim_endpoint_jobs(database, "one", 60, 10, "billing", defaults)
    assert full.claimed == []
    # The first attempt has its answer; its row says `delivering` until the recorder writes.
    ended = [held.claimed[0].id]
    more = deliveries.claim_endpoint_jobs(database, "one", 60, 10, "billing", defaults, ended=ended)
    assert len(more.claimed) == 1
    # Another dispatcher, which cannot know, still counts it.
    assert (
        deliveries.claim_endpoint_jobs(database, "two", 60, 10, "billing", defaults).claimed == []
    )


def test_a_limit_set_at_run_time_wins_over_the_environment_until_reset(
    database: db.Database,
) -> None:
    due_for(database, 6)
    endpoints.set_endpoint_limits(database, "billing", {"max_in_flight": None})
    defaults = endpoints.EndpointLimits(None, 1)
    assert (
        len(deliveries.claim_endpoint_jobs(database, "one", 60, 3, "billing", defaults).claimed)
        == 3
    )
    endpoints.reset_endpoint_limits(database, "billing")
    assert deliveries.claim_endpoint_jobs(database, "one", 60, 3, "billing", defaults).claimed == []


def test_a_paused_endpoint_sends_only_what_an_operator_runs(database: db.Database) -> None:
    ids = due_for(database, 3)
    endpoints.set_endpoint_paused(database, "billing", True)
    held = claim(database, "one")
    assert held.claimed == [] and held.retry_in is None
    job_rows.run_job_now(database, ids[1])
    assert [item.id for item in claim(database, "one").claimed] == [ids[1]]
    endpoints.set_endpoint_paused(database, "billing", False)
    assert {item.id for item in claim(database, "one").claimed} == {ids[0], ids[2]}


@pytest.mark.parametrize("held", [["billing"], []])
def test_the_shared_claim_leaves_held_endpoints_alone(
    database: db.Database, held: list[str]
) -> None:
    billed = due_for(database, 2)
    plain = insert_due(database, 2)
    claimed = {item.id for item in deliveries.claim_due_jobs(database, "one", 60, 10, held)}
    assert claimed == (set(plain) if held else set(plain) | set(billed))
    # What is left waiting belongs to a held endpoint, which plans its own looks.
    assert deliveries.next_due_in(database, held) is None


@pytest.mark.parametrize(
    "change",
    [{"paused": True}, {"rate_limit": 5.0}, {"max_in_flight": 2}],
)
def test_a_change_holds_from_its_commit_even_for_a_dispatcher_that_has_not_reloaded(
    database: db.Database, change: dict[str, object]
) -> None:
    due_for(database, 2)
    plain = insert_due(database, 1)
    if "paused" in change:
        endpoints.set_endpoint_paused(database, "billing", True)
    else:
        endpoints.set_endpoint_limits(database, "billing", change)  # type: ignore[arg-type]
    # Its list of held endpoints is stale (empty): the claim still leaves billing's jobs alone.
    claimed = {
        item.id for item in deliveries.claim_due_jobs(database, "one", 60, 10, [], ["billing"])
    }
    assert claimed == set(plain)
    assert deliveries.next_due_in(database, [], ["billing"]) is None
