"""PostgreSQL stopped and started under the running processes: 503s meanwhile, nothing lost."""

from __future__ import annotations

import datetime as dt
import pathlib
import time
from collections.abc import Iterator

import psycopg
import pytest

from scheduler.storage import migrate
from tests import support
from tests.e2e.conftest import System

pytestmark = pytest.mark.e2e


@pytest.fixture
def own_server(tmp_path: pathlib.Path) -> Iterator[support.OwnServer]:
    server = support.OwnServer(tmp_path / "pgdata")
    yield server
    server.cleanup()


def at(seconds: float) -> str:
    moment = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_database_restart_loses_nothing(
    own_server: support.OwnServer, receiver: support.Receiver, tmp_path: pathlib.Path
) -> None:
    migrate.migrate(own_server.url)
    system = System(own_server.url, receiver, tmp_path)
    try:
        system.start("web")
        system.start("worker", SCHEDULER_RETRY_BASE="0.2", SCHEDULER_RETRY_CAP="1")
        ids = [system.insert(at(3), {"n": n}) for n in range(20)]
        own_server.stop()

        refused = system.call("POST", "/insert", {"timestamp": at(1), "body": {}})
        assert refused.status_code == 503
        assert refused.headers["Retry-After"].isdigit()
        assert refused.json()["error"]["code"] == "unavailable"
        time.sleep(4)  # the jobs come due while the database is down
        assert receiver.received() == []

        own_server.start()
        support.wait_until(
            lambda: system.call("POST", "/insert", {"timestamp": at(0), "body": "back"}).ok,
            timeout=30,
            interval=0.5,
        )
        support.wait_until(
            lambda: set(ids) <= {r.json["id"] for r in receiver.received()},
            timeout=60,
            interval=0.2,
        )

        def delivered() -> bool:
            # Outcomes are written after the receiver answered, and the dispatcher's pooled
            # connections from before the restart fail once each first.
            with psycopg.connect(own_server.url) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM jobs WHERE id = ANY(%s) AND state = 'delivered'", (ids,)
                ).fetchone()
            return row == (20,)

        support.wait_until(delivered, timeout=30, interval=0.2)
        assert any(r.json["body"] == "back" for r in receiver.wait_for(21, timeout=20))
    finally:
        system.stop_all()
