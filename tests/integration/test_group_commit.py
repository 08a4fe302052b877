"""Group commit of single inserts, with real threads against a real database."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
from collections.abc import Iterator

import psycopg
import pytest

from scheduler import errors, jobs
from scheduler.storage import db
from scheduler.web import group_commit
from tests import support

FAR = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)


@pytest.fixture
def groups(db_url: str) -> Iterator[group_commit.GroupCommit]:
    pool = db.open_pool(db_url, 4, name="test")
    yield group_commit.GroupCommit(db.Database(pool), announce_within=7.0)
    pool.close()


def new_job(body: object = None) -> jobs.NewJob:
    text = json.dumps({"n": 1} if body is None else body)
    return jobs.NewJob(jobs.new_job_id(), text, FAR, 3)


def insert_while_the_first_write_is_held(
    groups: group_commit.GroupCommit, db_url: str, first: jobs.NewJob, rest: list[jobs.NewJob]
) -> dict[str, BaseException | None]:
    """Insert `first`, hold its write on a table lock until `rest` queued behind it, then let
    everything through: `rest` is written as one group. What each insert raised, by job id."""
    outcomes: dict[str, BaseException | None] = {}
    with (
        psycopg.connect(db_url) as blocker,
        concurrent.futures.ThreadPoolExecutor(len(rest) + 1) as threads,
    ):
        blocker.execute("LOCK TABLE jobs IN EXCLUSIVE MODE")
        futures = {first.id: threads.submit(groups.insert, first)}
        support.wait_until(lambda: _waits_for_lock(blocker), timeout=10)
        futures.update({job.id: threads.submit(groups.insert, job) for job in rest})
        support.wait_until(lambda: groups.queued == len(rest), timeout=10)
        blocker.rollback()
        for job_id, future in futures.items():
            outcomes[job_id] = future.exception(timeout=30)
    return outcomes


def _waits_for_lock(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM pg_locks WHERE relation = 'jobs'::regclass AND NOT granted"
    ).fetchone()
    return bool(row and row[0])


def transactions_of(db_url: str, ids: list[str]) -> list[int]:
    """The number of rows each writing transaction left, for the rows with `ids`."""
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT count(*) FROM jobs WHERE id = ANY(%s) GROUP BY xmin::text ORDER BY 1",
            (ids,),
        ).fetchall()
    return [count for (count,) in rows]


def test_inserts_that_arrive_during_a_write_share_the_next_transaction(
    groups: group_commit.GroupCommit, db_url: str
) -> None:
    first, rest = new_job(), [new_job() for _ in range(5)]
    outcomes = insert_while_the_first_write_is_held(groups, db_url, first, rest)
    assert outcomes == dict.fromkeys([first.id, *(job.id for job in rest)])
    assert transactions_of(db_url, [first.id, *(job.id for job in rest)]) == [1, 5]
    assert groups.queued == 0


def test_a_lone_insert_is_written_at_once_in_its_own_transaction(
    groups: group_commit.GroupCommit, db_url: str
) -> None:
    ids = []
    for _ in range(3):
        job = new_job()
        groups.insert(job)
        ids.append(job.id)
    assert transactions_of(db_url, ids) == [1, 1, 1]


def test_a_job_the_database_refuses_fails_alone(
    groups: group_commit.GroupCommit, db_url: str
) -> None:
    first, good, bad, other = new_job(), new_job(), new_job({"s": "nul \u0000"}), new_job()
    outcomes = insert_while_the_first_write_is_held(groups, db_url, first, [good, bad, other])
    assert isinstance(outcomes[bad.id], errors.InvalidValue)
    assert outcomes[first.id] is None and outcomes[good.id] is None and outcomes[other.id] is None
    with psycopg.connect(db_url) as conn:
        stored = {row[0] for row in conn.execute("SELECT id FROM jobs").fetchall()}
    assert stored == {first.id, good.id, other.id}


def test_many_concurrent_inserts_are_each_stored_once(
    groups: group_commit.GroupCommit, db_url: str
) -> None:
    batch = [new_job({"n": n}) for n in range(200)]
    with concurrent.futures.ThreadPoolExecutor(16) as threads:
        list(threads.map(groups.insert, batch))
    with psycopg.connect(db_url) as conn:
        stored = dict(conn.execute("SELECT id, body FROM jobs").fetchall())
    assert stored == {job.id: json.loads(job.body) for job in batch}
    assert groups.queued == 0


def test_every_waiting_insert_learns_the_database_is_down() -> None:
    unreachable = f"postgresql://127.0.0.1:{support.free_port()}/none?connect_timeout=1"
    pool = db.open_pool(unreachable, 2, name="test")
    pool.timeout = 1.0
    groups = group_commit.GroupCommit(db.Database(pool), announce_within=7.0)
    try:
        with concurrent.futures.ThreadPoolExecutor(4) as threads:
            futures = [threads.submit(groups.insert, new_job()) for _ in range(4)]
            failures = [future.exception(timeout=30) for future in futures]
    finally:
        pool.close(timeout=1)
    assert all(isinstance(failure, errors.StoreUnavailable) for failure in failures)
    # Each request raises its own instance, never one shared between threads.
    assert len({id(failure) for failure in failures}) == 4
