"""In-process fixtures for the worker's parts: settings on a fresh database, a store, an epoch."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable

import pytest

from scheduler import config, jobs
from scheduler.storage import cluster, db
from scheduler.storage import jobs as job_rows
from tests import support


class FakeClock:
    """A monotonic clock that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def make_settings(db_url: str, receiver: support.Receiver) -> Callable[..., config.Settings]:
    def make(**extra: str) -> config.Settings:
        env = {"DATABASE_URL": db_url, "SECRET": support.SECRET, "ENDPOINT": receiver.url}
        return config.Settings.from_env({**env, **extra})

    return make


@pytest.fixture
def settings(make_settings: Callable[..., config.Settings]) -> config.Settings:
    return make_settings(SCHEDULER_LEADER_TIMEOUT="5")


def insert_due(database: db.Database, count: int, due_in: float = -1.0) -> list[str]:
    """`count` jobs due `due_in` seconds from now by the database's clock."""
    due = cluster.database_now(database) + dt.timedelta(seconds=due_in)
    new = [jobs.NewJob(jobs.new_job_id(), json.dumps({"n": n}), due, 3) for n in range(count)]
    return job_rows.insert_jobs(database, new)
