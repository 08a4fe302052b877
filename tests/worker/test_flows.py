"""Flow-control keys as the claims see them, in-process on a real database: each key's bucket
and in-flight count are shared by every dispatcher, keys take turns inside their endpoint, and
the shared claim leaves a keyed endpoint to its own claims."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psycopg
import pytest

from scheduler import config, jobs, tuning
from scheduler.storage import cluster, db, deliveries, endpoints, flows, notices
from scheduler.storage import jobs as job_rows
from scheduler.worker import dispatcher
from tests import support
from tests.worker.conftest import insert_due

UNLIMITED = endpoints.EndpointLimits(None, None)


def keyed(
    database: db.Database,
    count: int,
    key: str,
    rate: float | None = None,
    max_in_flight: int | None = None,
    endpoint: str = "billing",
) -> list[str]:
    due = cluster.database_now(database)
    flow = jobs.Flow(key, rate, max_in_flight)
    new = [
        jobs.NewJob(jobs.new_job_id(), "1", due, 3, endpoint=endpoint, flow=flow)
        for _ in range(count)
    ]
    return job_rows.insert_jobs(database, new)


def unkeyed(database: db.Database, count: int) -> list[str]:
    due = cluster.database_now(database)
    new = [jobs.NewJob(jobs.new_job_id(), "1", due, 3, endpoint="billing") for _ in range(count)]
    return job_rows.insert_jobs(database, new)


def claim(database: db.Database, dispatcher: str, limit: int = 10) -> deliveries.EndpointClaim:
    return deliveries.claim_endpoint_jobs(
        database, dispatcher, 60, limit, "billing", UNLIMITED, keyed=True
    )


def finish(db_url: str, claimed: list[jobs.Delivery]) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "UPDATE jobs SET state = 'delivered' WHERE id = ANY(%s)", ([c.id for c in claimed],)
        )


def test_a_key_s_bucket_is_shared_by_every_dispatcher(database: db.Database) -> None:
    keyed(database, 10, "tenant-1", rate=2.0)
    first = claim(database, "one")
    second = claim(database, "two")
    assert len(first.claimed) == 2
    assert second.claimed == []
    assert second.retry_in is not None and 0.3 < second.retry_in <= 0.5


def test_a_key_s_max_in_flight_counts_every_dispatcher_s_deliveries(
    database: db.Database, db_url: str
) -> None:
    keyed(database, 5, "tenant-1", max_in_flight=2)
    one = claim(database, "one", limit=1)
    two = claim(database, "two")
    assert (len(one.claimed), len(two.claimed)) == (1, 1)
    full = claim(database, "three")
    assert full.claimed == [] and full.retry_in == tuning.IN_FLIGHT_RECHECK_SECONDS
    finish(db_url, one.claimed)
    assert len(claim(database, "three").claimed) == 1


def test_keys_limit_only_their_own_jobs(database: db.Database) -> None:
    slow = keyed(database, 5, "slow", max_in_flight=1)
    fast = keyed(database, 5, "fast")
    plain = unkeyed(database, 5)
    claimed = {item.id for item in claim(database, "one", limit=20).claimed}
    assert claimed == {*fast, *plain} | (claimed & set(slow))
    assert len(claimed & set(slow)) == 1


def test_keys_take_turns_so_a_backlog_holds_another_key_back_by_one_turn(
    database: db.Database,
) -> None:
    backlog = keyed(database, 50, "a-backlog")
    later = keyed(database, 1, "b-one")
    taken: list[str] = []
    for _ in range(3):
        taken += [item.id for item in claim(database, "one", limit=1).claimed]
    assert later[0] in taken[:2]
    assert set(taken) <= {*backlog, *later}


def test_the_endpoint_s_own_limit_bounds_its_keys_together(database: db.Database) -> None:
    for n in range(5):
        keyed(database, 3, f"key-{n}")
    defaults = endpoints.EndpointLimits(None, 4)
    claimed = deliveries.claim_endpoint_jobs(database, "one", 60, 20, "billing", defaults, True)
    assert len(claimed.claimed) == 4


def test_the_limits_written_last_win(database: db.Database) -> None:
    keyed(database, 4, "tenant-1", rate=1.0)
    keyed(database, 1, "tenant-1", rate=3.0)
    assert len(claim(database, "one").claimed) == 3
    (listed,) = flows.flow_figures(database, "billing", 100, 1000)
    assert (listed.key, listed.rate_limit, listed.due, listed.in_flight) == ("tenant-1", 3.0, 2, 3)


def test_the_shared_claim_leaves_a_keyed_endpoint_alone_from_the_first_commit(
    database: db.Database,
) -> None:
    keyed(database, 2, "tenant-1")
    plain = insert_due(database, 2)
    # A dispatcher that has not reloaded its routes (no held endpoints) still leaves them.
    claimed = {
        item.id for item in deliveries.claim_due_jobs(database, "one", 60, 10, [], ["billing"])
    }
    assert claimed == set(plain)
    assert flows.keyed_endpoints(database) == ["billing"]


def test_the_turns_go_round_every_key_however_many_there_are(database: db.Database) -> None:
    count = tuning.FLOW_KEYS_PER_LOOK + 10
    due = cluster.database_now(database)
    new = [
        jobs.NewJob(jobs.new_job_id(), "1", due, 3, endpoint="billing", flow=jobs.Flow(f"k{n:04}"))
        for n in range(count)
        for _ in range(2)
    ]
    job_rows.insert_jobs(database, new)
    key_of = {job.id: job.flow.key for job in new if job.flow is not None}
    taken: list[str] = []
    while len(taken) < count:
        taken += [item.id for item in claim(database, "one", limit=8).claimed]
    # Every key had a job taken before any key its second (the last look may take a few
    # seconds), across looks that each see only FLOW_KEYS_PER_LOOK keys.
    assert len(taken) < count + 8
    assert {key_of[job_id] for job_id in taken} == {f"k{n:04}" for n in range(count)}


def test_idle_keys_are_forgotten_and_busy_ones_kept(database: db.Database, db_url: str) -> None:
    keyed(database, 1, "busy")
    done = keyed(database, 1, "idle", endpoint="default")
    with psycopg.connect(db_url) as conn:
        conn.execute("UPDATE jobs SET state = 'delivered' WHERE id = %s", (done[0],))
    assert flows.forget_idle_flows(database, 0.0) == 1
    assert [f.key for f in flows.flow_figures(database, "billing", 100, 1000)] == ["busy"]
    assert flows.flow_figures(database, "default", 100, 1000) == []


@pytest.mark.parametrize("paused", [True, False])
def test_a_paused_keyed_endpoint_sends_only_what_an_operator_runs(
    database: db.Database, paused: bool
) -> None:
    ids = keyed(database, 3, "tenant-1")
    endpoints.set_endpoint_paused(database, "billing", paused)
    job_rows.run_job_now(database, ids[1])
    claimed = {item.id for item in claim(database, "one").claimed}
    assert claimed == ({ids[1]} if paused else set(ids))


def test_two_dispatchers_never_start_more_than_a_key_s_max_in_flight(
    make_settings: Callable[..., config.Settings],
    database: db.Database,
    receiver: support.Receiver,
) -> None:
    lock = threading.Lock()
    running: dict[str, int] = {}
    peaks: dict[str, int] = {}

    def respond(request: support.Received) -> tuple[int, float]:
        key = request.json["body"]
        with lock:
            running[key] = running.get(key, 0) + 1
            peaks[key] = max(peaks.get(key, 0), running[key])
        # The endpoint's answer takes a moment, so that deliveries could overlap.
        time.sleep(0.02)
        with lock:
            running[key] -= 1
        return 200, 0.0

    receiver.respond = respond
    due = cluster.database_now(database)
    new = [
        jobs.NewJob(jobs.new_job_id(), f'"{key}"', due, 3, flow=jobs.Flow(key, None, limit))
        for key, limit in (("narrow", 1), ("pair", 2))
        for _ in range(8)
    ]
    job_rows.insert_jobs(database, new)
    both = [dispatcher.Dispatcher(make_settings(SCHEDULER_DELIVERY_THREADS="4")) for _ in range(2)]
    for each in both:
        each.start()
    try:
        receiver.wait_for(len(new), timeout=30)
    finally:
        for each in both:
            assert each.stop(5)
    assert sorted(r.json["id"] for r in receiver.received()) == sorted(j.id for j in new)
    assert peaks["narrow"] == 1
    assert peaks["pair"] <= 2


def notices_sent(db_url: str, action: Callable[[], object]) -> list[str]:
    """The payloads sent on the scheduler's channel while `action` ran."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(f"LISTEN {notices.CHANNEL}")
        action()
        # Notices arrive in commit order: one sent now ends what the action sent.
        conn.execute(f"NOTIFY {notices.CHANNEL}, 'end'")
        sent = []
        for notice in conn.notifies(timeout=10):
            if notice.payload == "end":
                return sent
            sent.append(notice.payload)
    raise AssertionError("the closing notice never came")


def test_the_first_keyed_job_of_an_endpoint_has_the_dispatchers_reload_their_routes(
    database: db.Database, db_url: str
) -> None:
    changed = notices.ENDPOINTS_CHANGED
    assert changed in notices_sent(db_url, lambda: keyed(database, 2, "tenant-1"))
    assert changed not in notices_sent(db_url, lambda: keyed(database, 1, "tenant-2"))
    assert changed in notices_sent(db_url, lambda: keyed(database, 1, "other", endpoint="default"))
