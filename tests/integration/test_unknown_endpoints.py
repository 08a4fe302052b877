"""A job for an endpoint a dispatcher does not know: left to the dispatchers that know it, and
failed unsent only once none has known it for the grace (SCHEDULER_UNKNOWN_ENDPOINT_GRACE)."""

from __future__ import annotations

import datetime as dt

import psycopg

from scheduler import jobs
from scheduler.storage import cluster, db, deliveries
from scheduler.storage import jobs as job_rows

GRACE = 600.0
OLD = ["default"]  # what a dispatcher of the previous deploy knows
NEW = ["default", "billing"]  # what one of the new deploy knows


def insert(database: db.Database, endpoint: str, due_ago: float) -> str:
    job_id = jobs.new_job_id()
    due = cluster.database_now(database) - dt.timedelta(seconds=due_ago)
    job_rows.insert_jobs(database, [jobs.NewJob(job_id, "{}", due, 3, endpoint=endpoint)])
    return job_id


def beat(database: db.Database, dispatcher_id: str, known: list[str]) -> None:
    cluster.beat_dispatcher(database, dispatcher_id, "host", 1, (0, 0), None, known, GRACE)


def claim(database: db.Database, known: list[str], grace: float = GRACE) -> list[str]:
    claimed = deliveries.claim_due_jobs(database, "d", 60, 10, (), known, 0.05, grace)
    return sorted(delivery.id for delivery in claimed)


def age_sighting(db_url: str, name: str, seconds: float) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "UPDATE endpoint_sightings SET known_at = now() - make_interval(secs => %s)"
            " WHERE name = %s",
            (seconds, name),
        )


def test_a_dispatcher_leaves_an_endpoint_it_does_not_know_to_those_that_know_it(
    database: db.Database,
) -> None:
    beat(database, "new", NEW)
    billing = insert(database, "billing", due_ago=60)
    plain = insert(database, "default", due_ago=60)

    assert claim(database, OLD) == [plain]
    assert claim(database, NEW) == [billing]


def test_a_job_no_dispatcher_ever_knew_waits_out_the_grace_from_its_due_time(
    database: db.Database,
) -> None:
    young = insert(database, "billing", due_ago=GRACE - 60)
    old = insert(database, "billing", due_ago=GRACE + 60)

    assert claim(database, OLD) == [old], "claimed to fail unsent"
    assert claim(database, OLD) == []
    due_in = deliveries.next_due_in(database, (), OLD, GRACE)
    assert due_in is not None and 55 < due_in <= 60, "planned for when its grace ends"
    assert young


def test_an_endpoint_known_within_the_grace_keeps_its_jobs_waiting_then_they_fail_unsent(
    database: db.Database, db_url: str
) -> None:
    beat(database, "new", NEW)
    (job_id,) = [insert(database, "billing", due_ago=2 * GRACE)]
    # The deploy is rolled back: the last dispatcher that knew `billing` stopped cleanly.
    cluster.remove_dispatcher(database, "new")

    assert claim(database, OLD) == [], "known a moment ago"
    due_in = deliveries.next_due_in(database, (), OLD, GRACE)
    assert due_in is not None and GRACE - 60 < due_in <= GRACE
    age_sighting(db_url, "billing", GRACE + 1)
    assert claim(database, OLD) == [job_id]


def test_no_grace_fails_an_unknown_endpoints_job_at_once(database: db.Database) -> None:
    beat(database, "new", NEW)
    job_id = insert(database, "billing", due_ago=0.01)

    assert claim(database, OLD, grace=0.0) == [job_id]


def sighting_age(db_url: str, name: str) -> float:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT extract(epoch FROM now() - known_at) FROM endpoint_sightings WHERE name = %s",
            (name,),
        ).fetchone()
    assert row is not None
    return float(row[0])


def test_heartbeats_renew_a_sighting_only_when_it_is_a_tenth_of_the_grace_old(
    database: db.Database, db_url: str
) -> None:
    beat(database, "new", NEW)
    age_sighting(db_url, "billing", GRACE / 20)
    beat(database, "new", NEW)
    kept = sighting_age(db_url, "billing")
    age_sighting(db_url, "billing", GRACE / 5)
    beat(database, "new", NEW)
    renewed = sighting_age(db_url, "billing")

    assert GRACE / 20 - 1 < kept < GRACE / 10
    assert renewed < 1


def test_the_dispatchers_list_says_which_endpoints_each_knows(database: db.Database) -> None:
    beat(database, "old", OLD)
    beat(database, "new", NEW)

    listed = {d.id: d.endpoints for d in cluster.list_dispatchers(database, 10)}

    assert listed == {"old": OLD, "new": NEW}
