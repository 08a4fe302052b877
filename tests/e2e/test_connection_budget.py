"""End to end: with the defaults, one web process and one dispatcher stay within 20 connections
to PostgreSQL under load: 16 API clients at once, a 2,000-job burst being delivered, and crons
firing every second."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator

import psycopg
import pytest
import requests

from scheduler import config
from tests import support
from tests.e2e.conftest import System

pytestmark = pytest.mark.e2e

API_CLIENTS = 16
BURST = 2000
EVERY_SECOND = [{"id": f"tick-{n}", "spec": "* * * * * *"} for n in range(5)]

# Client backends connected to one database (autovacuum's workers connect too, as other kinds).
CONNECTIONS = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = %(db)s AND backend_type = 'client backend'
"""


class Sampler:
    """Counts the database's connections as often as it can, from another database, keeping
    the highest count, until stopped."""

    def __init__(self, server_url: str, db_url: str) -> None:
        self.server_url = server_url
        self.database = psycopg.conninfo.conninfo_to_dict(db_url)["dbname"]
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            while not self._stop.is_set():
                row = conn.execute(CONNECTIONS, {"db": self.database}).fetchone()
                assert row is not None
                self.peak = max(self.peak, int(row[0]))
                self.samples += 1

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=10)
        return self.peak


class ApiClients:
    """`count` clients, each inserting a job and reading it back in a loop, until stopped."""

    def __init__(self, system: System, count: int) -> None:
        self.system = system
        self.done = [0] * count
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def _run(self, index: int) -> None:
        headers = {"Scheduler-Secret": support.SECRET}
        later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
        with requests.Session() as session:
            while not self._stop.is_set():
                inserted = session.post(
                    self.system.url + "/insert",
                    json={"timestamp": later, "body": {"client": index}},
                    headers=headers,
                    timeout=10,
                )
                if inserted.status_code != 200:
                    self.failures.append(f"insert {inserted.status_code}: {inserted.text}")
                    continue
                read = session.get(
                    f"{self.system.url}/jobs/{inserted.json()['id']}", headers=headers, timeout=10
                )
                if read.status_code != 200:
                    self.failures.append(f"get {read.status_code}: {read.text}")
                self.done[index] += 1

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)


@pytest.fixture
def defaults(system: System) -> Iterator[System]:
    """The Procfile's web and worker with every default (WEB_CONCURRENCY too)."""
    del system.env["WEB_CONCURRENCY"]
    system.start("web")
    system.start("worker")
    yield system


def delivered(db_url: str) -> tuple[int, int]:
    """(burst jobs delivered, cron ticks delivered)."""
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE cron_id IS NULL), count(*) FILTER (WHERE cron_id"
            " IS NOT NULL) FROM jobs WHERE state = 'delivered'"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def test_one_web_process_and_one_dispatcher_stay_within_20_connections(
    defaults: System, server_url: str
) -> None:
    system = defaults
    sampler = Sampler(server_url, system.db_url)
    clients = ApiClients(system, API_CLIENTS)
    try:
        system.client.set_crons({cron["id"]: cron["spec"] for cron in EVERY_SECOND})
        for start in range(0, BURST, 1000):
            system.client.insert_batch(
                [{"body": {"n": n}, "delay": 0} for n in range(start, start + 1000)]
            )
        # The burst is delivered while the clients go on and the crons fire.
        support.wait_until(lambda: delivered(system.db_url)[0] >= BURST, timeout=120)
        ticks_then = delivered(system.db_url)[1]
        support.wait_until(lambda: delivered(system.db_url)[1] >= ticks_then + 10, timeout=30)
    finally:
        clients.stop()
        peak = sampler.stop()

    assert not clients.failures, clients.failures[:5]
    assert min(clients.done) > 0, clients.done
    assert sampler.samples > 100
    budget = 2 * config.DEFAULT_DB_CONNECTIONS
    assert budget == 20
    assert 0 < peak <= budget, f"{peak} connections at the peak"
