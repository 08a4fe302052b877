"""An endpoint's pause and limits as the claims see them, in-process on a real database: one
token bucket and one in-flight count for every dispatcher."""

from __future__ import annotations

import psycopg
import pytest

from scheduler import jobs, store
from tests.worker.conftest import insert_due

UNLIMITED = store.EndpointLimits(None, None)


def due_for(job_store: store.Store, count: int, endpoint: str = "billing") -> list[str]:
    due = job_store.database_now()
    new = [jobs.NewJob(jobs.new_job_id(), "1", due, 3, endpoint=endpoint) for _ in range(count)]
    return job_store.insert_jobs(new)


def claim(job_store: store.Store, dispatcher: str, limit: int = 10) -> store.EndpointClaim:
    return job_store.claim_endpoint_jobs(dispatcher, 60, limit, "billing", UNLIMITED)


def test_the_bucket_holds_a_second_of_tokens_shared_by_every_dispatcher(
    job_store: store.Store,
) -> None:
    due_for(job_store, 10)
    job_store.set_endpoint_limits("billing", {"rate_limit": 2.0})
    first = claim(job_store, "one")
    second = claim(job_store, "two")
    assert len(first.claimed) == 2
    assert second.claimed == []
    # The next token is half a second away (less the time the claims took).
    assert second.retry_in is not None and 0.3 < second.retry_in <= 0.5


def test_a_slow_rate_still_lets_one_delivery_start(job_store: store.Store) -> None:
    due_for(job_store, 3)
    job_store.set_endpoint_limits("billing", {"rate_limit": 0.1})
    assert len(claim(job_store, "one").claimed) == 1
    held = claim(job_store, "two")
    assert held.claimed == [] and held.retry_in is not None and held.retry_in > 9


def test_max_in_flight_counts_every_dispatcher_s_deliveries(
    job_store: store.Store, db_url: str
) -> None:
    due_for(job_store, 6)
    defaults = store.EndpointLimits(None, 3)
    one = job_store.claim_endpoint_jobs("one", 60, 2, "billing", defaults)
    two = job_store.claim_endpoint_jobs("two", 60, 10, "billing", defaults)
    assert (len(one.claimed), len(two.claimed)) == (2, 1)
    full = job_store.claim_endpoint_jobs("three", 60, 10, "billing", defaults)
    assert full.claimed == [] and full.retry_in == store.IN_FLIGHT_RECHECK_SECONDS
    with psycopg.connect(db_url) as conn:
        conn.execute("UPDATE jobs SET state = 'delivered' WHERE id = %s", (one.claimed[0].id,))
    assert len(job_store.claim_endpoint_jobs("three", 60, 10, "billing", defaults).claimed) == 1


def test_a_limit_set_at_run_time_wins_over_the_environment_until_reset(
    job_store: store.Store,
) -> None:
    due_for(job_store, 6)
    job_store.set_endpoint_limits("billing", {"max_in_flight": None})
    defaults = store.EndpointLimits(None, 1)
    assert len(job_store.claim_endpoint_jobs("one", 60, 3, "billing", defaults).claimed) == 3
    job_store.reset_endpoint_limits("billing")
    assert job_store.claim_endpoint_jobs("one", 60, 3, "billing", defaults).claimed == []


def test_a_paused_endpoint_sends_only_what_an_operator_runs(job_store: store.Store) -> None:
    ids = due_for(job_store, 3)
    job_store.set_endpoint_paused("billing", True)
    held = claim(job_store, "one")
    assert held.claimed == [] and held.retry_in is None
    job_store.run_job_now(ids[1])
    assert [item.id for item in claim(job_store, "one").claimed] == [ids[1]]
    job_store.set_endpoint_paused("billing", False)
    assert {item.id for item in claim(job_store, "one").claimed} == {ids[0], ids[2]}


@pytest.mark.parametrize("held", [["billing"], []])
def test_the_shared_claim_leaves_held_endpoints_alone(
    job_store: store.Store, held: list[str]
) -> None:
    billed = due_for(job_store, 2)
    plain = insert_due(job_store, 2)
    claimed = {item.id for item in job_store.claim_due_jobs("one", 60, 10, held)}
    assert claimed == (set(plain) if held else set(plain) | set(billed))
    # What is left waiting belongs to a held endpoint, which plans its own looks.
    assert job_store.next_due_in(held) is None


@pytest.mark.parametrize(
    "change",
    [{"paused": True}, {"rate_limit": 5.0}, {"max_in_flight": 2}],
)
def test_a_change_holds_from_its_commit_even_for_a_dispatcher_that_has_not_reloaded(
    job_store: store.Store, change: dict[str, object]
) -> None:
    due_for(job_store, 2)
    plain = insert_due(job_store, 1)
    if "paused" in change:
        job_store.set_endpoint_paused("billing", True)
    else:
        job_store.set_endpoint_limits("billing", change)  # type: ignore[arg-type]
    # Its list of held endpoints is stale (empty): the claim still leaves billing's jobs alone.
    claimed = {item.id for item in job_store.claim_due_jobs("one", 60, 10, [], ["billing"])}
    assert claimed == set(plain)
    assert job_store.next_due_in([], ["billing"]) is None
