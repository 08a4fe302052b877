"""Endpoints' weights as the claim loop sees them, in-process on a real database: a weight set at
run time reaches the planner on the next look after a notice, and the claims keep to it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from scheduler import config, jobs
from scheduler.storage import cluster, db, endpoints
from scheduler.storage import jobs as job_rows
from scheduler.worker import claims, routes, senders
from tests import support


@pytest.fixture
def release(receiver: support.Receiver) -> Iterator[threading.Event]:
    """The receiver answers nothing until this is set, so every claimed delivery stays held."""
    answer = threading.Event()
    receiver.respond = lambda request: (200, 0.0) if answer.wait(30) else (500, 0.0)
    yield answer
    answer.set()


@pytest.fixture
def weighted_settings(
    make_settings: Callable[..., config.Settings], receiver: support.Receiver
) -> config.Settings:
    named = f"slow={receiver.url} heavy={receiver.url} billing={receiver.url}"
    return make_settings(SCHEDULER_DELIVERY_THREADS="4", SCHEDULER_ENDPOINTS=named)


@pytest.fixture
def loop(
    weighted_settings: config.Settings, database: db.Database, release: threading.Event
) -> Iterator[claims.ClaimLoop]:
    sending = senders.Senders(weighted_settings, database, lambda: None, lambda seconds: None)
    try:
        yield claims.ClaimLoop(weighted_settings, database, sending, "test", lambda: True)
    finally:
        release.set()
        assert sending.close(10)


def due_for(database: db.Database, endpoint: str, count: int) -> list[str]:
    due = cluster.database_now(database)
    new = [jobs.NewJob(jobs.new_job_id(), "1", due, 3, endpoint=endpoint) for _ in range(count)]
    return job_rows.insert_jobs(database, new)


def test_a_weighted_endpoint_takes_its_weighted_share_of_the_shared_claim(
    loop: claims.ClaimLoop, database: db.Database
) -> None:
    planner = loop.senders.planner
    stopping = threading.Event()
    due_for(database, "slow", 1)
    loop.claim_and_send(stopping)
    assert planner.holding_by_endpoint() == {"slow": 1}
    endpoints.set_endpoint_limits(database, "heavy", {"weight": 3.0})
    loop.routes.invalidate()  # as the endpoints-changed notice does
    due_for(database, "heavy", 10)
    due_for(database, "slow", 10)

    loop.claim_and_send(stopping)

    # 4 threads, weights 3 and 1: heavy, holding none, may take 4 * 3 / 4 = 3 at once (2 at
    # weight 1); slow, alone holding some, fills the rest of the 8 slots.
    assert planner.holding_by_endpoint() == {"heavy": 3, "slow": 5}


def test_a_weighted_limited_endpoint_takes_its_weighted_share_of_idle_threads(
    loop: claims.ClaimLoop, database: db.Database
) -> None:
    planner = loop.senders.planner
    stopping = threading.Event()
    due_for(database, "slow", 1)
    loop.claim_and_send(stopping)
    endpoints.set_endpoint_limits(database, "billing", {"max_in_flight": 100, "weight": 3.0})
    loop.routes.invalidate()
    due_for(database, "billing", 10)
    due_for(database, "slow", 10)

    loop.claim_and_send(stopping)

    # Billing 3 against the shared flow 1: 3 of the 4 threads (2 at weight 1); the shared flow
    # keeps to the one left, which slow already holds.
    assert planner.holding("billing") == 3
    assert planner.holding_by_endpoint() == {"slow": 1}


def test_weights_reload_on_a_notice_and_null_is_the_default(
    weighted_settings: config.Settings, database: db.Database
) -> None:
    endpoint_routes = routes.EndpointRoutes(weighted_settings, database)
    assert endpoint_routes.weights() == {}
    endpoints.set_endpoint_limits(database, "heavy", {"weight": 2.5})
    endpoints.set_endpoint_limits(database, "unconfigured", {"weight": 4.0})
    assert endpoint_routes.weights() == {}, "cached until a notice or a second"
    endpoint_routes.invalidate()
    assert endpoint_routes.weights() == {"heavy": 2.5}
    assert endpoint_routes.held() == [], "a weight does not hold an endpoint apart"
    endpoints.set_endpoint_limits(database, "heavy", {"weight": None})
    endpoint_routes.invalidate()
    assert endpoint_routes.weights() == {}
